"""viz.pointing against hand-made masks and maps and brute-force loops (no model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from viz.pointing import (
    cell_max,
    centre_blob,
    colour_contrast,
    mass_ratio,
    mean_mass_ratio,
    patch_cover,
    pointing_hit,
    pointing_rate,
    random_patch,
    uniform_map,
)


def _cover_loops(mask, grid):
    rows, cols = grid
    h, w = mask.shape[0] // rows, mask.shape[1] // cols
    return np.array([[mask[r * h:(r + 1) * h, c * w:(c + 1) * w].mean() for c in range(cols)] for r in range(rows)])


def test_patch_cover_is_the_block_mean_of_the_mask():
    mask = np.random.default_rng(0).random((16, 24)) < 0.3
    np.testing.assert_allclose(patch_cover(mask, (4, 3)), _cover_loops(mask, (4, 3)), atol=1e-6)
    np.testing.assert_array_equal(patch_cover(mask, mask.shape), mask.astype(np.float32))  # pixel maps: the mask


def _quarter_mask(object_pixels_in_cell_11: int) -> np.ndarray:
    """An 8x8 mask on a 2x2 grid of 4x4 cells, with the given number of object pixels in cell (1, 1) only."""
    mask = np.zeros((8, 8), dtype=bool)
    cell = np.zeros((4, 4), dtype=bool)
    cell.reshape(-1)[:object_pixels_in_cell_11] = True
    mask[4:8, 4:8] = cell
    return mask


@pytest.mark.parametrize(("pixels", "lenient", "strict"), [(0, False, False), (1, True, False), (7, True, False),
                                                           (8, True, True), (16, True, True)])
def test_pointing_criteria_on_a_hand_made_cell(pixels, lenient, strict):
    heat = np.array([[0.1, 0.2], [0.3, 0.9]])  # argmax: cell (1, 1), 16 pixels
    mask = _quarter_mask(pixels)
    assert pointing_hit(heat, mask, "lenient") is lenient
    assert pointing_hit(torch.tensor(heat), mask, "strict") is strict


def test_pointing_ties_go_to_the_first_cell_and_bad_input_is_refused():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = True
    assert pointing_hit(uniform_map((2, 2)), mask) and not pointing_hit(uniform_map((2, 2)), mask, "strict")
    with pytest.raises(ValueError, match="criterion"):
        pointing_hit(uniform_map((2, 2)), mask, "any")
    with pytest.raises(ValueError, match="rows, cols"):
        pointing_hit(np.ones((1, 2, 2)), mask)
    with pytest.raises(ValueError, match="as many maps"):
        pointing_rate([uniform_map((2, 2))], [mask, mask])


def test_mass_ratio_by_hand():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True   # all of cell (0, 0) of a 2x2 grid
    mask[2, 2] = True     # a quarter of cell (1, 1)
    heat = np.array([[3.0, 1.0], [-2.0, 4.0]])  # the negative cell is clipped to 0
    inside, share = (3.0 * 1 + 4.0 * 0.25) / 8.0, (1 + 0.25) / 4
    assert mass_ratio(heat, mask) == pytest.approx(inside / share)
    assert mass_ratio(uniform_map((2, 2)), mask) == pytest.approx(1.0)
    assert mass_ratio(np.zeros((2, 2)), mask) == 0.0   # no mass: favours nothing
    assert mass_ratio(-np.ones((2, 2)), mask) == 0.0
    with pytest.raises(ValueError, match="empty"):
        mass_ratio(heat, np.zeros((4, 4), dtype=bool))


def test_aggregates_are_means_of_the_single_scores():
    rng = np.random.default_rng(1)
    maps = [rng.random((4, 4)) for _ in range(6)]
    masks = [rng.random((16, 16)) < 0.2 for _ in range(6)]
    for criterion in ("lenient", "strict"):
        assert pointing_rate(maps, masks, criterion) == pytest.approx(
            np.mean([pointing_hit(m, k, criterion) for m, k in zip(maps, masks, strict=True)]))
    ratios = [mass_ratio(m, k) for m, k in zip(maps, masks, strict=True)]
    assert mean_mass_ratio(maps, masks) == pytest.approx(np.mean(ratios))


def test_blind_baselines():
    blob = centre_blob((8, 8))
    assert blob.shape == (8, 8) and np.allclose(blob, blob.T) and np.allclose(blob, blob[::-1, ::-1])
    assert blob[3:5, 3:5].min() == blob.max() and blob[0, 0] == blob.min()
    odd = centre_blob((5, 7))
    assert np.unravel_index(odd.argmax(), odd.shape) == (2, 3)
    assert (uniform_map((3, 4)) == 1).all()
    rng = np.random.default_rng(2)
    patches = [random_patch((2, 3), rng) for _ in range(300)]
    assert all(p.sum() == 1 and (p > 0).sum() == 1 for p in patches)
    assert len({int(p.argmax()) for p in patches}) == 6   # every cell can be drawn


def test_colour_contrast_is_the_mean_distance_from_the_median_colour():
    rgb = np.full((16, 16, 3), 120, dtype=np.uint8)
    rgb[9:15, 2:7] = (230, 30, 30)   # a red block inside cell (1, 0) of a 2x2 grid
    rgb[0, 15] = (130, 120, 120)
    heat = colour_contrast(Image.fromarray(rgb), (2, 2))
    distance = np.linalg.norm(rgb.astype(np.float64) - np.array([120, 120, 120]), axis=2)   # the median is grey
    np.testing.assert_allclose(heat, _cover_loops(distance, (2, 2)), rtol=1e-5)
    assert np.unravel_index(heat.argmax(), heat.shape) == (1, 0)
    np.testing.assert_allclose(colour_contrast(rgb, (2, 2)), heat)
    with pytest.raises(ValueError, match="H, W, 3"):
        colour_contrast(np.zeros((4, 4)), (2, 2))


def test_cell_max_keeps_the_argmax_pixel_in_its_cell():
    heat = np.random.default_rng(3).random((16, 16))
    cells = cell_max(heat, (4, 4))
    np.testing.assert_allclose(cells, heat.reshape(4, 4, 4, 4).max(axis=(1, 3)))
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert np.unravel_index(cells.argmax(), cells.shape) == (y // 4, x // 4)
