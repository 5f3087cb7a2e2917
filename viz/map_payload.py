"""The binary payload of the WebGL point map: coordinates and colour categories packed as flat typed arrays.

A million points do not fit in Plotly JSON (5,000 points are about 1.1 MB there). Here a map is one binary array
fetched once by URL: ``float32`` x for every point, then ``float32`` y (both scaled into [-1, 1], the normalised
device coordinates the WebGL scatter expects), then one ``uint8`` kind per point (image, caption, class prompt).
A colouring is a second array of one ``uint8`` (up to 255 groups) or ``uint16`` category per point, with a legend
sent as JSON. That is 10 bytes per point for the map and 1 or 2 per colouring.

Colours follow the names: a label that names a colour ("red heart") is drawn in that colour (the procedural
world's own RGB for its six colours, CSS colours otherwise), labels sharing a colour word in lighter and darker
shades of it; other labels take a qualitative palette.
"""
from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from plotly.colors import qualitative

from models.world.shapes import COLOURS as WORLD_COLOURS

KINDS = ("image", "caption", "class")
PALETTE = qualitative.Dark24 + qualitative.Light24
MAX_CATEGORIES = 65_535
CSS_COLOURS = {"black": (0, 0, 0), "white": (250, 250, 250), "grey": (128, 128, 128), "gray": (128, 128, 128),
               "brown": (140, 80, 30), "pink": (240, 120, 180), "cyan": (0, 190, 210), "magenta": (210, 0, 170),
               "violet": (140, 80, 220), "gold": (220, 170, 0), "silver": (170, 170, 180), "navy": (20, 30, 120),
               "teal": (0, 128, 128), "lime": (100, 220, 30), "maroon": (128, 20, 30), "beige": (220, 200, 160)}
NAMED_COLOURS = {**CSS_COLOURS, **WORLD_COLOURS}
SHADES = (0.0, -0.22, 0.2, -0.38, 0.34, -0.1, 0.1)   # lightness offsets of labels that share a colour word


def colour_word(name: str) -> str | None:
    """The first word of ``name`` that names a colour ("red heart" -> "red"), or None."""
    for word in re.findall(r"[a-z]+", (name or "").lower()):
        if word in NAMED_COLOURS:
            return word
    return None


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(min(max(c, 0), 255))):02x}" for c in rgb)


def _shade(rgb: tuple[int, int, int], offset: float) -> str:
    hue, lightness, saturation = colorsys.rgb_to_hls(*(c / 255 for c in rgb))
    lightness = min(max(lightness + offset * (1 - lightness if offset > 0 else lightness), 0.08), 0.92)
    return _hex([c * 255 for c in colorsys.hls_to_rgb(hue, lightness, saturation)])


def group_colours(names: Sequence[str]) -> dict[str, str]:
    """A hex colour per distinct name, in order of first appearance: the named colour (shaded apart when several
    names share it) where the name has a colour word, the palette otherwise."""
    colours: dict[str, str] = {}
    shared: dict[str, int] = {}
    palette_used = 0
    for name in dict.fromkeys(names):
        word = colour_word(name)
        if word is not None:
            rank = shared.get(word, 0)
            shared[word] = rank + 1
            colours[name] = _shade(NAMED_COLOURS[word], SHADES[rank % len(SHADES)])
        else:
            colours[name] = PALETTE[palette_used % len(PALETTE)]
            palette_used += 1
    return colours


@dataclass
class Categories:
    """One category code per point, the names of the codes and their colours (the legend)."""

    codes: np.ndarray      # uint8 or uint16, one per point
    names: list[str]
    colours: list[str]

    @property
    def bytes_per_point(self) -> int:
        return self.codes.dtype.itemsize

    def to_bytes(self) -> bytes:
        return np.ascontiguousarray(self.codes).tobytes()


def categories(groups: Sequence[str], colours: dict[str, str] | None = None) -> Categories:
    """Codes (in order of first appearance), as uint8 when there are at most 255 groups, uint16 up to 65,535."""
    names = list(dict.fromkeys(groups))
    if len(names) > MAX_CATEGORIES:
        raise ValueError(f"{len(names):,} groups are too many to colour by (at most {MAX_CATEGORIES:,}).")
    index = {name: i for i, name in enumerate(names)}
    dtype = np.uint8 if len(names) <= 255 else np.uint16
    codes = np.fromiter((index[g] for g in groups), dtype=dtype, count=len(groups))
    colours = colours or group_colours(names)
    return Categories(codes, names, [colours[name] for name in names])


@dataclass
class ScreenTransform:
    """Data coordinates -> [-1, 1]: subtract ``centre``, divide by ``half_span`` (the same for x and y, so the map
    keeps its aspect)."""

    centre: np.ndarray
    half_span: float

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return ((np.asarray(xy, dtype=np.float64) - self.centre) / self.half_span).astype(np.float32)


def screen_transform(coords: np.ndarray, margin: float = 0.05) -> ScreenTransform:
    """The transform that fits ``coords`` (n, 2) into [-1 + margin, 1 - margin] on its longer side."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or not len(coords):
        raise ValueError(f"Map coordinates must be a non-empty (n, 2) array, got shape {coords.shape}.")
    finite = coords[np.isfinite(coords).all(axis=1)]
    if not len(finite):
        raise ValueError("Map coordinates are all NaN or infinite.")
    low, high = finite.min(axis=0), finite.max(axis=0)
    half_span = float((high - low).max()) / 2 / (1 - margin) or 1.0
    return ScreenTransform((low + high) / 2, half_span)


def pack_points(ndc: np.ndarray, kinds: np.ndarray | None = None) -> bytes:
    """The map's binary array: float32 x (n), float32 y (n), uint8 kind (n; 0 = image, 1 = caption, 2 = class)."""
    ndc = np.asarray(ndc, dtype=np.float32)
    n = len(ndc)
    kinds = np.zeros(n, dtype=np.uint8) if kinds is None else np.asarray(kinds, dtype=np.uint8)
    if kinds.shape != (n,):
        raise ValueError(f"One kind per point: {n} points, kinds of shape {kinds.shape}.")
    return np.ascontiguousarray(ndc[:, 0]).tobytes() + np.ascontiguousarray(ndc[:, 1]).tobytes() + kinds.tobytes()


def unpack_points(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(ndc (n, 2) float32, kinds (n,) uint8) back from :func:`pack_points` (what the browser reads)."""
    if len(blob) % 9:
        raise ValueError(f"A points array holds 9 bytes per point; {len(blob)} bytes is not a multiple of 9.")
    n = len(blob) // 9
    x = np.frombuffer(blob, dtype=np.float32, count=n)
    y = np.frombuffer(blob, dtype=np.float32, count=n, offset=4 * n)
    kinds = np.frombuffer(blob, dtype=np.uint8, count=n, offset=8 * n)
    return np.stack([x, y], axis=1), kinds


@dataclass
class PointMap:
    """Everything the WebGL map draws: points in [-1, 1] with their kinds, a colouring, and overlays (cluster
    labels, density contours) in the same coordinates; ``highlight`` points (best first) are ringed and numbered."""

    ndc: np.ndarray
    kinds: np.ndarray
    categories: Categories
    title: str
    note: str = ""
    highlight: list[int] | None = None
    labels: list[dict] | None = None
    contours: list[dict] | None = None
    mask: np.ndarray | None = None      # the points shown (a metadata filter); None: all

    @property
    def texts_first(self) -> bool:
        """Draw texts first so that no text marker hides an image."""
        return bool((self.kinds > 0).any())

    def points_bytes(self) -> bytes:
        return pack_points(self.ndc, self.kinds)
