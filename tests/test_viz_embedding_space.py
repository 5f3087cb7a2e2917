"""Joint-space analysis against brute-force references: modality gap, pair similarities, retrieval, zero-shot
evaluation (confusion matrix checked with scikit-learn), and the cached projections."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion

from viz.embedding_space import (
    ProjectionCache,
    confusion_matrix,
    evaluate_zero_shot,
    joint_matrix,
    modality_gap,
    pair_similarities,
    retrieve,
    umap_2d,
)


def unit(v):
    return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)


@pytest.fixture()
def joint():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(40, 16)) + 2.0      # a shared offset per modality: a gap to find
    texts = rng.normal(size=(12, 16)) - 1.0
    return images.astype(np.float32), texts.astype(np.float32)


def test_modality_gap_is_the_distance_between_normalised_centroids_of_the_pairs(joint):
    images, texts = joint
    image_text = np.array([i % 10 if i % 4 else -1 for i in range(40)])   # texts 10 and 11 are no image's caption
    paired = [i for i in range(40) if image_text[i] >= 0]
    image_centroid = sum(unit(images[i]) for i in paired) / len(paired)
    text_centroid = sum(unit(texts[image_text[i]]) for i in paired) / len(paired)
    gap = modality_gap(images * 7.0, texts, image_text)   # scale does not matter: embeddings are normalised first
    assert gap.pairs == 30
    assert gap.length == pytest.approx(float(np.sqrt(((image_centroid - text_centroid) ** 2).sum())), rel=1e-5)
    np.testing.assert_allclose(gap.vector, image_centroid - text_centroid, atol=1e-6)
    assert modality_gap(images, images, np.arange(40)).length == pytest.approx(0.0, abs=1e-6)


def test_modality_gap_leaves_out_class_prompts_and_unpaired_images():
    images = np.array([[2, 0, 0], [0, 3, 0], [0, 0, 1], [0, 0, -2]], dtype=np.float32)   # image 2 has no caption
    texts = np.array([[0, 0, 5], [1, 0, 0], [0, -4, 0]], dtype=np.float32)               # text 2: a class prompt
    gap = modality_gap(images, texts, [0, 1, -1, 1])                                     # caption 1 in two pairs
    # by hand: images (1,0,0), (0,1,0), (0,0,-1) against captions (0,0,1), (1,0,0), (1,0,0)
    np.testing.assert_allclose(gap.image_centroid, [1 / 3, 1 / 3, -1 / 3], atol=1e-6)
    np.testing.assert_allclose(gap.text_centroid, [2 / 3, 0, 1 / 3], atol=1e-6)
    assert gap.pairs == 3 and gap.length == pytest.approx(np.sqrt(6) / 3, rel=1e-6)
    # every image against every text (the class prompt included) would read |(-1/12, 7/12, -1/3)| = sqrt(66)/12
    assert abs(gap.length - np.sqrt(66) / 12) > 0.1
    with pytest.raises(ValueError, match="no image has a caption"):
        modality_gap(images, texts, [-1, -1, -1, -1])
    with pytest.raises(ValueError, match="one entry per image"):
        modality_gap(images, texts, [0, 1])
    with pytest.raises(ValueError, match="points at text 3"):
        modality_gap(images, texts, [0, 1, 3, -1])


def test_removing_each_modalitys_mean_closes_the_gap(joint):
    images, texts = joint
    centred = joint_matrix(images, texts, remove_gap=True)
    np.testing.assert_allclose(centred[:40].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(centred[40:].mean(axis=0), 0.0, atol=1e-6)
    plain = joint_matrix(images, texts)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-6)


def test_pair_similarities_match_a_double_loop(joint):
    images, texts = joint
    image_text = np.array([i % 10 if i % 4 else -1 for i in range(40)])  # every 4th image has no text
    pairs = pair_similarities(images, texts, image_text)
    used = sorted(set(image_text[image_text >= 0]))
    matching, non_matching = [], []
    for i, own in enumerate(image_text):
        if own < 0:
            continue
        for j in used:
            cosine = float(unit(images[i]) @ unit(texts[j]))
            (matching if j == own else non_matching).append(cosine)
    np.testing.assert_allclose(np.sort(pairs.matching), np.sort(matching), atol=1e-5)
    np.testing.assert_allclose(np.sort(pairs.non_matching), np.sort(non_matching), atol=1e-5)
    sampled = pair_similarities(images, texts, image_text, max_non_matching=50)
    assert len(sampled.non_matching) == 50
    assert np.abs(sampled.non_matching[:, None] - np.array(non_matching)[None, :]).min(axis=1).max() < 1e-5
    with pytest.raises(ValueError, match="No image has a matching text"):
        pair_similarities(images, texts, np.full(40, -1))


def test_retrieval_is_a_brute_force_argsort_in_the_original_space(joint):
    images, texts = joint
    for query in texts[:4]:
        order, scores = retrieve(query, images, k=7)
        brute = [float(unit(v) @ unit(query)) for v in images]
        expected = sorted(range(len(images)), key=lambda i: -brute[i])[:7]
        assert order.tolist() == expected
        np.testing.assert_allclose(scores, [brute[i] for i in expected], atol=1e-5)
    assert len(retrieve(texts[0], images, k=100)[0]) == 40


def test_confusion_matrix_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    truth, predicted = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    np.testing.assert_array_equal(confusion_matrix(truth, predicted, 7),
                                  sklearn_confusion(truth, predicted, labels=list(range(7))))


def test_zero_shot_evaluation_matches_a_reference():
    rng = np.random.default_rng(5)
    classes = [f"class {c}" for c in range(6)]
    prompts = rng.normal(size=(6, 10))
    truth = rng.integers(0, 6, 90)
    images = prompts[truth] + rng.normal(scale=1.4, size=(90, 10))
    labels = [classes[t] for t in truth] + [None, "unknown"]         # unlabelled images are skipped
    images = np.vstack([images, rng.normal(size=(2, 10))])
    evaluation = evaluate_zero_shot(images, labels, classes, prompts)
    scores = np.array([[unit(v) @ unit(p) for p in prompts] for v in images[:90]])
    ranked = [sorted(range(6), key=lambda c, row=row: -row[c]) for row in scores]
    assert evaluation.top1 == pytest.approx(np.mean([r[0] == t for r, t in zip(ranked, truth, strict=True)]))
    assert evaluation.top5 == pytest.approx(np.mean([t in r[:5] for r, t in zip(ranked, truth, strict=True)]))
    np.testing.assert_array_equal(evaluation.confusion,
                                  sklearn_confusion(truth, [r[0] for r in ranked], labels=list(range(6))))
    for c in range(6):
        rows = truth == c
        assert evaluation.per_class[c] == pytest.approx(np.mean(np.array([r[0] for r in ranked])[rows] == c))
    worst = evaluation.worst_first
    assert np.all(np.diff(evaluation.per_class[worst]) >= 0)
    assert evaluation.top1 < 1.0 and evaluation.top5 > evaluation.top1
    with pytest.raises(ValueError, match="No labelled images"):
        evaluate_zero_shot(images, [None] * len(images), classes, prompts)


def test_projections_are_computed_once_and_cached(joint):
    images, texts = joint
    cache = ProjectionCache()
    first = cache.get(images, texts, "pca")
    again = cache.get(images.copy(), texts.copy(), "pca")
    assert again is first and cache.computed == 1
    assert first.coords.shape == (52, 2) and first.image_coords.shape == (40, 2) and first.text_coords.shape == (12, 2)
    assert cache.get(images, texts, "pca", remove_gap=True) is not first and cache.computed == 2
    umap_map = cache.get(images, texts, "umap")
    assert umap_map.coords.shape == (52, 2) and np.isfinite(umap_map.coords).all() and cache.computed == 3
    with pytest.raises(ValueError, match="Unknown projection"):
        cache.get(images, texts, "tsne")


def test_umap_separates_clusters_and_refuses_too_few_points():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64)) * 5
    points = np.vstack([c + rng.normal(size=(30, 64)) for c in centres]).astype(np.float32)
    coords = umap_2d(points)
    groups = [coords[i * 30:(i + 1) * 30] for i in range(3)]
    within = max(np.linalg.norm(g - g.mean(0), axis=1).mean() for g in groups)
    between = min(np.linalg.norm(a.mean(0) - b.mean(0)) for i, a in enumerate(groups) for b in groups[i + 1:])
    assert between > 2 * within
    with pytest.raises(ValueError, match="at least 5 points"):
        umap_2d(points[:4])


def test_the_warm_up_compiles_both_of_umaps_neighbour_paths(monkeypatch):
    """Exact neighbours serve maps under 4,096 points, pynndescent larger ones: the start-up warm-up runs both,
    on float32 points wide enough to go through PCA first, as real embeddings do."""
    import viz.embedding_space as space

    calls = []
    monkeypatch.setattr(space, "_warmed", False)
    monkeypatch.setattr(space, "umap_2d", lambda points, **kw: calls.append((points.dtype, points.shape[1], kw)))
    space.warm_up()
    space.warm_up()   # once per process
    assert [kw.get("approximate_neighbours", False) for *_, kw in calls] == [False, True]
    assert all(dtype == np.float32 and dims > space.PCA_DIMS for dtype, dims, _ in calls)


def test_a_large_umap_is_fitted_on_a_sample_the_rest_placed_by_neighbours_and_the_map_says_so():
    from sklearn.neighbors import KNeighborsClassifier

    from viz.projection import umap_map

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 600)
    points = (rng.normal(size=(3, 20)) * 4)[truth] + rng.normal(size=(600, 20))
    scaled = umap_map(points.astype(np.float32), fit_limit=300, limit=1000)
    assert scaled.coords.shape == (600, 2) and np.isfinite(scaled.coords).all()
    assert "fitted on 300 sampled points" in scaled.note and "other 300 placed by their 15 nearest" in scaled.note
    # the transformed half lands among its own class: 5-NN on the fitted half labels it (chance 1/3)
    fitted = np.zeros(600, bool)
    fitted[np.sort(np.random.default_rng(0).choice(600, 300, replace=False))] = True
    knn = KNeighborsClassifier(5).fit(scaled.coords[fitted], truth[fitted])
    assert knn.score(scaled.coords[~fitted], truth[~fitted]) >= 0.9
    with pytest.raises(ValueError, match="choose PCA"):
        umap_map(points.astype(np.float32), fit_limit=100, limit=500)


def test_pca_of_a_large_set_matches_the_full_svd():
    from sklearn.decomposition import PCA

    from viz.projection import pca_map

    points = np.random.default_rng(4).normal(size=(25_000, 16)) * np.linspace(3, 0.5, 16)
    scaled = pca_map(points)
    full = PCA(n_components=2, svd_solver="full").fit(points)
    np.testing.assert_allclose(scaled.explained, full.explained_variance_ratio_, rtol=1e-3)
    reference = full.transform(points)
    signs = np.sign((scaled.coords * reference).sum(axis=0))
    np.testing.assert_allclose(scaled.coords * signs, reference, atol=1e-2)
