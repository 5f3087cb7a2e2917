"""Does a saliency map point at the object? Pointing-game and mass scores, and the model-free baselines they must beat.

A map is any non-negative (rows, cols) array: a patch-grid map (rollout, relevancy, CLS attention) or a pixel map
(a CAM). An object mask is a boolean (H, W) array at the image's resolution; it is brought onto the map's grid by
area, so each cell holds the fraction of it that is object (:func:`patch_cover`).

Pointing criteria for the map's argmax cell: ``"lenient"`` counts a hit when any object pixel falls in it,
``"strict"`` when at least half of it is object.

The baselines never run a model: :func:`centre_blob` and :func:`uniform_map` do not look at the image,
:func:`random_patch` points anywhere, and :func:`colour_contrast` is the text-free, model-free saliency heuristic
(each cell's distance from the image's median, background-like, colour). A truth test names the baseline it beats,
so that replacing the model's map by that baseline makes it fail.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.world.bundled_eval import mask_on_grid, mass_on_mask

CRITERIA = ("lenient", "strict")
STRICT_COVER = 0.5  # the strict criterion: at least this share of the argmax cell is object


def _as_array(heat: np.ndarray | torch.Tensor) -> np.ndarray:
    """A map as a float64 numpy (rows, cols) array."""
    if torch.is_tensor(heat):
        heat = heat.detach().float().cpu().numpy()
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"A map is (rows, cols), not {heat.shape}.")
    return heat


def patch_cover(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each cell of a (rows, cols) grid that the (H, W) mask covers."""
    return mask_on_grid(np.asarray(mask, dtype=bool), tuple(grid))


def cell_max(heat: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """A pixel map's maximum over each cell of a coarser grid: its argmax cell is the cell that holds the pixel map's
    argmax, so pointing on it scores the argmax pixel with the cell as tolerance (as patch maps are scored)."""
    tensor = torch.from_numpy(_as_array(heat))[None, None]
    return F.adaptive_max_pool2d(tensor, tuple(grid))[0, 0].numpy()


def pointing_hit(heat: np.ndarray | torch.Tensor, mask: np.ndarray, criterion: str = "lenient") -> bool:
    """Whether the map's argmax cell lies on the object: any object pixel in it ("lenient") or >= 50% ("strict").
    Ties go to the first cell in row-major order (numpy's argmax), so a constant map points at the top-left cell."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
    heat = _as_array(heat)
    cover = patch_cover(mask, heat.shape).reshape(-1)[int(np.argmax(heat))]
    return bool(cover > 0) if criterion == "lenient" else bool(cover >= STRICT_COVER)


def mass_ratio(heat: np.ndarray | torch.Tensor, mask: np.ndarray) -> float:
    """The share of the map's mass on the object over the object's share of the image: 1 for a uniform map, above 1
    for a map that favours the object. Negative values are clipped to 0 first (relevancy can dip below); a map with
    no positive mass (a Grad-CAM whose ReLU kept nothing) favours nothing and scores 0."""
    if not np.asarray(mask).any():
        raise ValueError("The mask is empty.")
    heat = np.clip(_as_array(heat), 0.0, None)
    if heat.sum() <= 0:
        return 0.0
    inside, share = mass_on_mask(heat, mask)
    return inside / share


def _check_pairs(maps: Sequence, masks: Sequence) -> None:
    if len(maps) != len(masks) or not len(masks):
        raise ValueError(f"Need as many maps as masks (got {len(maps)} and {len(masks)}), at least one.")


def pointing_rate(maps: Sequence, masks: Sequence[np.ndarray], criterion: str = "lenient") -> float:
    """Fraction of (map, mask) pairs where the map's argmax cell is on the object (see :func:`pointing_hit`)."""
    _check_pairs(maps, masks)
    return float(np.mean([pointing_hit(m, k, criterion) for m, k in zip(maps, masks, strict=True)]))


def mean_mass_ratio(maps: Sequence, masks: Sequence[np.ndarray]) -> float:
    """The mean of :func:`mass_ratio` over (map, mask) pairs."""
    _check_pairs(maps, masks)
    return float(np.mean([mass_ratio(m, k) for m, k in zip(maps, masks, strict=True)]))


# ---------------------------------------------------------------------------------------------------- baselines

def centre_blob(grid: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """A fixed Gaussian at the centre of the grid (``sigma`` a fraction of its side): never looks at the image."""
    rows, cols = grid
    y = (np.arange(rows) + 0.5) / rows - 0.5
    x = (np.arange(cols) + 0.5) / cols - 0.5
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def uniform_map(grid: tuple[int, int]) -> np.ndarray:
    """Equal mass everywhere (its argmax is the first cell): never looks at the image."""
    return np.ones(tuple(grid))


def random_patch(grid: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """All the mass on one cell drawn uniformly at random: points anywhere, never at the image."""
    heat = np.zeros(tuple(grid))
    heat[int(rng.integers(grid[0])), int(rng.integers(grid[1]))] = 1.0
    return heat


def colour_contrast(image: Image.Image | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Text-free, model-free saliency: each cell's mean distance (RGB, 0-255) of its pixels from the image's median
    colour, which on these scenes is the background's. It finds the most distinct object, never a named one."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"An image is (H, W, 3), not {rgb.shape}.")
    distance = np.linalg.norm(rgb - np.median(rgb.reshape(-1, 3), axis=0), axis=2)
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(distance)[None, None], tuple(grid))[0, 0]
    return pooled.numpy().astype(np.float64)
