"""Figures of the Zero-shot & Softmax and Embedding space tabs, checked by what they draw."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.embed import EmbeddingSet, ImageItem, text_entries
from models.world.shapes import make_dataset
from viz.embedding_figures import (
    confusion_figure,
    embedding_map_figure,
    modality_gap_figure,
    per_class_accuracy_figure,
    thumbnail_data_url,
)
from viz.embedding_space import Projection, evaluate_zero_shot, modality_gap, pair_similarities
from viz.embedding_views import gap_outputs
from viz.softmax import softmax_view
from viz.zero_shot import ZeroShotResult, similarity_matrix
from viz.zero_shot_figures import similarity_figure, softmax_halves_figure, softmax_sliders_figure, top_k_figure


@pytest.fixture(scope="module")
def joint_set() -> EmbeddingSet:
    """12 images (3 labels, captions on 8 of them) with random embeddings; one extra label without images."""
    rng = np.random.default_rng(0)
    examples = make_dataset(12, seed=770_001)
    labels = ["red circle", "blue star", "green cross"]
    items = [ImageItem(e.image, labels[i % 3], f"caption {i % 5}" if i < 8 else None, f"img {i}")
             for i, e in enumerate(examples)]
    texts, kinds, text_labels, image_caption, class_text = text_entries(items, "a {}", extra_labels=["yellow heart"])
    return EmbeddingSet("test:model", 50.0, items, rng.normal(size=(12, 8)).astype(np.float32), texts, kinds,
                        text_labels, rng.normal(size=(len(texts), 8)).astype(np.float32), image_caption, class_text,
                        "a {}")


def _projection(es: EmbeddingSet) -> Projection:
    n = len(es.images) + len(es.texts)
    coords = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    return Projection(coords, len(es.images), "pca", False)


def test_text_entries_pair_each_image_with_its_caption_and_add_class_prompts(joint_set):
    es = joint_set
    assert es.text_kinds == ["caption"] * 5 + ["class"] * 4
    assert es.texts[5:] == ["a red circle", "a blue star", "a green cross", "a yellow heart"]
    assert es.image_caption.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, -1, -1, -1, -1]
    assert es.class_names == ["red circle", "blue star", "green cross", "yellow heart"]


def test_map_is_webgl_with_every_point_once_and_lines_to_captions(joint_set):
    es = joint_set
    fig = embedding_map_figure(es, _projection(es), "label")
    assert all(trace.type == "scattergl" for trace in fig.data)
    markers = [t for t in fig.data if t.mode == "markers"]
    ids = np.concatenate([np.asarray(t.customdata) for t in markers])
    assert sorted(ids.tolist()) == list(range(len(es.images) + len(es.texts)))
    assert {t.name for t in markers} == {"red circle", "blue star", "green cross", "captions", "class prompts"}
    lines = next(t for t in fig.data if t.mode == "lines")
    assert len(lines.x) == 3 * 8 and np.isnan(np.asarray(lines.x, dtype=float)[2::3]).all()   # 8 pairs
    start, end = np.asarray(lines.x)[0], np.asarray(lines.x)[1]
    assert start == 0.0 and end == 2.0 * (12 + 0)                                             # image 0 -> text 0
    assert "PCA of 12 images and 9 texts" in fig.layout.title.text
    assert len(fig.to_json()) < 2 * 2**20


def test_a_map_of_2000_images_and_200_texts_stays_under_2_megabytes():
    rng = np.random.default_rng(2)
    captions = [f"a small colour{j % 6} shape{j % 36} on the left on a textured background #{j}" for j in range(200)]
    items = [ImageItem(None, f"colour{i % 6} shape{i % 36}", captions[i % 200], f"folder/class{i % 36}/{i:05d}.png")
             for i in range(2000)]
    texts, kinds, labels, image_caption, class_text = text_entries(items)
    es = EmbeddingSet("test:model", 100.0, items, rng.normal(size=(2000, 8)).astype(np.float32), texts, kinds, labels,
                      rng.normal(size=(len(texts), 8)).astype(np.float32), image_caption, class_text)
    coords = rng.normal(size=(2000 + len(texts), 2)).astype(np.float32)
    fig = embedding_map_figure(es, Projection(coords, 2000, "umap", False), "prediction", es.labels,
                               highlight=list(range(10)))
    assert len(texts) == 200 + 36
    assert len(fig.to_json()) < 2 * 2**20


def test_map_colours_by_modality_or_prediction_and_highlights_a_query(joint_set):
    es = joint_set
    plain = embedding_map_figure(es, _projection(es), "modality", show_lines=False)
    assert [t.name for t in plain.data] == ["captions", "class prompts", "images"]   # texts drawn under the images
    predictions = ["blue star"] * 6 + ["yellow heart"] * 6
    fig = embedding_map_figure(es, _projection(es), "prediction", predictions, highlight=[5, 2, 9])
    names = [t.name for t in fig.data]
    assert "blue star" in names and "yellow heart" in names and "red circle" not in names
    ring = fig.data[-1]
    assert ring.name == "query: top 3" and list(ring.text) == ["1", "2", "3"]
    assert np.asarray(ring.customdata).tolist() == [5, 2, 9]
    with pytest.raises(ValueError, match="predictions"):
        embedding_map_figure(es, _projection(es), "prediction")


def test_gap_histograms_and_evaluation_figures(joint_set):
    es = joint_set
    pairs = pair_similarities(es.image_embeddings, es.text_embeddings, es.image_caption)
    gap = modality_gap(es.image_embeddings, es.text_embeddings, es.image_caption)
    fig = modality_gap_figure(pairs, gap)
    assert [t.type for t in fig.data] == ["histogram", "histogram"]
    assert len(fig.data[1].x) == 8 and f"{gap.length:.3f}" in fig.layout.title.text
    assert "over 8 paired image-caption embeddings" in fig.layout.title.text
    rows = [es.class_text[c] for c in es.class_names]
    evaluation = evaluate_zero_shot(es.image_embeddings, es.labels, es.class_names, es.text_embeddings[rows])
    bars = per_class_accuracy_figure(evaluation)
    shown = np.asarray(bars.data[0].y, dtype=float)
    assert list(bars.data[0].x)[-1] == "yellow heart" and np.isnan(shown[-1])   # no images: last
    assert np.all(np.diff(shown[~np.isnan(shown)]) >= 0) and "worst first" in bars.layout.title.text
    confusion = confusion_figure(evaluation)
    assert confusion.data[0].type == "heatmap" and np.asarray(confusion.data[0].z).sum() == 12
    assert list(confusion.data[0].x) == list(bars.data[0].x)


def test_similarity_figure_outlines_the_diagonal_and_writes_values():
    rng = np.random.default_rng(1)
    matrix = similarity_matrix(rng.normal(size=(3, 6)), rng.normal(size=(4, 6)), 20.0)
    images = [e.image for e in make_dataset(3, seed=770_002)]
    fig = similarity_figure(matrix, ["t0", "t1", "t2", "t3"], images)
    assert fig.data[0].type == "heatmap" and fig.data[0].texttemplate == "%{z:.2f}"
    np.testing.assert_allclose(np.asarray(fig.data[0].z), matrix.cosine)
    diagonal = [(s.x0, s.y0) for s in fig.layout.shapes]
    assert diagonal == [(-0.5, -0.5), (0.5, 0.5), (1.5, 1.5)]
    assert len(fig.layout.images) == 3 and fig.layout.images[0].source.startswith("data:image/jpeg;base64,")
    halves = softmax_halves_figure(matrix, ["t0", "t1", "t2", "t3"])
    rows_softmax, cols_softmax = (np.asarray(t.z) for t in halves.data)
    np.testing.assert_allclose(rows_softmax.sum(axis=1), 1.0)
    np.testing.assert_allclose(cols_softmax.sum(axis=0), 1.0)
    assert len(halves.layout.shapes) == 6 and {s.xref for s in halves.layout.shapes} == {"x", "x2"}
    assert "each row" in halves.layout.annotations[0].text and "each column" in halves.layout.annotations[1].text


def test_top_k_and_slider_figures():
    labels = ["a", "b", "c", "d"]
    logits = np.array([1.0, 3.0, 2.0, 0.0])
    probabilities = np.exp(logits) / np.exp(logits).sum()
    result = ZeroShotResult(labels, ["{}"], logits / 10, logits, probabilities, 10.0)
    fig = top_k_figure(result, 2)
    assert list(fig.data[0].y) == ["c", "b"] and fig.data[0].orientation == "h"   # best on top
    np.testing.assert_allclose(fig.data[0].x, sorted(probabilities)[-2:])
    view = softmax_view(labels, logits, 0.5)
    sliders = softmax_sliders_figure(view, probabilities)
    assert list(sliders.data[0].x) == ["b", "c", "a", "d"]
    assert float(np.sum(sliders.data[0].y)) == pytest.approx(1.0)
    assert f"{view.entropy:.3f}" in sliders.layout.title.text and "T = 0.5" in sliders.layout.title.text
    assert sliders.data[1].name == "model (T = 1)"


def test_thumbnails_are_small_jpegs():
    image = make_dataset(1, seed=770_003, image_size=256)[0].image
    url = thumbnail_data_url(image, 48)
    assert url.startswith("data:image/jpeg;base64,") and len(url) < 4000


def _unit_rows(vectors):
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_tabs_gap_is_measured_on_image_caption_pairs_only(joint_set):
    es = joint_set
    figure, note = gap_outputs(es)
    captioned = np.flatnonzero(es.image_caption >= 0)   # images 0-7 with captions 0-4; the 4 class prompts left out
    by_hand = np.linalg.norm(_unit_rows(es.image_embeddings[captioned]).mean(0)
                             - _unit_rows(es.text_embeddings[es.image_caption[captioned]]).mean(0))
    every_text = np.linalg.norm(_unit_rows(es.image_embeddings).mean(0) - _unit_rows(es.text_embeddings).mean(0))
    assert f"{by_hand:.3f}" != f"{every_text:.3f}"   # the prompts would change the answer
    assert f"= {by_hand:.3f} over 8 paired image-caption embeddings" in figure.layout.title.text
    assert f"over 8 paired image-caption embeddings = **{by_hand:.3f}**" in note


def test_without_captions_the_tab_shows_prompt_pairs_and_says_why_there_is_no_gap(joint_set):
    es = replace(joint_set, image_caption=np.full(len(joint_set.images), -1))
    figure, note = gap_outputs(es)
    assert "no image has a caption, so no modality gap" in figure.layout.title.text
    assert len(figure.data[1].x) == 12                                 # each labelled image with its class prompt
    assert note.startswith("No image has a caption, so the modality gap is not measured")
    assert "Modality gap ‖" not in note
    unlabelled = replace(es, images=[replace(item, label=None) for item in es.images])
    figure, note = gap_outputs(unlabelled)
    assert figure is None and "no image-text pairs" in note
