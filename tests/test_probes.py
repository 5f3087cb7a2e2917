"""Inductive-bias probes: the shifted crops, the equivariance measure against a brute-force shift, and the
cue-conflict bookkeeping against the models' own predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import load_model, shapes
from viz.probes import _move_left, cue_conflict, equivariance_error, shift_probe, shifted_crops

CUE_SEED = 525_252  # held out


def test_shifted_crops_move_the_content_left_by_whole_pixels():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    crops = [np.asarray(c) for c in shifted_crops(image, (32, 32), 6)]
    assert len(crops) == 7 and all(c.shape == (32, 32, 3) for c in crops)
    for s in range(7):
        np.testing.assert_array_equal(crops[s][:, :32 - s], crops[0][:, s:])


def test_moving_a_map_by_whole_and_fractional_cells():
    grid = torch.arange(12.0).reshape(1, 2, 6)
    moved = _move_left(grid, 2)
    np.testing.assert_array_equal(moved[0, :, :4].numpy(), grid[0, :, 2:].numpy())
    assert torch.isnan(moved[0, :, 4:]).all()
    half = _move_left(grid, 0.5)
    np.testing.assert_allclose(half[0, :, :5].numpy(), (grid[0, :, :5] + grid[0, :, 1:]).numpy() / 2)


def test_a_perfectly_equivariant_map_has_zero_error_and_a_frozen_one_does_not():
    base = torch.randn(3, 4, 20)
    shifts = [0, 2, 4, 6]
    stride = 2
    moving = torch.stack([_move_left(base, s / stride).nan_to_num(0.0) for s in shifts])
    errors = equivariance_error(moving, shifts, stride)
    assert errors == pytest.approx([0.0] * 4, abs=1e-6)
    frozen = torch.stack([base] * 4)
    assert all(e > 0.1 for e in equivariance_error(frozen, shifts, stride)[1:])


def test_shift_probe_on_the_bundled_cnn_and_vit():
    image = shapes.make_dataset(1, seed=21, two_objects_prob=0.0)[0].image
    for model_id, layer in (("bundled:mini-cnn", "stages."), ("bundled:mini-vit", "blocks.")):
        model = load_model(model_id, device="cpu")
        probe = shift_probe(model, image, 12)
        assert probe.shifts == list(range(13)) and len(probe.output_similarity) == 13
        assert probe.feature_layer.startswith(layer) and probe.feature_change[0] == 0.0
        crop = shifted_crops(image, model.preprocess.size, 12)[0]
        with torch.no_grad():
            probs = model.forward(model.preprocess.normalize(crop)[None]).softmax(-1)[0]
        assert probe.output_similarity[0] == pytest.approx(float(probs.max()), rel=1e-5)
    vit = load_model("bundled:mini-vit", device="cpu")
    assert shift_probe(vit, image, 8).feature_stride == vit.patch_size[1]
    with pytest.raises(ValueError, match="between 1 and 64"):
        shift_probe(vit, image, 0)


def test_cue_conflict_records_which_cue_decided():
    examples = shapes.make_cue_conflict(30, seed=CUE_SEED)
    cnn = load_model("bundled:mini-cnn", device="cpu")
    result = cue_conflict(cnn, examples)
    with torch.no_grad():
        logits = cnn.forward(cnn.pixels([e.image for e in examples]))
    predicted = [cnn.class_names[i] for i in logits.argmax(-1).tolist()]
    assert result.predictions == predicted
    for example, guess, cue in zip(examples, predicted, result.followed, strict=True):
        shape = guess.split(" ", 1)[1]
        assert cue == ("shape" if shape == example.shape_label else
                       "texture" if shape == example.texture_label else "neither")
    assert sum(result.fraction(c) for c in ("shape", "texture", "neither")) == pytest.approx(1.0)
    clip = cue_conflict(load_model("bundled:mini-clip", device="cpu"), examples)
    assert len(clip.predictions) == 30 and all(p in shapes.class_names() for p in clip.predictions)


def test_cue_conflict_refuses_a_model_without_the_shapes_classes():
    model = load_model("torchvision:resnet18/none", device="cpu")
    with pytest.raises(ValueError, match="do not include the bundled shapes classes"):
        cue_conflict(model, shapes.make_cue_conflict(2, seed=CUE_SEED))
