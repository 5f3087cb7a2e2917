"""CLIP's joint image-text space: 2-D maps (PCA, UMAP), the modality gap, retrieval and zero-shot evaluation.

Every comparison is made in the original embedding space on L2-normalised vectors; the 2-D map is only a picture.
UMAP runs on cosine distances after PCA to 50 dimensions; maps are cached per (embeddings, method, gap removal),
and numba's compilation is paid once at start-up by :func:`warm_up`.
"""
from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("umap", "pca")
PCA_DIMS = 50


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


# ---------------------------------------------------------------------------------------------------- projection

def joint_matrix(image_embeddings: np.ndarray, text_embeddings: np.ndarray, remove_gap: bool = False) -> np.ndarray:
    """Normalised images stacked over normalised texts; with ``remove_gap`` each modality's mean is subtracted."""
    images, texts = normalise(image_embeddings), normalise(text_embeddings)
    if remove_gap:
        images = images - images.mean(axis=0, keepdims=True)
        if len(texts):
            texts = texts - texts.mean(axis=0, keepdims=True)
    return np.concatenate([images, texts.reshape(-1, images.shape[1])], axis=0)


def pca_2d(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates (n, 2), explained variance ratio of the two components)."""
    from sklearn.decomposition import PCA

    if len(points) < 2:
        raise ValueError("PCA needs at least 2 points.")
    pca = PCA(n_components=2, random_state=seed)
    return pca.fit_transform(points).astype(np.float32), pca.explained_variance_ratio_


def umap_2d(points: np.ndarray, seed: int = 0, n_neighbors: int = 15, approximate_neighbours: bool = False
            ) -> np.ndarray:
    """UMAP (cosine) to 2-D after PCA to at most 50 dimensions.

    UMAP finds neighbours exactly below 4,096 points and with pynndescent from there on (or always, with
    ``approximate_neighbours``, which is how :func:`warm_up` compiles that path on a few points).
    """
    import umap
    from sklearn.decomposition import PCA

    n = len(points)
    if n < 5:
        raise ValueError(f"UMAP needs at least 5 points (got {n}); use PCA for fewer.")
    if points.shape[1] > PCA_DIMS and n > PCA_DIMS:
        points = PCA(n_components=PCA_DIMS, random_state=seed).fit_transform(points)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), metric="cosine", random_state=seed,
                        init="spectral" if n > 20 else "random", force_approximation_algorithm=approximate_neighbours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; spectral init fallbacks
        return reducer.fit_transform(points).astype(np.float32)


@dataclass
class Projection:
    """2-D coordinates of the images (first ``n_images`` rows) and texts of a joint map."""

    coords: np.ndarray
    n_images: int
    method: str
    remove_gap: bool
    explained: np.ndarray | None = None   # PCA's explained variance ratio
    note: str = ""                         # how a large map was computed (UMAP fitted on a sample, ...)

    @property
    def image_coords(self) -> np.ndarray:
        return self.coords[:self.n_images]

    @property
    def text_coords(self) -> np.ndarray:
        return self.coords[self.n_images:]


def fingerprint(*arrays: np.ndarray) -> str:
    """A hash of arrays' shapes and bytes: the key under which their projections are cached."""
    digest = hashlib.sha1()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class ProjectionCache:
    """Projections kept per (embeddings, method, gap removal, seed); least recently used dropped first."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self.computed = 0
        self._items: OrderedDict[tuple, Projection] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, image_embeddings: np.ndarray, text_embeddings: np.ndarray, method: str = "umap",
            remove_gap: bool = False, seed: int = 0) -> Projection:
        method = method.lower()
        if method not in METHODS:
            raise ValueError(f"Unknown projection {method!r}; choose one of {', '.join(METHODS)}.")
        key = (fingerprint(image_embeddings, text_embeddings), method, bool(remove_gap), seed)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        from viz.projection import pca_map, umap_map

        points = joint_matrix(image_embeddings, text_embeddings, remove_gap)
        scaled = pca_map(points, seed) if method == "pca" else umap_map(points, seed)
        del points
        projection = Projection(scaled.coords, len(image_embeddings), method, bool(remove_gap), scaled.explained,
                                scaled.note)
        with self._lock:
            self.computed += 1
            self._items[key] = projection
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return projection


PROJECTIONS = ProjectionCache()


def project(image_embeddings: np.ndarray, text_embeddings: np.ndarray, method: str = "umap",
            remove_gap: bool = False, seed: int = 0) -> Projection:
    """The cached 2-D map of images and texts."""
    return PROJECTIONS.get(image_embeddings, text_embeddings, method, remove_gap, seed)


_warm_lock = threading.Lock()
_warmed = False


def warm_up() -> None:
    """Compile UMAP's numba code once, so that no user request pays for it: two tiny fits of float32 points through
    PCA (as the app's embeddings go), one with exact neighbours (maps under 4,096 points), one with pynndescent's
    (larger maps)."""
    global _warmed
    with _warm_lock:
        if _warmed:
            return
        points = np.random.default_rng(0).normal(size=(96, PCA_DIMS + 14)).astype(np.float32)
        umap_2d(points)
        umap_2d(points, approximate_neighbours=True)
        _warmed = True


# ---------------------------------------------------------------------------------------------------- modality gap

@dataclass
class ModalityGap:
    """The modality gap as "Mind the Gap" (Liang et al., 2022) measures it on ``pairs`` paired image-caption
    embeddings: the centroid of their L2-normalised images minus that of their L2-normalised captions, and its
    length."""

    image_centroid: np.ndarray
    text_centroid: np.ndarray
    pairs: int

    @property
    def vector(self) -> np.ndarray:
        return self.image_centroid - self.text_centroid

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.vector))


def modality_gap(image_embeddings: np.ndarray, text_embeddings: np.ndarray, image_text: Sequence[int]
                 ) -> ModalityGap:
    """The gap between paired images and captions: ``image_text[i]`` is the row of image i's caption in
    ``text_embeddings`` (-1 for none), as :func:`pair_similarities` takes it. Each pair counts once (a caption shared
    by two images, twice); unpaired images and texts that are no image's caption (class prompts) are left out."""
    image_text = np.asarray(image_text, dtype=np.int64)
    if image_text.shape != (len(image_embeddings),):
        raise ValueError(f"image_text needs one entry per image ({len(image_embeddings)}), got shape "
                         f"{image_text.shape}.")
    paired = np.flatnonzero(image_text >= 0)
    if len(paired) == 0:
        raise ValueError("The modality gap is measured on paired image-caption embeddings and no image has a "
                         "caption (every image_text entry is -1).")
    if image_text.max() >= len(text_embeddings):
        raise ValueError(f"image_text points at text {image_text.max()}, but there are {len(text_embeddings)} texts.")
    return ModalityGap(normalise(image_embeddings)[paired].mean(axis=0),
                       normalise(text_embeddings)[image_text[paired]].mean(axis=0), len(paired))


@dataclass
class PairSimilarities:
    """Cosine similarities of matching image-text pairs and of non-matching ones."""

    matching: np.ndarray
    non_matching: np.ndarray


def pair_similarities(image_embeddings: np.ndarray, text_embeddings: np.ndarray, image_text: Sequence[int],
                      max_non_matching: int = 20_000, seed: int = 0) -> PairSimilarities:
    """Matching: each image with its text (``image_text[i]``, -1 for none). Non-matching: each paired image with
    every other text that is some image's pair (sampled down to ``max_non_matching`` values)."""
    image_text = np.asarray(image_text, dtype=np.int64)
    paired = np.flatnonzero(image_text >= 0)
    if len(paired) == 0:
        raise ValueError("No image has a matching text (captions or labels).")
    candidates = np.unique(image_text[paired])
    cosine = normalise(image_embeddings)[paired] @ normalise(text_embeddings)[candidates].T   # (paired, candidates)
    own = image_text[paired][:, None] == candidates[None, :]
    matching = cosine[own]
    non_matching = cosine[~own]
    if len(non_matching) > max_non_matching:
        non_matching = np.random.default_rng(seed).choice(non_matching, max_non_matching, replace=False)
    return PairSimilarities(matching.astype(np.float32), non_matching.astype(np.float32))


# ---------------------------------------------------------------------------------------------------- retrieval

def retrieve(query: np.ndarray, image_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the ``k`` images nearest to ``query`` in the original space, best first
    (ties by index)."""
    if len(image_embeddings) == 0:
        raise ValueError("There are no images to search.")
    scores = normalise(image_embeddings) @ normalise(np.asarray(query).reshape(1, -1))[0]
    order = np.argsort(-scores, kind="stable")[:max(1, min(int(k), len(scores)))]
    return order, scores[order]


# ---------------------------------------------------------------------------------------------------- evaluation

@dataclass
class ZeroShotEvaluation:
    """Zero-shot accuracy of labelled images against the class prompts.

    ``confusion[t, p]`` counts images of class t predicted as p; ``worst_first`` orders classes by accuracy,
    lowest first (ties by name).
    """

    class_names: list[str]
    top1: float
    top5: float
    per_class: np.ndarray       # accuracy per class (nan where a class has no images)
    counts: np.ndarray          # images per class
    confusion: np.ndarray
    predictions: np.ndarray     # predicted class index per evaluated image
    truth: np.ndarray

    @property
    def worst_first(self) -> np.ndarray:
        keys = np.where(np.isnan(self.per_class), np.inf, self.per_class)
        return np.lexsort((np.asarray(self.class_names, dtype=object).astype(str), keys))


def class_scores(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """(images, classes) cosine similarities: the zero-shot scores (softmax would not change the ranking)."""
    return normalise(image_embeddings) @ normalise(class_embeddings).T


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts[t, p] of items of class t predicted as p."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def evaluate_zero_shot(image_embeddings: np.ndarray, labels: Sequence[str | None], class_names: Sequence[str],
                       class_embeddings: np.ndarray) -> ZeroShotEvaluation:
    """Top-1 / top-5 accuracy, per-class accuracy and confusion matrix of the labelled images."""
    class_names = list(class_names)
    index = {name: i for i, name in enumerate(class_names)}
    rows = [i for i, label in enumerate(labels) if label in index]
    if not rows:
        raise ValueError("No labelled images to evaluate: a labelled folder has one subfolder per class.")
    truth = np.array([index[labels[i]] for i in rows])
    scores = class_scores(np.asarray(image_embeddings)[rows], class_embeddings)
    ranking = np.argsort(-scores, axis=1, kind="stable")
    predictions = ranking[:, 0]
    top5 = (ranking[:, :min(5, len(class_names))] == truth[:, None]).any(axis=1)
    confusion = confusion_matrix(truth, predictions, len(class_names))
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, np.diag(confusion) / np.maximum(counts, 1), np.nan)
    return ZeroShotEvaluation(class_names, float((predictions == truth).mean()), float(top5.mean()), per_class,
                              counts, confusion, predictions, truth)
