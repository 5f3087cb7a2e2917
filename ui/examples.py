"""Example images offered in the app: procedural scenes (the bundled models' world) and photographs shipped with
scikit-image, each with a name (what a shared link and copy-as-Python refer to) and a caption.

Pure (no gradio): a notebook reproduces an app figure with ``example_image(name)``.
"""
from __future__ import annotations

import io
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image

SCENE_SEED = 2025
PHOTOS = {"chelsea": "photo: a cat", "astronaut": "photo: an astronaut", "coffee": "photo: a cup of coffee"}
SCENES = {f"shapes-{i}": f"scene: {i + 1} shape{'s' if i else ''}" for i in range(3)}
CAPTIONS = {**SCENES, **PHOTOS}  # name -> caption, in the order they are offered
DEFAULT_EXAMPLE = "shapes-1"  # two shapes: a text-conditioned map has a choice to make


def example_names() -> list[str]:
    """Every example's name, in the order the app offers them."""
    return list(CAPTIONS)


def example_scene(name: str):
    """The procedural example ``name`` with its ground truth (a models.world Example: objects, masks, labels)."""
    if name not in SCENES:
        raise ValueError(f"{name!r} is not a procedural example; those are {', '.join(SCENES)}.")
    from models.world import scenes
    count = int(name.rsplit("-", 1)[1])
    return scenes.make_scene([SCENE_SEED, count], n_objects=count + 1, distinct=True, split="any")


def example_image(name: str) -> Image.Image:
    """The example image ``name``: 3 procedural scenes (one, two and three distinct shapes, 224 px) and 3
    photographs."""
    if name in SCENES:
        return example_scene(name).image.resize((224, 224), Image.NEAREST)
    if name in PHOTOS:
        from skimage import data
        return Image.fromarray(getattr(data, name)())
    raise ValueError(f"No example image {name!r}; the examples are {', '.join(CAPTIONS)}.")


@lru_cache(maxsize=1)
def _example_folder() -> Path:
    """The example PNGs, in one folder per user that every app start reuses (so starts leave nothing behind); a
    file is rewritten (atomically) only when its image changed."""
    folder = Path(tempfile.gettempdir()) / f"clipscope-examples-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    folder.mkdir(exist_ok=True)
    for name in CAPTIONS:
        encoded = io.BytesIO()
        example_image(name).save(encoded, format="PNG")
        path = folder / f"{name}.png"
        if not path.is_file() or path.read_bytes() != encoded.getvalue():
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(encoded.getvalue())
            os.replace(partial, path)
    return folder


def example_path(name: str) -> str:
    """The PNG file of the example ``name`` (written once per process)."""
    if name not in CAPTIONS:
        raise ValueError(f"No example image {name!r}; the examples are {', '.join(CAPTIONS)}.")
    return str(_example_folder() / f"{name}.png")


def example_paths() -> list[str]:
    """The PNG files of every example, in the order the app offers them."""
    return [example_path(name) for name in CAPTIONS]
