"""The bundled models load through load_model from their real formats and meet their quality bars on a fresh
held-out seed (the model cards hold the full figures; these sets are kept small so the suite stays fast)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import bundled_eval, load_model, shapes

SEED = 424_242  # held out: training seeds are >= shapes.TRAIN_SEED_START
BUNDLED = Path(__file__).resolve().parent.parent / "models" / "bundled"


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


def test_mass_on_mask_by_hand():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True                      # the top-left quarter: patch (0, 0) of a 2x2 grid, fully covered
    mask[2, 2] = True                        # a quarter of patch (1, 1)
    heat = np.array([[3.0, 1.0], [0.0, 4.0]])
    inside, share = bundled_eval.mass_on_mask(heat, mask)
    assert inside == pytest.approx((3.0 * 1 + 4.0 * 0.25) / 8.0)
    assert share == pytest.approx((1 + 0.25) / 4)
    assert bundled_eval.mass_on_mask(torch.tensor(heat), mask) == pytest.approx((inside, share))


def test_bundled_weights_are_small_safetensors_in_real_formats():
    files = list(BUNDLED.rglob("*"))
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    assert sum(f.stat().st_size for f in weights) <= 25 * 2**20
    assert (BUNDLED / "mini-clip" / "open_clip_config.json").exists()
    assert (BUNDLED / "mini-vit" / "config.json").exists() and (BUNDLED / "mini-cnn" / "config.json").exists()
    for name in ("mini-clip", "mini-vit", "mini-cnn"):
        assert (BUNDLED / name / "README.md").exists(), f"{name} has no model card"


def test_mini_clip_is_an_open_clip_vit_with_its_own_tokenizer(clip):
    assert clip.family == "clip" and clip.backend == "bundled (open_clip)"
    assert clip.visual.grid()[0] >= 8 and clip.visual.prefix_tokens == ["cls"]
    assert clip.visual.num_layers >= 4 and clip.visual.num_heads >= 4
    assert clip.vocab_size == 49408
    tokens = clip.tokenize(["a red star"])
    assert tokens.shape == (1, clip.context_length)


def test_mini_clip_zero_shot_top1(clip):
    result = bundled_eval.clip_zero_shot_accuracy(clip.encode_image, clip.encode_text, clip.preprocess,
                                                  n=180, seed=SEED)
    print(f"mini-clip zero-shot top-1 over {len(shapes.class_names())} classes: {result['top1']:.3f}")
    assert result["top1"] >= 0.90


def test_mini_clip_text_to_image_recall_at_5(clip):
    recall = bundled_eval.clip_text_to_image_recall(clip.encode_image, clip.encode_text, clip.preprocess,
                                                    n=120, seed=SEED + 1)
    print(f"mini-clip text->image recall@5: {recall:.3f}")
    assert recall >= 0.90


def test_mini_clip_last_layer_cls_attention_looks_at_the_object(clip):
    last = clip.visual.num_layers - 1
    grid = clip.visual.grid()

    def cls_attention(pixels: torch.Tensor) -> torch.Tensor:
        with clip.capture(f"blocks.{last}.attn.pattern") as cache:
            clip.encode_image(pixels)
        pattern = cache[f"blocks.{last}.attn.pattern"]            # (batch, heads, tokens, tokens)
        return pattern[:, :, 0, 1:].mean(dim=1).reshape(-1, *grid)  # CLS row, patches only, mean over heads

    rate = bundled_eval.cls_attention_in_mask_rate(cls_attention, clip.preprocess, n=120, seed=SEED + 2)
    print(f"mini-clip CLS attention inside the mask above its share: {rate:.3f}")
    assert rate >= 0.90


@pytest.mark.parametrize("name, family", [("mini-vit", "vit"), ("mini-cnn", "cnn")])
def test_bundled_classifiers_top1(name, family):
    model = load_model(f"bundled:{name}", device="cpu")
    assert model.family == family
    assert model.class_names == shapes.class_names()
    accuracy = bundled_eval.classifier_accuracy(model.forward, model.preprocess, model.class_names,
                                                n=180, seed=SEED + 3)
    print(f"{name} top-1: {accuracy:.3f}")
    assert accuracy >= 0.95
