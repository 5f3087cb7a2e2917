"""Attention figures, checked for what they draw."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import load_model, shapes
from viz.attention import mean_distance_by_layer
from viz.attention_figures import (
    head_grid_figure,
    mean_distance_figure,
    mosaic,
    overlay_figure,
    patch_grid_figure,
    patch_zero_shot_figure,
    steps_figure,
)
from viz.attention_session import AttentionSession


@pytest.fixture(scope="module")
def session():
    return AttentionSession(load_model("bundled:mini-clip", device="cpu"), shapes.make_dataset(1, seed=2)[0].image)


@pytest.fixture(scope="module")
def image(session):
    return session.vit.preprocess.unnormalize(session.pixels[0])


def test_mosaic_places_maps_with_nan_gaps():
    maps = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    out = mosaic(maps, columns=3)
    assert out.shape == (2 * 3 - 1, 3 * 4 - 1)
    assert np.array_equal(out[0:2, 4:7], maps[1]) and np.array_equal(out[3:5, 0:3], maps[3])
    assert np.isnan(out[2]).all() and np.isnan(out[3:5, 8:]).all()


def test_overlay_draws_image_heatmap_on_the_grid_and_the_query(session, image):
    heat = session.query_map(2, "mean", session.token_of_patch(1, 6))
    fig = overlay_figure(image, heat, "layer 2", query_cell=(1, 6))
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    assert np.asarray(fig.data[1].z).shape == (8, 8) and fig.data[1].dx == 8
    assert fig.layout.shapes[0].x0 == 48 and fig.layout.shapes[0].y0 == 8


def test_head_grid_is_one_trace_with_every_head(session):
    fig = head_grid_figure(session.all_heads(3, 0), "layer 3, CLS")
    assert len(fig.data) == 1
    assert np.asarray(fig.data[0].z).shape == (2 * 9 - 1, 2 * 9 - 1)  # 4 heads -> 2x2 blocks of 8x8
    assert [a.text for a in fig.layout.annotations] == [f"head {i}" for i in range(session.vit.num_heads)]


def test_steps_figure_shows_scaled_scores_and_weights(session):
    steps = session.steps(1, 0, 0, temperature=2.0)
    labels = ["CLS"] + [str(i) for i in range(1, session.num_tokens)]
    fig = steps_figure(steps, labels)
    assert len(fig.data) == 3 and len(fig.data[1].y) == session.num_tokens
    np.testing.assert_allclose(fig.data[2].y, steps.output.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].y, steps.weights.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fig.data[0].y, steps.raw_scores.numpy() * steps.scale / 2.0, rtol=1e-5)
    assert "T = 2" in fig.layout.annotations[0].text


def test_mean_distance_over_images_and_its_figure():
    model = load_model("bundled:mini-clip", device="cpu")
    pixels = model.pixels([e.image for e in shapes.make_dataset(8, seed=4)])
    distances = mean_distance_by_layer(model, pixels)
    assert distances.shape == (4, 4)
    max_distance = math.hypot(7 * 8, 7 * 8)
    assert torch.all(distances > 0) and torch.all(distances < max_distance)
    fig = mean_distance_figure(distances)
    assert len(fig.data) == 1 and len(fig.data[0].x) == 16 and list(fig.layout.xaxis.range) == [-0.5, 3.5]
    assert "counts as distance 0 (ViT paper)" in fig.layout.title.text
    renormalised = mean_distance_by_layer(model, pixels, "renormalise")
    # attention to CLS only ever shortens the paper's distance; some of mini-clip's heads give CLS a real share
    assert torch.all(distances <= renormalised + 1e-4) and torch.any(distances < renormalised - 0.5)
    assert "renormalised over patch keys" in mean_distance_figure(renormalised, "renormalise").layout.title.text


def test_patch_grid_figure_counts_tokens(session, image):
    fig = patch_grid_figure(image, (8, 8), (8, 8), ["cls"])
    assert len(fig.layout.shapes) == 14 and len(fig.layout.annotations) == 64
    assert fig.layout.annotations[0].text == "1" and "65 tokens" in fig.layout.title.text


def test_patch_zero_shot_figure_labels_patches(session, image):
    prompts = ["a red star", "a blue circle"]
    fig = patch_zero_shot_figure(image, session.patch_zero_shot(prompts), prompts)
    z = np.asarray(fig.data[1].z)
    assert z.shape == (8, 8) and set(np.unique(z)) <= {0, 1}
