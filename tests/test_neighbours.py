"""Nearest neighbours at scale against brute-force numpy: exact on torch, faiss IVF beyond the exact limit (its
recall measured against the exact answer and against a random-guess baseline), built once per set and cached."""
from __future__ import annotations

import numpy as np
import pytest

from viz.neighbours import IndexCache, NeighbourIndex, nearest


def _clustered(n: int, dims: int = 64, classes: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims))
    return (centres[rng.integers(0, classes, n)] + 0.7 * rng.normal(size=(n, dims))).astype(np.float32)


def _brute_force(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = q.astype(np.float64) @ v.T.astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_exact_search_is_the_brute_force_top_k():
    vectors = _clustered(3000)
    queries = np.random.default_rng(1).normal(size=(7, 64)).astype(np.float32)
    index = NeighbourIndex(vectors)
    assert index.exact and "exact" in index.kind
    found, scores = index.search(queries, 10)
    reference, reference_scores = _brute_force(queries, vectors, 10)
    np.testing.assert_array_equal(found, reference)
    np.testing.assert_allclose(scores, reference_scores, atol=1e-5)
    top, cosine = nearest(queries[0], vectors, 5)
    np.testing.assert_array_equal(top, reference[0, :5])


def test_faiss_ivf_beyond_the_exact_limit_recalls_the_true_neighbours():
    vectors = _clustered(6000)
    rng = np.random.default_rng(2)
    queries = vectors[rng.choice(6000, 50, replace=False)] + 0.05 * rng.normal(size=(50, 64)).astype(np.float32)
    index = NeighbourIndex(vectors, exact_limit=1000, nprobe=16)
    assert not index.exact and "faiss IVF-Flat" in index.kind
    found, scores = index.search(queries, 10)
    reference, reference_scores = _brute_force(queries, vectors, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, reference, strict=True)])
    chance = 10 / len(vectors)   # recall@10 of 10 random vectors: 0.17%
    assert recall >= 0.9 > 100 * chance, recall
    hit = found == reference
    np.testing.assert_allclose(scores[hit], reference_scores[hit], atol=1e-4)   # cosines of the right ones are exact


def test_neighbours_of_a_point_leave_the_point_out():
    vectors = _clustered(500)
    index = NeighbourIndex(vectors)
    others, _ = index.neighbours_of(3, 5, vectors)
    reference, _ = _brute_force(vectors[3:4], vectors, 6)
    assert 3 not in others and others.tolist() == [i for i in reference[0] if i != 3][:5]
    with pytest.raises(ValueError, match="not in the set"):
        index.neighbours_of(500, 5, vectors)


def test_an_index_is_built_once_per_embedding_set():
    cache = IndexCache()
    vectors = _clustered(800)
    first = cache.get(vectors)
    assert cache.get(vectors.copy()) is first and cache.built == 1
    cache.get(_clustered(800, seed=5))
    assert cache.built == 2
    with pytest.raises(ValueError, match="no images"):
        nearest(np.ones(64, np.float32), np.zeros((0, 64), np.float32), 3)
