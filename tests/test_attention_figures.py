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
    head_phrase,
    mean_distance_figure,
    mosaic,
    overlay_figure,
    patch_grid_figure,
    patch_zero_shot_figure,
    steps_figure,
    token_relevance_figure,
)
from viz.attention_session import AttentionSession
from viz.views import Subject, run_view


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
    steps = session.steps(1, 2, 0, temperature=2.0)
    labels = ["CLS"] + [str(i) for i in range(1, session.num_tokens)]
    fig = steps_figure([steps], labels, 1, 2, "CLS")
    assert len(fig.data) == 3 and len(fig.data[1].y) == session.num_tokens
    np.testing.assert_allclose(fig.data[2].y, steps.output.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].y, steps.weights.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fig.data[0].y, steps.raw_scores.numpy() * steps.scale / 2.0, rtol=1e-5)
    assert "T = 2" in fig.layout.annotations[0].text
    # it says what it shows; keys are numbers (no rotated labels over the titles), the hover names them
    assert fig.layout.title.text == "Step by step: layer 1, head 2, query CLS"
    assert list(fig.data[0].x) == list(range(session.num_tokens)) and fig.data[0].customdata[0] == "CLS"
    assert fig.layout.xaxis.tickangle is None and fig.layout.xaxis2.tickangle is None


def test_fused_steps_show_the_fused_row_not_head_zero(session):
    heads = session.vit.num_heads
    per_head = [session.steps(2, h, 5, 1.0) for h in range(heads)]
    labels = [str(i) for i in range(session.num_tokens)]
    fig = steps_figure(per_head, labels, 2, "mean", "patch (0, 4)")
    weights = fig.data[heads]   # one score line per head, then the weights
    # the mean over heads of each head's softmax row: the row the "mean" overlay shows
    np.testing.assert_allclose(weights.y, session.head_pattern(2, "mean")[5].numpy(), atol=1e-5)
    assert not np.allclose(weights.y, per_head[0].weights.numpy(), atol=1e-3)
    assert [t.name for t in fig.data[:heads]] == [f"head {h}" for h in range(heads)]
    assert len(fig.data[-1].y) == heads * per_head[0].output.shape[-1]
    assert fig.layout.title.text == f"Step by step: layer 2, mean of {heads} heads, query patch (0, 4)"
    maxed = steps_figure(per_head, labels, 2, "max", "patch (0, 4)")
    assert "not a distribution" in maxed.layout.annotations[1].text


def test_view_titles_name_the_head_once(session):
    assert head_phrase(2, 4) == "head 2" and head_phrase("mean", 4) == "mean of 4 heads"
    model = session.model
    subject = Subject(model, shapes.make_dataset(1, seed=2)[0].image)
    overlay = run_view("attention.query", subject, layer=1, head="head 2", query=0)["overlay"]
    assert overlay.layout.title.text.startswith("layer 1, head 2: where CLS looks")
    steps = run_view("attention.steps", subject, layer=1, head="mean", query=0)["steps"]
    assert "mean of 4 heads" in steps.layout.title.text and len(steps.data) == 4 + 2


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
    bar = fig.data[1].colorbar
    assert list(bar.tickvals) == [0, 1] and bar.ticktext[0].startswith("a red star (")
    assert fig.data[1].showscale is not False and "%{customdata[1]:.3f}" in fig.data[1].hovertemplate
    shares = [float(t.split("(")[1].split("%")[0]) for t in bar.ticktext]
    assert sum(shares) == pytest.approx(100, abs=1)


def test_token_relevance_draws_content_tokens_on_their_own_axis():
    tokens = ["<start_of_text>", "a", "red", "circle", "<end_of_text>"]
    scores = np.array([0.01, 0.01, 0.03, 0.01, 0.94])
    fig = token_relevance_figure(tokens, scores, [True, False, False, False, True])
    content, apart = fig.data
    assert list(content.x) == ["1:a", "2:red", "3:circle"] and content.yaxis == "y"
    assert list(apart.x) == ["0:<start_of_text>", "4:<end_of_text>"] and apart.yaxis == "y2"
    assert list(content.text) == ["20%", "60%", "20%"] and list(apart.text) == ["1%", "94%"]
    assert "5% of the relevance" in fig.layout.annotations[0].text
    # without flags, the spelling of start / end / pooled tokens decides
    assert list(token_relevance_figure(["[CLS]", "cat", "x (pooled)"], [1, 2, 3]).data[0].x) == ["1:cat"]


def test_relevancy_view_sets_the_end_token_apart(session):
    subject = Subject(session.model, shapes.make_dataset(1, seed=2)[0].image)
    fig = run_view("attention.relevancy", subject, target="a red triangle")["token_relevance"]
    assert list(fig.data[0].x) == ["1:a", "2:red", "3:triangle"]
    assert list(fig.data[1].x) == ["0:<start_of_text>", "4:<end_of_text>"]
