"""What a model knows: bundled models say what they were trained on (``adapter.trained_on``), real checkpoints say
nothing, and a photograph shown to a bundled model gets a notice pointing to a real checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from models import load_model, shapes
from models.backends.bundled import BUNDLED_DIR, bundled_names, held_out_top1, trained_on
from models.catalog import real_models
from ui.examples import example_paths
from viz.domain import REAL_CLIP, REAL_CNN, REAL_VIT, WORLD_SIZE, domain_notes, is_photograph, model_tab_note

SEED = 454_545  # held out: training seeds are >= shapes.TRAIN_SEED_START


@pytest.fixture(scope="module")
def world_image() -> Image.Image:
    return shapes.make_dataset(1, seed=SEED)[0].image


@pytest.fixture(scope="module")
def photograph() -> Image.Image:
    from skimage import data
    return Image.fromarray(data.chelsea())


@pytest.mark.parametrize("name", bundled_names())
def test_every_bundled_model_says_what_it_was_trained_on(name):
    model = load_model(f"bundled:{name}", device="cpu")
    assert model.trained_on == trained_on(BUNDLED_DIR / name)
    assert "procedural" in model.trained_on and "knows nothing else" in model.trained_on


def test_real_checkpoints_say_nothing(tiny_ids, photograph):
    for name in ("hf_vit", "open_clip_vit", "torchvision_resnet"):
        model = load_model(tiny_ids[name], device="cpu")
        assert model.trained_on is None, name
        assert domain_notes(model, [photograph]) == [] and model_tab_note(model) == "", name


def test_the_held_out_figure_comes_from_the_training_log(tmp_path):
    (tmp_path / "training_log.json").write_text(json.dumps(
        {"metrics": {"zero_shot_top1": 0.875, "zero_shot_n": 80, "zero_shot_top1_held_out_compositions": 0.5}}))
    assert held_out_top1(tmp_path) == "held-out top-1 87.5% of 80 images"
    assert "87.5% of 80 images" in trained_on(tmp_path)
    (tmp_path / "training_log.json").write_text(json.dumps({"metrics": {"loss": 0.3}}))
    assert held_out_top1(tmp_path) is None
    assert held_out_top1(tmp_path / "missing") is None and "%" not in trained_on(tmp_path / "missing")


def test_world_images_are_not_photographs(world_image, photograph):
    assert world_image.size == (WORLD_SIZE, WORLD_SIZE) and not is_photograph(world_image)
    assert not is_photograph(world_image.resize((224, 224), Image.NEAREST))   # as the example gallery shows them
    assert not is_photograph(world_image.resize((WORLD_SIZE * 3, WORLD_SIZE * 3), Image.NEAREST))
    assert is_photograph(world_image.resize((160, 160), Image.BICUBIC))     # resampled: treated as an upload
    assert is_photograph(photograph)
    assert is_photograph(photograph.resize((224, 224)))
    assert not is_photograph(photograph.crop((0, 0, WORLD_SIZE, WORLD_SIZE)))  # world-sized uploads count as world


def test_the_example_gallery_splits_into_procedural_scenes_and_photographs():
    decided = {Path(path).stem: is_photograph(Image.open(path)) for path in example_paths()}
    assert decided == {"shapes-0": False, "shapes-1": False, "shapes-2": False,
                       "chelsea": True, "astronaut": True, "coffee": True}


@pytest.mark.parametrize("model_id, checkpoint", [("bundled:mini-clip", REAL_CLIP), ("bundled:mini-vit", REAL_VIT),
                                                  ("bundled:mini-cnn", REAL_CNN)])
def test_a_bundled_model_warns_on_photographs_only(model_id, checkpoint, world_image, photograph):
    model = load_model(model_id, device="cpu")
    warning, known = domain_notes(model, [photograph])
    assert "photograph" in warning and checkpoint in warning and model_id in warning
    assert known.startswith("ℹ️") and "trained only on" in known and model.trained_on in known
    assert domain_notes(model, [world_image]) == [known]
    assert domain_notes(model, [world_image, photograph])[0] == warning   # any photograph among the images
    assert checkpoint in model_tab_note(model) and "trained only on" in model_tab_note(model)


def test_suggested_checkpoints_are_in_the_catalog():
    ids = {m.id for m in real_models()}
    assert {REAL_CLIP, REAL_VIT, REAL_CNN} <= ids
