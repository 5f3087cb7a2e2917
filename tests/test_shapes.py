"""The procedural dataset: deterministic, exact masks, true captions, cue conflict, folder export."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from models import shapes


def test_same_seed_same_pixels_and_different_seed_different_pixels():
    a = shapes.make_dataset(12, seed=7)
    b = shapes.make_dataset(12, seed=7)
    c = shapes.make_dataset(12, seed=8)
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, c, strict=True))


def test_vocabulary_covers_six_shapes_six_colours_two_sizes_and_backgrounds():
    assert len(shapes.SHAPES) >= 6 and len(shapes.COLOURS) >= 6
    assert len(shapes.class_names()) == len(shapes.SHAPES) * len(shapes.COLOURS) >= 36
    examples = shapes.make_dataset(300, seed=3)
    assert {e.objects[0].size for e in examples} == {"small", "large"}
    assert len({e.background for e in examples}) >= 3
    assert len({e.objects[0].position for e in examples}) >= 3
    assert any(len(e.objects) == 2 for e in examples) and any(len(e.objects) == 1 for e in examples)


def test_masks_are_the_object_pixels_and_union_of_objects():
    for example in shapes.make_dataset(40, seed=11):
        union = np.zeros_like(example.mask)
        for obj in example.objects:
            union |= obj.mask
            x0, y0, x1, y1 = obj.bbox
            ys, xs = np.nonzero(obj.mask)
            assert ys.min() >= y0 and ys.max() < y1 and xs.min() >= x0 and xs.max() < x1
        assert np.array_equal(union, example.mask)
        assert example.mask.shape == np.asarray(example.image).shape[:2]
        assert 0 < example.mask.mean() < 0.9


def test_object_pixels_carry_the_named_colour():
    hues = {"red": 0, "green": 1, "blue": 2}
    for example in shapes.make_dataset(60, seed=5, two_objects_prob=0.0, background="plain"):
        if example.colour in hues:
            inside = np.asarray(example.image)[example.mask].astype(float).mean(axis=0)
            assert inside.argmax() == hues[example.colour], (example.caption, inside)


def test_captions_describe_the_true_content():
    for example in shapes.make_dataset(80, seed=13):
        for obj in example.objects:
            assert obj.shape in example.caption and obj.colour in example.caption, example.caption
        assert example.label == f"{example.colour} {example.shape}" == example.objects[0].label
    captions = {e.caption for e in shapes.make_dataset(200, seed=2)}
    assert len(captions) > 100


def test_cue_conflict_has_two_different_cues():
    for example in shapes.make_cue_conflict(12, seed=4):
        assert example.shape_label != example.texture_label
        assert example.shape_label in shapes.SHAPES and example.texture_label in shapes.SHAPES
        assert example.mask.any()


def test_export_folder_writes_images_by_label_and_captions(tmp_path):
    examples = shapes.make_dataset(10, seed=1)
    csv_path = shapes.export_folder(examples, tmp_path)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 10
    for row, example in zip(rows, examples, strict=True):
        assert (tmp_path / row["path"]).exists()
        assert row["path"].split("/")[0] == example.label == row["label"]
        assert row["caption"] == example.caption


@pytest.mark.parametrize("seed", [-1])
def test_negative_seed_is_refused(seed):
    with pytest.raises(ValueError):
        shapes.make_dataset(1, seed=seed)
