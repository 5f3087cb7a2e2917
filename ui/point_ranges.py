"""A set of map points as short text, "0-9, 15, 40-41": how a lasso's selection is shown, typed and sent over
the HTTP API (a selection of a million points stays a few ranges long)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def format_ranges(indices: Iterable[int]) -> str:
    """Sorted unique indices as comma-separated runs: [3, 1, 2, 7] -> "1-3, 7"."""
    values = np.unique(np.fromiter((int(i) for i in indices), dtype=np.int64))
    if not len(values):
        return ""
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate([[values[0]], values[breaks + 1]])
    ends = np.concatenate([values[breaks], [values[-1]]])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(starts, ends, strict=True))


def parse_ranges(text: str, size: int) -> np.ndarray:
    """The sorted unique indices that "0-9, 15" names, each in [0, size); a ValueError that quotes the bad part."""
    chosen = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            start, end = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(f"{part!r} is not a point or a range of points (write e.g. 0-9, 15).") from None
        if start > end or start < 0 or end >= size:
            raise ValueError(f"{part!r} is outside the map's points 0 to {size - 1}.")
        chosen.append(np.arange(start, end + 1, dtype=np.int64))
    if not chosen:
        raise ValueError("Select some points first: lasso or box them on the map, or type e.g. 0-9, 15.")
    return np.unique(np.concatenate(chosen))
