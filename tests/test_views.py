"""The view registry: every view the app has runs through check_views on the bundled models and on tiny models
without class names; a view that raises is reported, never raised; views apply by capability."""
from __future__ import annotations

import pytest

from models import load_model
from viz import views
from viz.views import View, check_views, register, run_view, views_for

ATTENTION = {"attention.query", "attention.heads", "attention.steps", "attention.rollout", "attention.relevancy",
             "attention.mean_distance", "patches.grid", "patches.filters", "patches.token_similarity",
             "patches.islands", "patches.residual", "patches.attention_correlation"}
TEXT = {"attention.patch_zero_shot", "zero_shot.classify", "zero_shot.sliders", "zero_shot.similarity",
        "embedding.map", "embedding.search", "embedding.evaluate"}
CNN = {"cnn.stages", "cnn.feature_maps", "cnn.filters", "cnn.kernel", "cnn.receptive_field"}
EVERY_MODEL = {"model.facts", "model.tree", "model.hooks", "cnn.prediction", "cnn.cam", "cnn.probes"}


def _names(outcomes) -> set[str]:
    return {o.view.split("[")[0] for o in outcomes}


def _failures(outcomes) -> list[str]:
    return [f"{o.view}: {o.error}" for o in outcomes if o.error]


@pytest.mark.parametrize(("model_id", "expected", "absent"), [
    ("bundled:mini-clip", EVERY_MODEL | ATTENTION | TEXT | {"patches.positions"}, CNN),
    ("bundled:mini-vit", EVERY_MODEL | ATTENTION | {"patches.positions"}, CNN | TEXT),
    ("bundled:mini-cnn", EVERY_MODEL | CNN, ATTENTION | TEXT),
])
def test_every_view_draws_on_the_bundled_models(model_id, expected, absent):
    outcomes = check_views(load_model(model_id))
    assert not _failures(outcomes)
    names = _names(outcomes)
    assert expected <= names and not names & absent
    assert len(outcomes) > len(names)  # views with several check parameter sets ran each


@pytest.mark.parametrize("name", ["hf_dinov2_reg", "timm_vit_reg", "open_clip_resnet", "torchvision_resnet"])
def test_every_view_draws_on_tiny_models(tiny_ids, name):
    model = load_model(tiny_ids[name])
    outcomes = check_views(model)
    assert not _failures(outcomes)
    assert EVERY_MODEL <= _names(outcomes)


def test_class_name_free_models_default_to_the_top_output(tiny_ids):
    model = load_model(tiny_ids["hf_dinov2_reg"])
    assert not model.image_tower.class_names
    subject = views.Subject(model, views.check_image())
    session = subject.attention()
    output = session.output.float()
    readout = output[0, 0] if output.dim() == 3 else output[0]  # DINOv2 hands back its tokens: CLS is the readout
    top = int(readout.argmax())
    relevancy = run_view("attention.relevancy", subject)["relevancy"]
    cam = run_view("cnn.cam", subject)["cam"]
    assert relevancy.layout.title.text == f"Relevancy for output {top}"
    assert f"“output {top}”" in cam.layout.title.text
    with pytest.raises(ValueError, match="no class names"):
        run_view("cnn.cam", subject, target="a cat")


def test_a_view_that_raises_is_reported_not_raised():
    def broken(subject):
        raise RuntimeError("deliberately broken")

    register(View("test.broken", "Test", lambda model: True, broken))
    try:
        outcomes = check_views(load_model("bundled:mini-cnn"))
    finally:
        del views.VIEWS["test.broken"]
    failed = [o for o in outcomes if o.error]
    assert [o.view for o in failed] == ["test.broken"]
    assert "RuntimeError: deliberately broken" in failed[0].error
    assert len(outcomes) > 1 and all(o.error is None for o in outcomes if o.view != "test.broken")


def test_views_apply_by_capability_and_tab():
    clip, cnn = load_model("bundled:mini-clip"), load_model("bundled:mini-cnn")
    assert {v.name for v in views_for(clip, "Zero-shot")} == {"zero_shot.classify", "zero_shot.sliders",
                                                               "zero_shot.similarity"}
    assert views_for(cnn, "Zero-shot") == [] and views_for(cnn, "Attention") == []
    with pytest.raises(KeyError, match="No view"):
        run_view("no.such.view", views.Subject(cnn))


def test_siglip_zero_shot_views_use_independent_sigmoids(tmp_path):
    import numpy as np
    import torch

    from models.backends import BACKENDS
    from viz.zero_shot import encode_texts
    from viz.zero_shot_views import classification

    model = load_model(BACKENDS["hf"].save_random("SiglipModel", tmp_path / "siglip", True))
    assert model.probability == "sigmoid" and model.logit_bias is not None
    subject = views.Subject(model, views.check_image())
    labels = ["red circle", "blue square", "green star"]
    figures = run_view("zero_shot.classify", subject, labels=labels)
    assert "Sigmoid per label (SigLIP): probabilities need not sum to 1." in figures["notice"]
    result = classification(subject, labels)
    with torch.no_grad():
        image = model.encode_image(model.pixels([subject.image]))
    own = model.logits(image, encode_texts(model, [f"a photo of a {label}." for label in labels]))[0]
    np.testing.assert_allclose(result.logits, own.double().numpy(), atol=1e-4)
    np.testing.assert_allclose(result.probabilities, 1 / (1 + np.exp(-result.logits)), rtol=1e-6)
    sliders = run_view("zero_shot.sliders", subject, labels=labels, values=[result.logits[0] + 3.0])
    assert "Sigmoid per label" in sliders["probabilities"].layout.title.text
    similarity = run_view("zero_shot.similarity", subject, count=3)
    assert "Pairwise sigmoid loss" in similarity["notice"] and "Sigmoid per label" in similarity["notice"]
