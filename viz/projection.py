"""2-D maps of large embedding sets: PCA at any size, UMAP up to ``UMAP_LIMIT`` points on the CPU.

UMAP's cost grows faster than its input: past ``UMAP_FIT_LIMIT`` points it is fitted on an even random sample and
the other points are placed at the similarity-weighted mean of their nearest sampled points (where UMAP's own
``transform`` starts; its refinement took ~10 minutes for 80k points on 2 cores), and the map says so
(:attr:`ScaledMap.note`). With RAPIDS cuML
importable (and a GPU), its UMAP fits every point instead. Both run after PCA to 50 dimensions, on cosine distances.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

UMAP_FIT_LIMIT = 20_000
UMAP_LIMIT = 250_000   # images and texts together: a 100k-row set with its prompts fits (about 20 s at 100k on 2 cores)
PCA_DIMS = 50


@dataclass
class ScaledMap:
    """2-D coordinates and a sentence saying how they were computed (shown in the figure)."""

    coords: np.ndarray
    note: str = ""
    explained: np.ndarray | None = None


def pca_reduce(points: np.ndarray, dims: int, seed: int = 0):
    """A fitted sklearn PCA to ``dims`` components and the reduced points; randomised SVD past 10k rows, so a
    million rows take seconds."""
    from sklearn.decomposition import PCA

    solver = "randomized" if len(points) > 10_000 else "auto"
    pca = PCA(n_components=dims, svd_solver=solver, random_state=seed)
    return pca, pca.fit_transform(points).astype(np.float32)


def pca_map(points: np.ndarray, seed: int = 0) -> ScaledMap:
    """PCA to 2-D of any number of points, with the explained variance ratio of the two components."""
    if len(points) < 2:
        raise ValueError("PCA needs at least 2 points.")
    pca, coords = pca_reduce(points, 2, seed)
    return ScaledMap(coords, "", pca.explained_variance_ratio_)


def cuml_umap():
    """RAPIDS cuML's UMAP class, or None where cuML is not installed (it needs a CUDA GPU)."""
    try:
        from cuml.manifold import UMAP
    except Exception:  # not installed, or installed without a usable GPU
        return None
    return UMAP


def umap_map(points: np.ndarray, seed: int = 0, fit_limit: int = UMAP_FIT_LIMIT, limit: int = UMAP_LIMIT,
             n_neighbors: int = 15) -> ScaledMap:
    """UMAP to 2-D: all points up to ``fit_limit``, beyond that a fit on ``fit_limit`` sampled points and the rest
    placed by their nearest sampled neighbours; refused past ``limit`` points on the CPU (PCA draws any size)."""
    from viz.embedding_space import umap_2d

    n = len(points)
    gpu_umap = cuml_umap()
    if gpu_umap is not None and n >= 5:
        reduced = pca_reduce(points, PCA_DIMS, seed)[1] if points.shape[1] > PCA_DIMS and n > PCA_DIMS else points
        reducer = gpu_umap(n_components=2, n_neighbors=min(n_neighbors, n - 1), random_state=seed)
        return ScaledMap(np.asarray(reducer.fit_transform(reduced), dtype=np.float32),
                         f"UMAP of all {n:,} points by RAPIDS cuML on the GPU")
    if n <= fit_limit:
        return ScaledMap(umap_2d(points, seed, n_neighbors))
    if n > limit:
        raise ValueError(f"UMAP on the CPU is limited to {limit:,} points and this map has {n:,}: choose PCA "
                         "(any size), or install RAPIDS cuML on a GPU machine.")
    import umap

    reduced = pca_reduce(points, PCA_DIMS, seed)[1] if points.shape[1] > PCA_DIMS else points.astype(np.float32)
    sample = np.sort(np.random.default_rng(seed).choice(n, fit_limit, replace=False))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, metric="cosine", random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state
        coords = np.empty((n, 2), dtype=np.float32)
        coords[sample] = reducer.fit_transform(reduced[sample])
    rest = np.setdiff1d(np.arange(n), sample)
    coords[rest] = place_by_neighbours(reduced[sample], coords[sample], reduced[rest], n_neighbors)
    return ScaledMap(coords, f"UMAP fitted on {fit_limit:,} sampled points; the other {n - fit_limit:,} placed by "
                             f"their {n_neighbors} nearest fitted neighbours (cosine-weighted mean)")


def place_by_neighbours(fitted: np.ndarray, fitted_coords: np.ndarray, rest: np.ndarray, k: int = 15,
                        chunk: int = 4096) -> np.ndarray:
    """Map coordinates for ``rest``: the similarity-weighted mean of the coordinates of each point's ``k`` nearest
    ``fitted`` points (cosine). This is where UMAP's own ``transform`` starts before it refines; at 80k points the
    refinement takes minutes on a CPU for little visible change, so the map stops here and says so."""
    import torch

    def unit(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    base, anchors = unit(fitted), torch.from_numpy(np.ascontiguousarray(fitted_coords, dtype=np.float32))
    k = min(k, len(fitted))
    placed = np.empty((len(rest), 2), dtype=np.float32)
    for start in range(0, len(rest), chunk):
        similarity, index = (unit(rest[start:start + chunk]) @ base.T).topk(k, dim=1)
        weights = 1.0 / (1.0 - similarity + 1e-6)   # closer neighbours weigh more; an exact match dominates
        weights = weights / weights.sum(dim=1, keepdim=True)
        placed[start:start + chunk] = (weights.unsqueeze(-1) * anchors[index]).sum(dim=1).numpy()
    return placed
