"""The procedural world the bundled models learn from: scenes of one to three coloured shapes, from a seed.

Unlike the fixed layout of :func:`models.world.shapes.make_example` (5 positions, 2 sizes, upright), a scene places
each shape at a continuous random position, size (13 to 30 px on a 64 px image) and rotation; objects may overlap
(each keeps at least half of its pixels visible, and its mask holds exactly the visible ones); backgrounds are
plain, noisy, striped, textured, gradients or muted crops of scikit-image's photographs. Captions name colours,
shapes, sizes, counts ("two green squares") and spatial relations ("a red star left of a blue circle").

What is held out of training, so that evaluation measures generalisation and not memory:
- seeds: evaluation uses dataset seeds below ``shapes.TRAIN_SEED_START``; training only ``shapes.training_seed``;
- compositions: :data:`HELD_OUT_COMPOSITIONS` (one colour x shape pair per colour and per shape) never appear in a
  ``split="train"`` scene, so a CLIP's accuracy on them measures compositional generalisation;
- photographs: training backgrounds crop :data:`TRAIN_PHOTOS`, evaluation backgrounds :data:`EVAL_PHOTOS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from models.world import shapes
from models.world.shapes import COLOURS, SHAPES, Example, ShapeObject

BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "stripes", "texture", "gradient", "photo")
# one pair per colour and per shape (a Latin-square diagonal): every word is still seen, never these together
HELD_OUT_COMPOSITIONS: frozenset[str] = frozenset(
    {"red heart", "green star", "blue cross", "yellow circle", "purple square", "orange triangle"})
TRAIN_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "rocket", "hubble_deep_field", "grass", "brick")
EVAL_PHOTOS: tuple[str, ...] = ("chelsea", "camera", "immunohistochemistry", "gravel")
SIDE_RANGE: tuple[float, float] = (0.2, 0.47)  # a shape's box side as a fraction of the image: 13 to 30 px at 64
MIN_VISIBLE = 0.5  # an object keeps at least this share of its own pixels when a later one overlaps it
_PLURALS = {"cross": "crosses"}
_NUMBERS = {1: "one", 2: "two", 3: "three"}


@dataclass
class SceneObject(ShapeObject):
    """A shape in a scene: its centre (x, y) in pixels, box side in pixels and rotation in degrees."""

    centre: tuple[float, float] = (0.0, 0.0)
    side: int = 0
    angle: float = 0.0


def trained_class_names() -> list[str]:
    """The "{colour} {shape}" classes a ``split="train"`` scene may hold (all but the held-out compositions)."""
    return [name for name in shapes.class_names() if name not in HELD_OUT_COMPOSITIONS]


# ---------------------------------------------------------------------------------------------------- drawing

@lru_cache(maxsize=8192)
def rotated_alpha(shape: str, side: int, angle_degrees: int) -> np.ndarray:
    """Anti-aliased coverage (side, side) in [0, 1] of ``shape`` turned by a whole number of degrees about the box
    centre (the shape is scaled to fit its box at any angle, so nothing is clipped); cached."""
    unit = shapes._outline(shape, 1.0)
    if unit is None:  # the circle: every angle is the same
        return shapes.coverage(None, side)
    theta = math.radians(angle_degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    turned = [((x - 0.5) * cos - (y - 0.5) * sin, (x - 0.5) * sin + (y - 0.5) * cos) for x, y in unit]
    reach = max(max(abs(x), abs(y)) for x, y in turned)  # half the side the turned outline needs
    return shapes.coverage([((x / (2 * reach) + 0.5) * side, (y / (2 * reach) + 0.5) * side) for x, y in turned],
                           side)


@lru_cache(maxsize=16)
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as (H, W, 3) float32 RGB 0-255 (greyscale ones repeated)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def _photo_background(size: int, rng: np.random.Generator, photos: tuple[str, ...]) -> np.ndarray:
    """A random crop of a photograph, resized to ``size``, desaturated and squeezed into a muted range so that the
    six object colours stay the most saturated things in the image."""
    photo = _photo(photos[int(rng.integers(len(photos)))])
    height, width = photo.shape[:2]
    crop = int(rng.uniform(0.2, 0.6) * min(height, width))
    y0, x0 = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    patch = Image.fromarray(photo[y0:y0 + crop, x0:x0 + crop].astype(np.uint8)).resize((size, size), Image.BILINEAR)
    rgb = np.asarray(patch, dtype=np.float32)
    grey = rgb.mean(axis=2, keepdims=True)
    muted = grey + 0.3 * (rgb - grey)
    low, high = rng.uniform(50, 100), rng.uniform(150, 200)
    return low + (muted / 255.0) * (high - low)


def _gradient_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A linear blend between two muted colours along a random direction."""
    start, end = shapes._muted_colour(rng), shapes._muted_colour(rng)
    ys, xs = shapes._grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    t = (xs * math.cos(angle) + ys * math.sin(angle)) / size
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    grain = rng.normal(0, 3, size=(size, size, 1)).astype(np.float32)
    return (start * (1 - t[..., None]) + end * t[..., None] + grain).astype(np.float32)


def background(kind: str, size: int, rng: np.random.Generator, split: str = "train") -> np.ndarray:
    """A (size, size, 3) float32 background; photo crops come from the split's own photographs."""
    if kind == "gradient":
        return _gradient_background(size, rng)
    if kind == "photo":
        return _photo_background(size, rng, TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS)
    return shapes._background(kind, size, rng)


# ---------------------------------------------------------------------------------------------------- captions

def size_word(side: int, image_size: int) -> str:
    """"small", "medium" or "large": the third of :data:`SIDE_RANGE` a side falls in."""
    low, high = SIDE_RANGE
    fraction = (side / image_size - low) / (high - low)
    return "small" if fraction < 1 / 3 else ("medium" if fraction < 2 / 3 else "large")


def where_word(centre: tuple[float, float], image_size: int) -> str:
    """Where a centre lies: "on the left", "near the top", "in the top left corner", "in the centre", ..."""
    fx, fy = centre[0] / image_size, centre[1] / image_size
    column = "left" if fx < 0.38 else ("right" if fx > 0.62 else "")
    row = "top" if fy < 0.38 else ("bottom" if fy > 0.62 else "")
    if row and column:
        return f"in the {row} {column} corner"
    if column:
        return f"on the {column}"
    if row:
        return f"near the {row}"
    return "in the centre"


def relation(a: SceneObject, b: SceneObject) -> str | None:
    """"left of", "right of", "above" or "below" when ``a`` and ``b`` are clearly apart along one axis, else None."""
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    margin = 0.5 * max(a.side, b.side)
    if abs(dx) > margin and abs(dx) > 1.5 * abs(dy):
        return "left of" if dx > 0 else "right of"
    if abs(dy) > margin and abs(dy) > 1.5 * abs(dx):
        return "above" if dy > 0 else "below"
    return None


def _noun_phrase(objects: list[SceneObject]) -> str:
    """"a red star", or "two red stars" for several of one class."""
    first = objects[0]
    if len(objects) == 1:
        return f"a {first.colour} {first.shape}"
    return f"{_NUMBERS[len(objects)]} {first.colour} {_PLURALS.get(first.shape, first.shape + 's')}"


def _listing(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def scene_captions(objects: list[SceneObject], background_kind: str, image_size: int,
                   rng: np.random.Generator) -> list[str]:
    """Every true caption of a scene: class listings with counts (in a random order), sizes and places of single
    objects, spatial relations between two objects clearly apart, and the background."""
    groups: dict[str, list[SceneObject]] = {}
    for obj in objects:
        groups.setdefault(obj.label, []).append(obj)
    phrases = [_noun_phrase(group) for group in groups.values()]
    order = rng.permutation(len(phrases))
    listing = _listing([phrases[i] for i in order])
    bg = shapes._BACKGROUND_WORDS.get(background_kind, background_kind)
    captions = [listing, f"{listing} on a {bg} background"]
    if len(objects) == 1:
        obj = objects[0]
        size, where = size_word(obj.side, image_size), where_word(obj.centre, image_size)
        captions += [f"a {obj.colour} {obj.shape}", f"a {size} {obj.colour} {obj.shape}",
                     f"a {obj.colour} {obj.shape} {where}", f"a {size} {obj.colour} {obj.shape} {where}",
                     f"a picture of a {obj.colour} {obj.shape}"]
    else:
        captions.append(f"{_NUMBERS[len(objects)]} shapes: {listing}")
    if len(objects) == 2 and len(groups) == 2:
        a, b = objects
        said = relation(a, b)
        if said is not None:
            captions += [f"a {a.colour} {a.shape} {said} a {b.colour} {b.shape}",
                         f"a {b.colour} {b.shape} {_INVERSE[said]} a {a.colour} {a.shape}"]
    return [shapes._articles(c) for c in captions]


_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def colour_swapped_caption(objects: list[SceneObject]) -> str | None:
    """The binding test's false caption: the first two objects' listing with their colours exchanged ("a red star
    and a blue circle" -> "a blue star and a red circle"); None unless they differ in both colour and shape."""
    if len(objects) < 2:
        return None
    a, b = objects[0], objects[1]
    if a.colour == b.colour or a.shape == b.shape:
        return None
    return shapes._articles(f"a {b.colour} {a.shape} and a {a.colour} {b.shape}")


def pair_caption(objects: list[SceneObject]) -> str:
    """The true caption the binding test compares against :func:`colour_swapped_caption`."""
    a, b = objects[0], objects[1]
    return shapes._articles(f"a {a.colour} {a.shape} and a {b.colour} {b.shape}")


# ---------------------------------------------------------------------------------------------------- scenes

def _allowed(label: str, split: str) -> bool:
    if split == "train":
        return label not in HELD_OUT_COMPOSITIONS
    if split == "held_out":
        return label in HELD_OUT_COMPOSITIONS
    return True


def _draw_class(rng: np.random.Generator, split: str) -> tuple[str, str]:
    while True:
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if _allowed(f"{colour} {shape}", split):
            return colour, shape


def make_scene(
    rng_or_seed: np.random.Generator | int | list[int],
    *,
    image_size: int = shapes.IMAGE_SIZE,
    n_objects: int | None = None,
    classes: list[str] | None = None,
    background_kind: str | None = None,
    split: str = "train",
    distinct: bool = False,
) -> Example:
    """One scene. ``n_objects`` defaults to 1 (60%), 2 (25%) or 3 (15%); ``classes`` pins the objects' classes
    (its length sets the count); ``split`` is "train" (no held-out composition), "held_out" (only held-out
    compositions for drawn classes) or "any"; ``distinct=True`` makes every drawn object differ from the others in
    both colour and shape. Objects are drawn in order, later over earlier; labels are the first object's."""
    rng = shapes._rng(rng_or_seed)
    if split not in ("train", "held_out", "any"):
        raise ValueError(f"split must be 'train', 'held_out' or 'any', not {split!r}")
    if classes is not None:
        n_objects = len(classes)
    elif n_objects is None:
        n_objects = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
    if not 1 <= n_objects <= 3:
        raise ValueError("A scene holds one to three objects.")
    kind = background_kind or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if kind not in BACKGROUNDS:
        raise ValueError(f"Unknown background {kind!r}; known: {BACKGROUNDS}")
    canvas = background(kind, image_size, rng, split)

    chosen: list[tuple[str, str]] = []
    for index in range(n_objects):
        if classes is not None:
            colour, shape = classes[index].split(" ")
        elif index > 0 and not distinct and rng.random() < 0.25:
            colour, shape = chosen[int(rng.integers(len(chosen)))]  # a repeat: scenes with counts
        else:
            while True:
                colour, shape = _draw_class(rng, split)
                if not distinct or all(colour != c and shape != s for c, s in chosen):
                    break
        chosen.append((colour, shape))

    objects: list[SceneObject] = []
    full_areas: list[int] = []  # each placed object's own pixel count before any occlusion
    for colour, shape in chosen:
        for _attempt in range(30):  # re-place until every earlier object keeps enough of itself
            side = int(round(rng.uniform(*SIDE_RANGE) * image_size))
            angle = 0 if shape == "circle" else int(rng.integers(0, 360))
            x0 = int(rng.integers(1, image_size - side))
            y0 = int(rng.integers(1, image_size - side))
            alpha = rotated_alpha(shape, side, angle)
            mask = np.zeros((image_size, image_size), dtype=bool)
            mask[y0:y0 + side, x0:x0 + side] = alpha >= 0.5
            if all((o.mask & ~mask).sum() >= MIN_VISIBLE * area for o, area in zip(objects, full_areas, strict=True)):
                break
        shapes._composite(canvas, alpha, shapes._object_colour(colour, rng), x0, y0)
        for earlier in objects:
            earlier.mask &= ~mask
        full_areas.append(int(mask.sum()))
        centre = (x0 + side / 2, y0 + side / 2)
        objects.append(SceneObject(shape, colour, size_word(side, image_size), where_word(centre, image_size),
                                   (0, 0, 0, 0), mask, centre=centre, side=side, angle=float(angle)))
    for obj in objects:
        obj.bbox = shapes._bbox(obj.mask)
    union = np.zeros((image_size, image_size), dtype=bool)
    for obj in objects:
        union |= obj.mask
    captions = scene_captions(objects, kind, image_size, rng)
    main = objects[0]
    return Example(image=shapes._to_image(canvas), mask=union, objects=objects, shape=main.shape,
                   colour=main.colour, label=main.label, caption=captions[int(rng.integers(len(captions)))],
                   background=kind)


def make_scenes(n: int, seed: int, *, balanced: bool = False, split: str = "train", **options) -> list[Example]:
    """``n`` scenes; scene ``i`` comes from ``default_rng([seed, i])`` (independent of ``n``).

    ``balanced=True`` gives single-object scenes cycling through the split's classes (equal counts per class).
    Other options go to :func:`make_scene`.
    """
    if seed < 0:
        raise ValueError("seed must be >= 0.")
    pool = {"train": trained_class_names(), "held_out": sorted(HELD_OUT_COMPOSITIONS),
            "any": shapes.class_names()}.get(split)
    if pool is None:
        raise ValueError(f"split must be 'train', 'held_out' or 'any', not {split!r}")
    scenes = []
    for i in range(n):
        pins = {"classes": [pool[i % len(pool)]]} if balanced else {}
        scenes.append(make_scene([seed, i], split=split, **pins, **options))
    return scenes
