"""Where a click on a figure lands: the data coordinates of a clicked point mapped back to the cell it shows.

The figures place their cells so: an overlay stretches a (rows, cols) map over an (height, width) image, cell
(r, c) covering x in [c * width / cols, (c + 1) * width / cols) (its heatmap cells are centred there, the patch grid's
image pixels are the integers inside it); a plain heatmap has cell (r, c) at x = c, y = r; a mosaic lays n tiles of
(h, w) row-major in ``columns`` columns with ``gap`` cells between them (viz.patch_figures.mosaic).
"""
from __future__ import annotations

import math


def _clamp(value: int, size: int) -> int:
    return min(max(value, 0), size - 1)


def image_cell(x: float, y: float, image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) of a ``grid`` stretched over an image of ``image_size`` (height, width) under the point
    (x, y) in image coordinates (clamped onto the grid)."""
    (height, width), (rows, cols) = image_size, grid
    return _clamp(math.floor(y * rows / height), rows), _clamp(math.floor(x * cols / width), cols)


def heatmap_cell(x: float, y: float, shape: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) of a plain heatmap of ``shape`` (rows, cols) under the point (x, y) (clamped)."""
    return _clamp(round(y), shape[0]), _clamp(round(x), shape[1])


def mosaic_cell(x: float, y: float, tile: tuple[int, int], count: int, columns: int,
                gap: int = 1) -> tuple[int, int, int] | None:
    """(tile index, row, col inside the tile) of a mosaic cell under the point (x, y); None in a gap or past the
    last tile."""
    h, w = tile
    column, row = round(x), round(y)
    if column < 0 or row < 0:
        return None
    tile_row, inner_row = divmod(row, h + gap)
    tile_col, inner_col = divmod(column, w + gap)
    index = tile_row * columns + tile_col
    if inner_row >= h or inner_col >= w or tile_col >= columns or index >= count:
        return None
    return index, inner_row, inner_col


def head_grid_columns(heads: int) -> int:
    """Columns of the every-head mosaic (viz.attention_figures.head_grid_figure): a near-square grid."""
    return math.ceil(math.sqrt(heads))
