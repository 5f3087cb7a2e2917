"""Each adapter's preprocessing equals its backend's own transform on a real photograph."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import load_model


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())  # 300 x 451, not square: exercises resize + centre crop


def test_hf_clip_matches_its_image_processor(tiny_dirs, tiny_ids, photo):
    from transformers import AutoImageProcessor

    model = load_model(tiny_ids["hf_clip"])
    expected = AutoImageProcessor.from_pretrained(tiny_dirs["hf_clip"])(photo, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(model.preprocess(photo), expected, atol=0.03, rtol=0)


def test_open_clip_matches_its_own_transform(tiny_dirs, tiny_ids, photo):
    import open_clip

    model = load_model(tiny_ids["open_clip_vit"])
    _, _, transform = open_clip.create_model_and_transforms(f"local-dir:{tiny_dirs['open_clip_vit']}")
    torch.testing.assert_close(model.preprocess(photo), transform(photo)[None], atol=0.03, rtol=0)


def test_timm_matches_its_data_config_transform(tiny_dirs, tiny_ids, photo):
    import timm

    model = load_model(tiny_ids["timm_vit"])
    config = timm.data.resolve_model_data_config(model.module)
    transform = timm.data.create_transform(**config, is_training=False)
    torch.testing.assert_close(model.preprocess(photo), transform(photo)[None], atol=0.03, rtol=0)


def test_modes_are_converted_and_alpha_is_composited_over_white(tiny_ids):
    model = load_model(tiny_ids["hf_vit"])
    transparent = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    grey = Image.new("L", (40, 40), 128)
    white = model.preprocess.unnormalize(model.preprocess(transparent)[0])
    assert np.all(white >= 254)
    assert model.preprocess(grey).shape == (1, 3, 32, 32)


def test_one_image_taken_as_it_is_is_normalised_like_a_batch():
    """``normalize`` (no resize or crop, used by the shift probe) against the brute-force (x / 255 - mean) / std."""
    preprocess = load_model("bundled:mini-cnn", device="cpu").preprocess
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    got = preprocess.normalize(Image.fromarray(rgb))
    mean, std = np.array(preprocess.mean), np.array(preprocess.std)
    expected = ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)
    assert got.shape == (3, 40, 56) and got.dtype == torch.float32 and got.is_contiguous()
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    batch = preprocess.uint8_batch([Image.fromarray(rgb)] * 2)   # a (resized) batch goes the same way
    assert batch.dtype == torch.uint8 and batch.shape == (2, *preprocess.size, 3)
