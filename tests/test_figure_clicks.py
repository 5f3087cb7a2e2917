"""A click's data coordinates map back to the cell the figure draws there (viz.figure_clicks), checked against the
figures themselves: the cell centre plotly reports for each heatmap cell, and every cell of the head mosaic."""
from __future__ import annotations

import numpy as np
import pytest

from viz.attention_figures import head_grid_figure, overlay_figure
from viz.figure_clicks import head_grid_columns, heatmap_cell, image_cell, mosaic_cell


@pytest.mark.parametrize("image_size, grid", [((64, 64), (8, 8)), ((224, 160), (14, 10)), ((30, 45), (3, 5))])
def test_a_click_at_each_overlay_cell_centre_picks_that_cell(image_size, grid):
    rows, cols = grid
    heat = np.arange(rows * cols, dtype=float).reshape(grid)
    figure = overlay_figure(np.zeros((*image_size, 3), dtype=np.uint8), heat, "t")
    trace = figure.data[1]   # the heatmap: cell (r, c) centred at x0 + c * dx, y0 + r * dy
    for r in range(rows):
        for c in range(cols):
            x, y = trace.x0 + c * trace.dx, trace.y0 + r * trace.dy
            assert image_cell(x, y, image_size, grid) == (r, c)
    # an image pixel (the patch grid figure) lands in the patch that holds it; the far edge stays on the grid
    height, width = image_size
    assert image_cell(width - 1, height - 1, image_size, grid) == (rows - 1, cols - 1)
    assert image_cell(width, height, image_size, grid) == (rows - 1, cols - 1)
    assert image_cell(0, 0, image_size, grid) == (0, 0)


def test_a_plain_heatmap_cell():
    assert heatmap_cell(3.0, 2.0, (4, 5)) == (2, 3)
    assert heatmap_cell(3.4, 1.6, (4, 5)) == (2, 3)
    assert heatmap_cell(99, -3, (4, 5)) == (0, 4)


@pytest.mark.parametrize("heads, tile", [(4, (8, 8)), (6, (3, 5)), (12, (14, 14)), (1, (2, 2))])
def test_every_cell_of_the_head_mosaic_maps_to_its_head(heads, tile):
    maps = np.stack([np.full(tile, float(i + 1)) for i in range(heads)])
    maps[:, 0, 0] += 0.5   # mark each tile's first cell
    z = np.asarray(head_grid_figure(maps, "t").data[0].z, dtype=float)
    columns = head_grid_columns(heads)
    for y in range(z.shape[0]):
        for x in range(z.shape[1]):
            found = mosaic_cell(x, y, tile, heads, columns)
            if np.isnan(z[y, x]):
                assert found is None, (x, y)
                continue
            index, row, col = found
            assert z[y, x] == maps[index, row, col], (x, y, found)
    assert mosaic_cell(-1, 0, tile, heads, columns) is None
