"""Example images offered in the app: real photographs shipped with scikit-image and procedural shapes."""
from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image


@lru_cache(maxsize=1)
def example_paths() -> list[str]:
    """PNG files written once per process: 3 procedural scenes (one, two and three shapes: the bundled models' world,
    where text-conditioned maps have a choice to make) and 3 photographs."""
    from skimage import data

    from models.world import scenes

    folder = Path(tempfile.mkdtemp(prefix="clipscope-examples-"))
    images = {f"shapes-{i}": scenes.make_scene([2025, i], n_objects=i + 1, distinct=True, split="any")
              .image.resize((224, 224), Image.NEAREST) for i in range(3)}
    images.update({name: Image.fromarray(getattr(data, name)()) for name in ("chelsea", "astronaut", "coffee")})
    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        image.save(path)
        paths.append(str(path))
    return paths
