"""Automatic clusters of a map, named in CLIP's own words, and density contours.

Clusters come from HDBSCAN (scikit-learn) on the 2-D map (an even sample of at most ``CLUSTER_SAMPLE`` points; the
rest join the cluster of their nearest sampled point). Each cluster is named by the text nearest to the centroid of
its images' normalised embeddings in the joint space: one of the set's class prompts (its captions where it has
none), or a vocabulary the user gives. Unlike a label read from a text column, the name is what the model itself
says the cluster holds.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from viz.embedding_space import normalise

CLUSTER_SAMPLE = 20_000


@dataclass
class Cluster:
    """One cluster: its size, centre on the map, and the texts nearest to its centroid (best first)."""

    size: int
    centre: np.ndarray          # (2,) on the map
    names: list[str]            # nearest texts, best first
    scores: list[float]         # their cosine with the cluster's centroid

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass
class Clustering:
    """Cluster of every point (-1 = noise) and the clusters, largest first."""

    assignment: np.ndarray
    clusters: list[Cluster]
    note: str = ""


def cluster_map(coords: np.ndarray, min_cluster_size: int | None = None, sample: int = CLUSTER_SAMPLE, seed: int = 0
                ) -> tuple[np.ndarray, str]:
    """(cluster of each point, -1 for noise; a note) by HDBSCAN on 2-D coordinates, renumbered largest first."""
    from sklearn.cluster import HDBSCAN
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float32)
    n = len(coords)
    if n < 5:
        raise ValueError(f"Clustering needs at least 5 points (got {n}).")
    picked = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    size = min_cluster_size or max(5, len(picked) // 100)
    found = HDBSCAN(min_cluster_size=size, min_samples=min(size, 10), copy=True).fit_predict(coords[picked])
    assignment = np.full(n, -1, dtype=np.int64)
    assignment[picked] = found
    note = f"HDBSCAN on the map (min cluster size {size})"
    if len(picked) < n:
        rest = np.setdiff1d(np.arange(n), picked)
        nearest = NearestNeighbors(n_neighbors=1).fit(coords[picked]).kneighbors(coords[rest], return_distance=False)
        assignment[rest] = found[nearest[:, 0]]
        note += f" on {len(picked):,} sampled points, the rest joining their nearest sampled point's cluster"
    ids, counts = np.unique(assignment[assignment >= 0], return_counts=True)
    renumber = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
    renumber[ids[np.argsort(-counts, kind="stable")]] = np.arange(len(ids))
    assignment[assignment >= 0] = renumber[assignment[assignment >= 0]]
    return assignment, note


def name_clusters(assignment: np.ndarray, coords: np.ndarray, embeddings: np.ndarray, text_embeddings: np.ndarray,
                  texts: Sequence[str], top: int = 3) -> list[Cluster]:
    """Each cluster (0, 1, ...) named by the ``top`` texts nearest (cosine) to the normalised mean of its members'
    normalised embeddings."""
    if len(texts) == 0 or len(text_embeddings) != len(texts):
        raise ValueError("Naming clusters needs texts with their embeddings (captions, class prompts or a "
                         "vocabulary).")
    vectors, words = normalise(embeddings), normalise(text_embeddings)
    clusters = []
    for cluster in range(int(assignment.max()) + 1 if len(assignment) else 0):
        members = np.flatnonzero(assignment == cluster)
        if not len(members):
            continue
        centroid = normalise(vectors[members].mean(axis=0, keepdims=True))[0]
        cosine = words @ centroid
        best = np.argsort(-cosine, kind="stable")[:top]
        clusters.append(Cluster(len(members), np.median(coords[members], axis=0), [texts[i] for i in best],
                                [float(cosine[i]) for i in best]))
    return clusters


def clusters_in_words(coords: np.ndarray, embeddings: np.ndarray, text_embeddings: np.ndarray, texts: Sequence[str],
                      min_cluster_size: int | None = None, seed: int = 0) -> Clustering:
    """Clusters of the points at ``coords`` (one row per row of ``embeddings``), named by the nearest texts."""
    assignment, note = cluster_map(coords, min_cluster_size, seed=seed)
    clusters = name_clusters(assignment, np.asarray(coords), embeddings, text_embeddings, texts)
    return Clustering(assignment, clusters, f"{len(clusters)} clusters by {note}, named by the nearest of "
                                            f"{len(texts):,} texts in CLIP's joint space")


def density_contours(coords: np.ndarray, levels: Sequence[float] = (0.5, 0.8, 0.95), grid: int = 96,
                     smooth: float = 1.5) -> list[dict]:
    """Contours enclosing the densest ``levels`` fractions of the points (a smoothed 2-D histogram), as polylines
    {"level", "x", "y"} in the coordinates' own units."""
    from contourpy import contour_generator
    from scipy.ndimage import gaussian_filter

    coords = np.asarray(coords, dtype=np.float64)
    coords = coords[np.isfinite(coords).all(axis=1)]
    if len(coords) < 10:
        return []
    low, high = coords.min(axis=0), coords.max(axis=0)
    pad = (high - low) * 0.05 + 1e-9
    counts, xs, ys = np.histogram2d(coords[:, 0], coords[:, 1], bins=grid,
                                    range=[[low[0] - pad[0], high[0] + pad[0]], [low[1] - pad[1], high[1] + pad[1]]])
    density = gaussian_filter(counts, smooth).T   # rows = y
    ordered = np.sort(density.ravel())[::-1]
    mass = np.cumsum(ordered) / ordered.sum()
    centres_x, centres_y = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    generator = contour_generator(centres_x, centres_y, density)
    lines = []
    for level in levels:
        threshold = ordered[min(np.searchsorted(mass, level), len(ordered) - 1)]
        for line in generator.lines(threshold):
            if len(line) >= 3:
                lines.append({"level": float(level), "x": line[:, 0].round(4).tolist(),
                              "y": line[:, 1].round(4).tolist()})
    return lines
