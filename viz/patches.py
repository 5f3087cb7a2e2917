"""Patch-level analysis: the ViT paper's Figure 7 (filter PCA, position-embedding similarity) and token maps.

Pure functions on tensors as models/ captures them; the figures live in viz/patch_figures.py.
Token tensors hold patches in row-major grid order (drop prefix tokens before calling the patch-only functions).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn


def patch_embed_weight(module: nn.Module) -> torch.Tensor:
    """The patch convolution's weight (D, C, p, p) from a patch-embedding module or the conv itself.

    Why: timm keeps the conv inside a PatchEmbed wrapper, other backends hand the conv out directly."""
    conv = module if isinstance(module, nn.Conv2d) else next(
        (m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"No patch convolution in {type(module).__name__}.")
    return conv.weight.detach()


def patch_filter_components(conv_weight: torch.Tensor, k: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the D first-layer filters, each flattened: ((k, C, p, p), explained ratio (k,)).

    k is capped at what the data allows (min(D, C*p*p))."""
    weight = conv_weight.detach().float().cpu().numpy()
    flat = weight.reshape(weight.shape[0], -1)
    k = min(k, *flat.shape)
    pca = PCA(n_components=k, svd_solver="full").fit(flat)
    components = pca.components_.reshape(k, *weight.shape[1:]).astype(np.float32)
    return components, pca.explained_variance_ratio_.astype(np.float64)


def filters_to_rgb_tiles(components: np.ndarray) -> np.ndarray:
    """(k, 3, p, p) components -> (k, p, p, 3) uint8, each component min-max scaled to [0, 255] on its own."""
    tiles = np.transpose(np.asarray(components, dtype=np.float64), (0, 2, 3, 1))
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    span = tiles.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = (tiles - low) / np.where(span > 0, span, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def sincos_2d_table(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sine-cosine position table (MAE style), (gh * gw, dim), rows row-major, no prefix rows.

    Half the channels encode the row, half the column; each half is sin/cos at dim/4 geometric frequencies."""
    if dim % 4:
        raise ValueError("sincos_2d_table needs dim divisible by 4.")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                                torch.arange(grid[1], dtype=torch.float64), indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.flatten()[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def resize_pos_table(table: torch.Tensor, grid: tuple[int, int], target_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic-resample a patch position table (gh * gw, dim) to another grid, as models do for other input sizes."""
    dim = table.shape[-1]
    image = table.reshape(1, grid[0], grid[1], dim).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=tuple(target_grid), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(-1, dim)


def position_similarity(pos_table: torch.Tensor, grid: tuple[int, int], prefix_rows: int,
                        target_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Cosine similarity of every patch position's embedding with every other's: (gh, gw, gh, gw).

    ``grid`` is the table's own grid; the first ``prefix_rows`` rows (CLS, distillation) are dropped. With a
    different ``target_grid`` the table is bicubic-resampled to it first and the result has that grid's shape."""
    table = pos_table.detach().float().cpu()[prefix_rows:]
    grid = tuple(int(g) for g in grid)
    if table.shape[0] != grid[0] * grid[1]:
        side = math.isqrt(table.shape[0])
        raise ValueError(f"Position table has {table.shape[0]} patch rows (side {side}), not a {grid} grid.")
    if target_grid is not None and tuple(target_grid) != grid:
        table, grid = resize_pos_table(table, grid, target_grid), tuple(int(g) for g in target_grid)
    unit = F.normalize(table, dim=-1)
    return (unit @ unit.T).reshape(grid[0], grid[1], grid[0], grid[1])


def row_column_similarity(sim: torch.Tensor) -> dict[str, float]:
    """Mean of a (gh, gw, gh, gw) position similarity over pairs of distinct positions in the same row, in the same
    column, and in neither: the row/column structure the ViT paper sees in learned position embeddings."""
    gh, gw = sim.shape[:2]
    rows = torch.arange(gh * gw) // gw
    cols = torch.arange(gh * gw) % gw
    same_row = rows[:, None] == rows[None, :]
    same_col = cols[:, None] == cols[None, :]
    flat = sim.detach().float().cpu().reshape(gh * gw, gh * gw)
    pairs = {"same row": same_row & ~same_col, "same column": same_col & ~same_row, "neither": ~same_row & ~same_col}
    return {name: float(flat[mask].mean()) if mask.any() else float("nan") for name, mask in pairs.items()}


def token_similarity(tokens: torch.Tensor, query: int) -> torch.Tensor:
    """Cosine similarity of token ``query`` to every token (T, dim) -> (T,): what "click a patch" shows."""
    unit = F.normalize(tokens.detach().float(), dim=-1)
    return unit @ unit[query]


def patch_pca_rgb(tokens: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """First 3 principal components of the patch tokens (N, dim) as RGB, (gh, gw, 3) in [0, 1].

    Each component is min-max scaled on its own, so regions the model sees alike come out as same-coloured islands.
    Components beyond what N and dim allow are left at 0."""
    data = tokens.detach().float().cpu().numpy()
    if data.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"{data.shape[0]} patch tokens do not fill a {tuple(grid)} grid.")
    k = min(3, *data.shape)
    projected = np.zeros((data.shape[0], 3))
    projected[:, :k] = PCA(n_components=k, svd_solver="full").fit_transform(data)
    low = projected.min(axis=0)
    span = projected.max(axis=0) - low
    rgb = (projected - low) / np.where(span > 0, span, 1.0)
    return rgb.reshape(grid[0], grid[1], 3)
