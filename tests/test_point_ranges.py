"""A selection of map points as text ("0-9, 15"): formatting and parsing against a brute-force set, and the errors
a typed selection gets."""
from __future__ import annotations

import numpy as np
import pytest

from ui.point_ranges import format_ranges, parse_ranges


def test_ranges_round_trip_random_selections():
    rng = np.random.default_rng(0)
    for size in (1, 7, 500):
        for _ in range(30):
            chosen = np.unique(rng.integers(0, size, rng.integers(1, size + 1)))
            text = format_ranges(rng.permutation(np.repeat(chosen, 2)))   # any order, duplicates
            assert parse_ranges(text, size).tolist() == chosen.tolist()
            runs = 1 + int((np.diff(chosen) != 1).sum())
            assert text.count(",") == runs - 1      # one entry per run of consecutive points


def test_format_names_runs_and_single_points():
    assert format_ranges([3, 1, 2, 7, 9, 10]) == "1-3, 7, 9-10"
    assert format_ranges([]) == ""


def test_parse_errors_quote_the_bad_part():
    with pytest.raises(ValueError, match="'12' is outside the map's points 0 to 9"):
        parse_ranges("1, 12", 10)
    with pytest.raises(ValueError, match="'5-2' is outside"):
        parse_ranges("5-2", 10)
    with pytest.raises(ValueError, match="'x' is not a point"):
        parse_ranges("1, x", 10)
    with pytest.raises(ValueError, match="Select some points first"):
        parse_ranges(" , ", 10)
