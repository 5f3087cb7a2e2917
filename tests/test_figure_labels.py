"""Figures say what they show: axis ranges that fit the categories, numbers printed only where they can be read,
stable bar order under the softmax sliders, subplot titles that do not run into each other."""
from __future__ import annotations

import numpy as np

from viz.embedding_figures import confusion_figure
from viz.embedding_space import evaluate_zero_shot
from viz.patch_figures import attention_correlation_figure
from viz.softmax import softmax_view
from viz.zero_shot import similarity_matrix
from viz.zero_shot_figures import softmax_halves_figure, softmax_sliders_figure


def test_correlation_axes_span_the_blocks_exactly():
    fig = attention_correlation_figure(np.eye(4))
    assert list(fig.layout.xaxis.range) == [-0.5, 3.5] and list(fig.layout.yaxis.range) == [3.5, -0.5]
    # the square aspect shrinks the plot area instead of widening the range past the blocks
    assert fig.layout.xaxis.constrain == "domain" and fig.layout.yaxis.constrain == "domain"


def _evaluation(classes: int):
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(classes), 3)
    texts = rng.normal(size=(classes, 8))
    images = texts[truth] + rng.normal(scale=2.0, size=(len(truth), 8))
    names = [f"class {i}" for i in range(classes)]
    return evaluate_zero_shot(images, [names[t] for t in truth], names, texts)


def test_confusion_matrix_prints_numbers_only_for_few_classes():
    assert confusion_figure(_evaluation(6)).data[0].texttemplate == "%{z}"
    many = confusion_figure(_evaluation(36)).data[0]
    assert many.texttemplate is None and "%{z} images" in many.hovertemplate


def test_slider_bars_keep_the_models_order_while_a_logit_moves():
    labels = ["cat", "dog", "car"]
    model = softmax_view(labels, [3.0, 2.0, 1.0]).probabilities
    moved = softmax_view(labels, [3.0, 2.0, 9.0])   # "car" is now by far the most probable
    fig = softmax_sliders_figure(moved, model, moved=2)
    assert list(fig.data[0].x) == labels                       # bars stay where they were
    assert np.argmax(fig.data[0].y) == 2 and fig.data[0].marker.color[2] == "#ef553b"
    np.testing.assert_allclose(fig.data[1].y, model)
    assert list(softmax_sliders_figure(moved).data[0].x) == ["car", "cat", "dog"]   # no model order: by value


def test_softmax_halves_titles_put_the_loss_on_its_own_line():
    matrix = similarity_matrix(np.eye(3), np.eye(3), logit_scale=10.0)
    titles = [a.text for a in softmax_halves_figure(matrix, ["a", "b", "c"]).layout.annotations]
    assert titles[0].startswith("image → text<br><sup>softmax over each row, loss ")
    assert titles[1].startswith("text → image<br><sup>softmax over each column, loss ")
    assert all(len(t.split("<br>")[0]) <= 14 for t in titles)
