"""Nearest neighbours in the original embedding space, at any size: cosine similarity on L2-normalised vectors.

Up to ``EXACT_LIMIT`` vectors (about 100k) the search is exact, one matrix product on torch. Beyond, a faiss
inverted-file index (IVF-Flat on inner products: k-means cells trained on a sample, ``nprobe`` cells scanned per
query) answers a query at a million x 512 in milliseconds instead of a full scan. An index is built once per
embedding set and kept (:data:`INDEXES`); text queries and "neighbours of this point" both read it.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch

from viz.embedding_space import normalise

EXACT_LIMIT = 100_000
TRAIN_PER_CELL = 48          # k-means training vectors per IVF cell
MAX_CELLS = 1024


def ivf_cells(n: int) -> int:
    """IVF cells for ``n`` vectors: about 1 per 1,000 vectors, 64 to 1,024 (k-means stays seconds on a CPU)."""
    return int(min(MAX_CELLS, max(64, n // 1000)))


class NeighbourIndex:
    """Cosine nearest neighbours of a fixed set of vectors: exact on torch below ``exact_limit`` vectors, a faiss
    IVF-Flat index from there on (``nprobe`` of its cells searched per query)."""

    def __init__(self, vectors: np.ndarray, exact_limit: int = EXACT_LIMIT, nprobe: int = 32, seed: int = 0):
        vectors = normalise(vectors)
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(f"Index a non-empty (n, d) array of vectors, got shape {vectors.shape}.")
        self.size, self.dims = vectors.shape
        self.exact = self.size <= exact_limit
        if self.exact:
            self._matrix = torch.from_numpy(np.ascontiguousarray(vectors))
            self.kind = f"exact search (torch) over {self.size:,} vectors"
            return
        import faiss

        cells = ivf_cells(self.size)
        quantiser = faiss.IndexFlatIP(self.dims)
        index = faiss.IndexIVFFlat(quantiser, self.dims, cells, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(self.size, min(self.size, cells * TRAIN_PER_CELL), replace=False)
        index.cp.niter = 12
        index.cp.seed = seed
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        index.nprobe = min(nprobe, cells)
        self._index, self._quantiser = index, quantiser
        self.kind = f"faiss IVF-Flat over {self.size:,} vectors ({cells} cells, {index.nprobe} searched per query)"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices (m, k) int64, cosine (m, k) float32) of each query's ``k`` nearest vectors, best first."""
        queries = normalise(np.asarray(queries, dtype=np.float32).reshape(-1, self.dims))
        k = max(1, min(int(k), self.size))
        if self.exact:
            scores = torch.from_numpy(queries) @ self._matrix.T
            top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
            return top.indices.numpy().astype(np.int64), top.values.numpy().astype(np.float32)
        scores, indices = self._index.search(np.ascontiguousarray(queries), k)
        return indices.astype(np.int64), scores.astype(np.float32)

    def neighbours_of(self, row: int, k: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest other vectors of row ``row`` of ``vectors`` (the indexed set), best first."""
        if not 0 <= int(row) < self.size:
            raise ValueError(f"Point {row} is not in the set ({self.size:,} vectors).")
        indices, scores = self.search(vectors[int(row)], int(k) + 1)
        keep = indices[0] != int(row)
        return indices[0][keep][:int(k)], scores[0][keep][:int(k)]


def quick_fingerprint(vectors: np.ndarray, rows: int = 4096) -> str:
    """A hash of the array's shape, dtype and up to ``rows`` evenly spaced rows: enough to tell embedding sets apart
    without reading 2 GB each time."""
    vectors = np.asarray(vectors)
    digest = hashlib.sha1(f"{vectors.shape}{vectors.dtype}".encode())
    picked = np.linspace(0, len(vectors) - 1, min(rows, len(vectors))).astype(np.int64) if len(vectors) else []
    digest.update(np.ascontiguousarray(vectors[picked]).tobytes())
    return digest.hexdigest()


class IndexCache:
    """Neighbour indexes by embedding set; the least recently used dropped first."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.built = 0
        self._items: OrderedDict[tuple, NeighbourIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, vectors: np.ndarray, exact_limit: int = EXACT_LIMIT) -> NeighbourIndex:
        key = (quick_fingerprint(vectors), exact_limit)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        index = NeighbourIndex(vectors, exact_limit)
        with self._lock:
            self.built += 1
            self._items[key] = index
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return index


INDEXES = IndexCache()


def nearest(query: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosines of the ``k`` vectors nearest to ``query`` (one vector), through the cached index."""
    if len(vectors) == 0:
        raise ValueError("There are no images to search.")
    indices, scores = INDEXES.get(vectors).search(query, k)
    return indices[0], scores[0]
