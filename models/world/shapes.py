"""Procedural "coloured shapes" dataset: images, exact masks, labels and captions from a seed, no files needed.

It is the training and evaluation data of the bundled models (see ``models/world/train_bundled.py``) and a demo dataset
for the app and notebooks. Every image holds one or two shapes (6 shapes x 6 colours = 36 "{colour} {shape}"
classes, 2 sizes, 5 positions) on a muted background (plain, noise, stripes or texture). The same seed always gives
the same pixels.

Seed scheme: evaluation, demos and tests use dataset seeds below ``TRAIN_SEED_START`` (10**9); training draws its
data only from :func:`training_seed`, which is always at or above it, so held-out images never appear in training.
Example ``i`` of ``make_dataset(n, seed)`` is drawn from ``numpy.random.default_rng([seed, i])``: it does not
depend on ``n``.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 170, 55),
    "blue": (40, 75, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 190),
    "orange": (245, 130, 20),
}
SIZES: dict[str, float] = {"small": 0.27, "large": 0.44}  # side of the shape's box, as a fraction of the image
POSITIONS: dict[str, tuple[float, float]] = {  # centre (x, y) as fractions of the image
    "centre": (0.5, 0.5),
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "stripes", "texture")

IMAGE_SIZE = 64  # the side of the world's images (what the bundled models were trained on)
TRAIN_SEED_START = 10**9
# Mean and std of the dataset's RGB pixels in [0, 1] (measured on 4,000 images); the bundled models normalise with it.
PIXEL_MEAN: tuple[float, float, float] = (0.50, 0.485, 0.47)
PIXEL_STD: tuple[float, float, float] = (0.18, 0.165, 0.18)

_SUPERSAMPLE = 4
_WHERE = {"centre": "in the centre", "left": "on the left", "right": "on the right",
          "top": "near the top", "bottom": "near the bottom"}
_BACKGROUND_WORDS = {"plain": "plain", "noise": "noisy", "stripes": "striped", "texture": "textured"}
_PAIRS = (("left", "right"), ("top", "bottom"))  # two objects sit on opposite sides
_SINGLE_TEMPLATES = (
    "a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a {colour} {shape} {where}",
    "a {size} {colour} {shape} {where}",
    "a {colour} {shape} on a {background} background",
    "a {size} {colour} {shape} {where} on a {background} background",
    "a picture of a {colour} {shape}",
    "there is a {colour} {shape} {where}",
)
_PAIR_TEMPLATES = (
    "a {colour} {shape} and a {colour2} {shape2}",
    "a {size} {colour} {shape} and a {size2} {colour2} {shape2}",
    "a {colour} {shape} {where} and a {colour2} {shape2} {where2}",
    "a {colour} {shape} and a {colour2} {shape2} on a {background} background",
    "two shapes: a {colour} {shape} and a {colour2} {shape2}",
)


@dataclass
class ShapeObject:
    """One shape in an image. ``bbox`` is (x0, y0, x1, y1), exclusive ends; ``mask`` its visible pixels (H, W)."""

    shape: str
    colour: str
    size: str
    position: str
    bbox: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)

    @property
    def label(self) -> str:
        """The object's class name, "{colour} {shape}"."""
        return f"{self.colour} {self.shape}"


@dataclass
class Example:
    """An image with its ground truth. Labels are those of the first (main) object; ``mask`` is all objects' union."""

    image: Image.Image
    mask: np.ndarray = field(repr=False)
    objects: list[ShapeObject]
    shape: str
    colour: str
    label: str
    caption: str
    background: str


@dataclass
class CueConflictExample(Example):
    """A silhouette of class ``shape_label`` filled with a texture of small ``texture_label`` shapes."""

    shape_label: str
    texture_label: str


def class_names() -> list[str]:
    """The 36 "{colour} {shape}" classes, colour-major, in a fixed order (the bundled classifiers' label ids)."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def training_seed(run_seed: int, chunk: int) -> int:
    """The dataset seed of training chunk ``chunk`` in a run seeded ``run_seed``; always >= TRAIN_SEED_START."""
    if run_seed < 0 or not 0 <= chunk < 10**6:
        raise ValueError("run_seed must be >= 0 and chunk in [0, 10**6).")
    return TRAIN_SEED_START + run_seed * 10**6 + chunk


# ---------------------------------------------------------------------------------------------------- drawing

def _outline(shape: str, side: float) -> list[tuple[float, float]] | None:
    """Polygon of ``shape`` inside a ``side`` x ``side`` box (None for the circle, drawn as an ellipse)."""
    if shape == "circle":
        return None
    if shape == "square":
        points = [(0.06, 0.06), (0.94, 0.06), (0.94, 0.94), (0.06, 0.94)]
    elif shape == "triangle":
        points = [(0.5, 0.02), (0.98, 0.93), (0.02, 0.93)]
    elif shape == "star":
        points = []
        for k in range(10):
            radius = 0.5 if k % 2 == 0 else 0.22
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((0.5 + radius * math.cos(angle), 0.53 + radius * math.sin(angle)))
    elif shape == "cross":
        a, b = 0.33, 0.67
        points = [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    elif shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 60, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        xs = (xs - xs.min()) / (xs.max() - xs.min())
        ys = (ys - ys.min()) / (ys.max() - ys.min())
        points = list(zip(xs.tolist(), ys.tolist(), strict=True))
    else:
        raise ValueError(f"Unknown shape {shape!r}; known: {SHAPES}")
    return [(x * side, y * side) for x, y in points]


def coverage(points: list[tuple[float, float]] | None, side: int) -> np.ndarray:
    """Anti-aliased, read-only coverage (side, side) float32 in [0, 1] of a polygon given in a ``side`` x ``side``
    box (None: the inscribed circle), drawn 4x supersampled and area-averaged back."""
    big = side * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if points is None:
        draw.ellipse([0, 0, big - 1, big - 1], fill=255)
    else:
        draw.polygon([(x * _SUPERSAMPLE, y * _SUPERSAMPLE) for x, y in points], fill=255)
    pixels = np.asarray(canvas, dtype=np.float32).reshape(side, _SUPERSAMPLE, side, _SUPERSAMPLE)
    alpha = pixels.mean(axis=(1, 3)) / 255.0
    alpha.setflags(write=False)
    return alpha


@lru_cache(maxsize=1024)
def shape_alpha(shape: str, side: int) -> np.ndarray:
    """Anti-aliased coverage (side, side) float32 in [0, 1] of an upright shape; cached."""
    return coverage(_outline(shape, side), side)


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return ys, xs


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A random low-saturation colour (RGB 0-255), so that the six object colours stand out against it."""
    grey = rng.uniform(60, 190)
    tint = rng.normal(0, 12, size=3)
    return np.clip(grey + tint, 0, 255).astype(np.float32)


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) float32 background of the given kind."""
    base = _muted_colour(rng)
    if kind == "plain":
        noise = rng.normal(0, 3, size=(size, size, 1)).astype(np.float32)
        return base + noise
    if kind == "noise":
        strength = rng.uniform(15, 35)
        luma = rng.normal(0, strength, size=(size, size, 1))
        chroma = rng.normal(0, strength * 0.15, size=(size, size, 3))
        return (base + luma + chroma).astype(np.float32)
    if kind == "stripes":
        other = _muted_colour(rng)
        ys, xs = _grid(size)
        angle = rng.choice([0.0, 0.5, 0.25, 0.75]) * math.pi
        period = rng.uniform(0.07, 0.18) * size
        phase = rng.uniform()
        on = ((xs * math.cos(angle) + ys * math.sin(angle)) / period + phase) % 1.0 < 0.5
        return np.where(on[..., None], base, other).astype(np.float32)
    if kind == "texture":
        other = _muted_colour(rng)
        cells = int(rng.integers(5, 10))
        coarse = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
        blend = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32)[..., None]
        grain = rng.normal(0, 4, size=(size, size, 1)).astype(np.float32)
        return base * blend + other * (1 - blend) + grain
    raise ValueError(f"Unknown background {kind!r}; known: {BACKGROUNDS}")


def _object_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    rgb = np.asarray(COLOURS[colour], dtype=np.float32)
    return np.clip(rgb * rng.uniform(0.9, 1.05) + rng.normal(0, 6, size=3), 0, 255).astype(np.float32)


def _side(size: str, image_size: int, rng: np.random.Generator) -> int:
    return max(4, int(round(SIZES[size] * image_size * rng.uniform(0.94, 1.06))))


def _place(position: str, side: int, image_size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``side`` box centred near ``position`` (jittered), kept inside the image."""
    fx, fy = POSITIONS[position]
    jitter = 0.035 * image_size
    cx = fx * image_size + rng.uniform(-jitter, jitter)
    cy = fy * image_size + rng.uniform(-jitter, jitter)
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    high = image_size - side - 1
    return min(max(x0, 1), high), min(max(y0, 1), high)


def _composite(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x0: int, y0: int) -> None:
    """Paint ``colour`` with coverage ``alpha`` into ``canvas`` at (x0, y0), in place."""
    h, w = alpha.shape
    region = canvas[y0:y0 + h, x0:x0 + w]
    a = alpha[..., None]
    region *= 1.0 - a
    region += a * colour


def _to_image(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), mode="RGB")


# ---------------------------------------------------------------------------------------------------- captions

def _fill(template: str, objects: list[ShapeObject], background: str) -> str:
    first = objects[0]
    values = {"colour": first.colour, "shape": first.shape, "size": first.size, "where": _WHERE[first.position],
              "background": _BACKGROUND_WORDS[background]}
    if len(objects) > 1:
        second = objects[1]
        values.update(colour2=second.colour, shape2=second.shape, size2=second.size, where2=_WHERE[second.position])
    return _articles(template.format(**values))


def _articles(text: str) -> str:
    """"a orange star" -> "an orange star"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def all_captions(objects: list[ShapeObject], background: str) -> list[str]:
    """Every caption template filled in for these objects; each one is true of the image."""
    templates = _SINGLE_TEMPLATES if len(objects) == 1 else _PAIR_TEMPLATES
    return [_fill(t, objects, background) for t in templates]


# ---------------------------------------------------------------------------------------------------- examples

def _rng(rng_or_seed: np.random.Generator | int | list[int]) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _pick(rng: np.random.Generator, options, given):
    return given if given is not None else options[int(rng.integers(len(options)))]


def make_example(
    rng_or_seed: np.random.Generator | int | list[int],
    *,
    image_size: int = IMAGE_SIZE,
    two_objects_prob: float = 0.2,
    n_objects: int | None = None,
    shape: str | None = None,
    colour: str | None = None,
    size: str | None = None,
    position: str | None = None,
    background: str | None = None,
) -> Example:
    """One random example; any of the main object's attributes (and the object count) can be fixed.

    With two objects they sit on opposite sides (left/right or top/bottom) and differ in class; the second is drawn
    over the first, and each object's mask holds only its visible pixels.
    """
    rng = _rng(rng_or_seed)
    if n_objects is None:
        n_objects = 2 if rng.random() < two_objects_prob else 1
    if n_objects not in (1, 2):
        raise ValueError("n_objects must be 1 or 2.")
    background = _pick(rng, BACKGROUNDS, background)
    canvas = _background(background, image_size, rng)

    first = (_pick(rng, SHAPES, shape), _pick(rng, list(COLOURS), colour), _pick(rng, list(SIZES), size))
    if n_objects == 1:
        specs = [(*first, _pick(rng, list(POSITIONS), position))]
    else:
        if position == "centre":
            raise ValueError("With two objects the main one cannot be in the centre.")
        if position is None:
            pair = _PAIRS[int(rng.integers(len(_PAIRS)))]
            where = pair[int(rng.integers(2))]
        else:
            pair = next(p for p in _PAIRS if position in p)
            where = position
        other_where = pair[1] if where == pair[0] else pair[0]
        while True:
            second = (_pick(rng, SHAPES, None), _pick(rng, list(COLOURS), None), _pick(rng, list(SIZES), None))
            if second[:2] != first[:2]:
                break
        specs = [(*first, where), (*second, other_where)]

    objects: list[ShapeObject] = []
    for shape_name, colour_name, size_name, where in specs:
        side = _side(size_name, image_size, rng)
        alpha = shape_alpha(shape_name, side)
        x0, y0 = _place(where, side, image_size, rng)
        _composite(canvas, alpha, _object_colour(colour_name, rng), x0, y0)
        mask = np.zeros((image_size, image_size), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = alpha >= 0.5
        for earlier in objects:
            earlier.mask &= ~mask
        objects.append(ShapeObject(shape_name, colour_name, size_name, where, (0, 0, 0, 0), mask))
    for obj in objects:
        obj.bbox = _bbox(obj.mask)

    union = np.zeros((image_size, image_size), dtype=bool)
    for obj in objects:
        union |= obj.mask
    captions = all_captions(objects, background)
    main = objects[0]
    return Example(
        image=_to_image(canvas),
        mask=union,
        objects=objects,
        shape=main.shape,
        colour=main.colour,
        label=main.label,
        caption=captions[int(rng.integers(len(captions)))],
        background=background,
    )


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a mask's pixels, ends exclusive; (0, 0, 0, 0) when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def make_dataset(
    n: int,
    seed: int,
    *,
    two_objects_prob: float = 0.2,
    image_size: int = IMAGE_SIZE,
    balanced: bool = False,
    **fixed: str,
) -> list[Example]:
    """``n`` examples; example ``i`` comes from ``default_rng([seed, i])``, so the same seed gives the same pixels.

    ``balanced=True`` cycles the main object through :func:`class_names` (equal counts per class). ``fixed`` pins
    attributes of the main object (shape, colour, size, position, background), as in :func:`make_example`.
    """
    if seed < 0:
        raise ValueError("seed must be >= 0.")
    classes = class_names()
    examples = []
    for i in range(n):
        pins = dict(fixed)
        if balanced:
            pins["colour"], pins["shape"] = classes[i % len(classes)].split(" ")
        examples.append(make_example([seed, i], image_size=image_size, two_objects_prob=two_objects_prob, **pins))
    return examples


# ---------------------------------------------------------------------------------------------------- cue conflict

def _motif_texture(shape: str, size: int, motif: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) coverage of small ``shape`` motifs tiled on a jittered grid."""
    alpha = shape_alpha(shape, motif)
    pitch = motif + max(1, motif // 4)
    cover = np.zeros((size + 2 * pitch, size + 2 * pitch), dtype=np.float32)
    offset_x, offset_y = rng.integers(0, pitch, size=2)
    for row, y in enumerate(range(int(offset_y), size + pitch, pitch)):
        shift = (pitch // 2) * (row % 2)
        for x in range(int(offset_x) + shift, size + pitch, pitch):
            np.maximum(cover[y:y + motif, x:x + motif], alpha, out=cover[y:y + motif, x:x + motif])
    return cover[pitch // 2:pitch // 2 + size, pitch // 2:pitch // 2 + size]


def make_cue_conflict_example(
    rng_or_seed: np.random.Generator | int | list[int],
    *,
    image_size: int = IMAGE_SIZE,
    shape_label: str | None = None,
    texture_label: str | None = None,
    colour: str | None = None,
) -> CueConflictExample:
    """A large ``shape_label`` silhouette whose inside is a tiling of small ``texture_label`` shapes, in one colour.

    The inside is the colour's full shade where a motif is and a dark shade between motifs, so both the silhouette
    (cue A, the global shape) and the texture (cue B, the local shapes) are visible; the two always differ.
    """
    rng = _rng(rng_or_seed)
    shape_label = _pick(rng, SHAPES, shape_label)
    while texture_label is None or texture_label == shape_label:
        texture_label = _pick(rng, SHAPES, None)
    colour = _pick(rng, list(COLOURS), colour)
    canvas = _background("plain", image_size, rng)
    side = max(8, int(round(0.78 * image_size)))
    silhouette = shape_alpha(shape_label, side)
    motif = max(4, int(round(image_size / 7)))
    texture = _motif_texture(texture_label, side, motif, rng)
    bright = _object_colour(colour, rng)
    fill = bright[None, None, :] * (0.35 + 0.65 * texture[..., None])
    x0 = y0 = (image_size - side) // 2
    region = canvas[y0:y0 + side, x0:x0 + side]
    a = silhouette[..., None]
    region *= 1.0 - a
    region += a * fill
    mask = np.zeros((image_size, image_size), dtype=bool)
    mask[y0:y0 + side, x0:x0 + side] = silhouette >= 0.5
    obj = ShapeObject(shape_label, colour, "large", "centre", _bbox(mask), mask)
    return CueConflictExample(
        image=_to_image(canvas),
        mask=mask.copy(),
        objects=[obj],
        shape=shape_label,
        colour=colour,
        label=obj.label,
        caption=_articles(f"a {colour} {shape_label} made of small {texture_label}s"),
        background="plain",
        shape_label=shape_label,
        texture_label=texture_label,
    )


def make_cue_conflict(n: int, seed: int, *, image_size: int = IMAGE_SIZE) -> list[CueConflictExample]:
    """``n`` cue-conflict examples, cycling through all 30 (shape, texture) pairs and the colours in turn."""
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    colours = list(COLOURS)
    examples = []
    for i in range(n):
        shape_label, texture_label = pairs[i % len(pairs)]
        colour = colours[(i // len(pairs)) % len(colours)]
        examples.append(make_cue_conflict_example([seed, i], image_size=image_size, shape_label=shape_label,
                                                  texture_label=texture_label, colour=colour))
    return examples


# ---------------------------------------------------------------------------------------------------- export

def export_folder(examples: list[Example], out_dir: str | Path) -> Path:
    """Write ``out_dir/<label>/<index>.png`` for each example and ``out_dir/captions.csv``; returns the csv path.

    The csv has columns path (relative to ``out_dir``), caption, label, shape, colour.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, example in enumerate(examples):
        relative = Path(example.label) / f"{index:05d}.png"
        (root / relative.parent).mkdir(parents=True, exist_ok=True)
        example.image.save(root / relative)
        rows.append({"path": relative.as_posix(), "caption": example.caption, "label": example.label,
                     "shape": example.shape, "colour": example.colour})
    csv_path = root / "captions.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption", "label", "shape", "colour"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
