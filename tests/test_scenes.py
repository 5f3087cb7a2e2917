"""The procedural scenes: reproducible, exact masks, held-out compositions kept out of training, true captions."""
from __future__ import annotations

import numpy as np
import pytest

from models.world import scenes, shapes


def test_same_seed_same_pixels_and_independent_of_n():
    a = scenes.make_scenes(6, seed=5)
    b = scenes.make_scenes(3, seed=5)
    for x, y in zip(a[:3], b, strict=True):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image)) and x.caption == y.caption
    assert not np.array_equal(np.asarray(a[0].image), np.asarray(scenes.make_scenes(1, seed=6)[0].image))


def test_training_split_never_draws_a_held_out_composition():
    drawn = [o.label for e in scenes.make_scenes(400, seed=shapes.training_seed(0, 3)) for o in e.objects]
    assert not set(drawn) & scenes.HELD_OUT_COMPOSITIONS
    assert len(set(drawn)) == 30  # every other composition does appear
    held = {o.label for e in scenes.make_scenes(60, seed=1, split="held_out") for o in e.objects}
    assert held == scenes.HELD_OUT_COMPOSITIONS
    # every colour and every shape is still seen in training: only the pairs are new
    assert {name.split()[0] for name in drawn} == set(shapes.COLOURS)
    assert {name.split()[1] for name in drawn} == set(shapes.SHAPES)


def test_masks_are_the_visible_pixels_of_each_object():
    for example in scenes.make_scenes(80, seed=11, n_objects=3):
        union = np.zeros_like(example.mask)
        for obj in example.objects:
            assert not (union & obj.mask).any()  # visible masks never overlap
            union |= obj.mask
            full = (scenes.rotated_alpha(obj.shape, obj.side, int(obj.angle)) >= 0.5).sum()
            assert obj.mask.sum() >= scenes.MIN_VISIBLE * full - 1
            x0, y0, x1, y1 = obj.bbox
            assert obj.mask[y0:y1, x0:x1].sum() == obj.mask.sum()
        assert np.array_equal(union, example.mask)
        # the last object drawn is on top: its pixels carry its colour
        top = example.objects[-1]
        pixels = np.asarray(example.image, dtype=float)[top.mask]
        assert np.abs(pixels.mean(axis=0) - np.array(shapes.COLOURS[top.colour])).max() < 45


def test_positions_sizes_and_rotations_are_continuous():
    objects = [o for e in scenes.make_scenes(300, seed=12, n_objects=1) for o in e.objects]
    sides = [o.side for o in objects]
    assert min(sides) >= 12 and max(sides) <= 31 and len(set(sides)) >= 15
    centres = np.array([o.centre for o in objects])
    assert len({tuple(c) for c in centres.round()}) > 250
    assert centres.min() < 15 and centres.max() > 49
    angles = {o.angle for o in objects if o.shape != "circle"}
    assert len(angles) > 150


def test_relation_captions_are_true_of_the_centres():
    found = 0
    for i in range(300):
        example = scenes.make_scene([13, i], n_objects=2, distinct=True)
        a, b = example.objects
        said = scenes.relation(a, b)
        if said is None:
            continue
        found += 1
        dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
        assert {"left of": dx > 0, "right of": dx < 0, "above": dy > 0, "below": dy < 0}[said]
        captions = scenes.scene_captions(example.objects, example.background, 64, np.random.default_rng(0))
        assert shapes._articles(f"a {a.colour} {a.shape} {said} a {b.colour} {b.shape}") in captions
    assert found > 100


def test_counts_and_colour_swaps():
    a = scenes.SceneObject("star", "red", "small", "", (0, 0, 0, 0), np.zeros((2, 2), bool), side=14)
    b = scenes.SceneObject("circle", "blue", "small", "", (0, 0, 0, 0), np.zeros((2, 2), bool), side=14)
    c = scenes.SceneObject("cross", "red", "small", "", (0, 0, 0, 0), np.zeros((2, 2), bool), side=14)
    assert scenes.pair_caption([a, b]) == "a red star and a blue circle"
    assert scenes.colour_swapped_caption([a, b]) == "a blue star and a red circle"
    assert scenes.colour_swapped_caption([a, c]) is None  # same colour: nothing to swap
    captions = scenes.scene_captions([c, c], "plain", 64, np.random.default_rng(0))
    assert "two red crosses" in captions


def test_photo_backgrounds_differ_between_training_and_evaluation():
    assert not set(scenes.TRAIN_PHOTOS) & set(scenes.EVAL_PHOTOS)
    rng = np.random.default_rng(0)
    crop = scenes.background("photo", 64, rng, split="train")
    assert crop.shape == (64, 64, 3) and 40 <= crop.min() and crop.max() <= 210
    with pytest.raises(ValueError, match="split"):
        scenes.make_scene(1, split="test")
    with pytest.raises(ValueError, match="one to three"):
        scenes.make_scene(1, n_objects=4)
