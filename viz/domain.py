"""What a model knows, said next to its answers: the one-line training domain of a narrowly trained model (clipscope's
bundled models: ``adapter.trained_on``), and whether an image lies outside that world (a photograph), with a pointer
to real checkpoints. Real checkpoints (``trained_on`` None) get no notes."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from models import shapes

WORLD_SIZE: int = shapes.IMAGE_SIZE
# one real checkpoint per kind of model, offered in the catalog (tests check that each one is there)
REAL_CLIP = "open_clip:ViT-B-16/openai"
REAL_VIT = "hf:google/vit-base-patch16-224"
REAL_CNN = "torchvision:resnet50/IMAGENET1K_V2"


def is_photograph(image: Image.Image, world_size: int = WORLD_SIZE) -> bool:
    """Is ``image`` from outside the procedural world?

    A world image is ``world_size`` square, or a nearest-neighbour enlargement of one (how the app's example gallery
    shows them: shrinking it back with nearest-neighbour and enlarging again gives the same pixels). Anything else
    (photographs, drawings, screenshots, world images resampled smoothly) counts as a photograph.
    """
    width, height = image.size
    if (width, height) == (world_size, world_size):
        return False
    if width != height or width < world_size:
        return True
    rgb = image.convert("RGB")
    round_trip = rgb.resize((world_size, world_size), Image.NEAREST).resize((width, height), Image.NEAREST)
    return not np.array_equal(np.asarray(rgb), np.asarray(round_trip))


def real_checkpoint(model) -> str:
    """A real checkpoint of the same kind as ``model`` (a CLIP, a CNN, else a ViT), by its capabilities."""
    if model.has_text:
        return REAL_CLIP
    return REAL_CNN if model.has_feature_maps else REAL_VIT


def trained_on_line(model) -> str | None:
    """'ℹ️ MODEL was trained only on ...' for a narrowly trained model; None for a real checkpoint."""
    if model.trained_on is None:
        return None
    return f"ℹ️ **{model.model_id}** was trained only on {model.trained_on}."


def photograph_notice(model, images: Iterable[Image.Image | None]) -> str | None:
    """A one-line warning when a narrowly trained model is shown a photograph (any of ``images``), pointing to a real
    checkpoint of its kind; None otherwise."""
    if model.trained_on is None or not any(image is not None and is_photograph(image) for image in images):
        return None
    return (f"⚠️ This looks like a photograph, not one of the procedural shapes scenes {model.model_id} knows, so "
            f"its answers and maps mean little here. For real images load a real checkpoint, e.g. "
            f"{real_checkpoint(model)}.")


def domain_notes(model, images: Iterable[Image.Image | None] = ()) -> list[str]:
    """The notes to show next to a model's answer on ``images``: the photograph warning, then the training domain
    (empty for a real checkpoint)."""
    notes = [photograph_notice(model, images), trained_on_line(model)]
    return [note for note in notes if note]


def model_tab_note(model) -> str:
    """The Model tab's line for a narrowly trained model: what it knows and which real checkpoints to load for real
    images ("" for a real checkpoint)."""
    line = trained_on_line(model)
    if line is None:
        return ""
    others = [kind for kind in (REAL_CLIP, REAL_VIT, REAL_CNN) if kind != real_checkpoint(model)]
    return (f"{line} For real images load a real checkpoint: **{real_checkpoint(model)}** (or {others[0]}, "
            f"{others[1]}, any open_clip:ARCH/TAG, hf:REPO, timm:NAME or torchvision:NAME id); it downloads once, on "
            "first use.")
