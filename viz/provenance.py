"""Where a figure came from: the view, the model, the image and the view's settings, stamped into the figure itself
(``layout.meta["clipscope"]``), so that an export, a saved PNG or a notebook copy can say what it shows.

    stamp_figures(figures, "attention.rollout", subject, {"fusion": "max"})
    figure_filename(fig.layout.meta)   # "clipscope_mini-clip_attention_rollout"
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
from PIL import Image

META_KEY = "clipscope"
SOURCE_INFO = "clipscope_source"   # Image.info key where the app keeps an upload's or example's file name


def image_fingerprint(image: Image.Image | None) -> dict | None:
    """An image's size, file name where known, and the first 16 hex digits of the SHA-256 of its RGB pixels."""
    if image is None:
        return None
    pixels = np.asarray(image.convert("RGB"))
    found = {"size": [image.width, image.height],
             "sha256": hashlib.sha256(pixels.tobytes()).hexdigest()[:16]}
    if image.info.get(SOURCE_INFO):
        found["name"] = str(image.info[SOURCE_INFO])
    return found


def _plain(value: Any) -> Any:
    """A parameter value as JSON can hold it (numbers, strings, lists); images and arrays by their shape, other
    objects by their type."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Image.Image):
        return f"image {value.width}x{value.height}"
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value][:64]
    if hasattr(value, "shape"):
        return f"array {tuple(value.shape)}"
    return f"<{type(value).__name__}>"   # a data object (an embedding set): named, never dumped


def figure_provenance(view: str, subject, params: Mapping[str, Any]) -> dict:
    """What one view's figures show: view name, model id, image fingerprint and the parameters as given."""
    model = getattr(subject, "model", None)
    image = getattr(subject, "image", None)
    fingerprint = subject.remember("image_fingerprint", lambda: image_fingerprint(image))
    return {"view": view, "model": getattr(model, "model_id", None), "image": fingerprint,
            "settings": {str(k): _plain(v) for k, v in params.items()}}


def stamp_figures(figures: dict, view: str, subject, params: Mapping[str, Any]) -> dict:
    """Put the provenance into every Plotly figure among ``figures`` (in place; other values are left alone)."""
    provenance = None
    for value in figures.values():
        if hasattr(value, "update_layout") and hasattr(value, "layout"):
            provenance = provenance or figure_provenance(view, subject, params)
            meta = value.layout.meta if isinstance(value.layout.meta, dict) else {}
            value.update_layout(meta={**meta, META_KEY: provenance})
    return figures


def provenance_of(meta: Any) -> dict | None:
    """The provenance in a figure's ``layout.meta`` (a dict, or None when the figure was not stamped)."""
    return meta.get(META_KEY) if isinstance(meta, dict) else None


def slug(text: str) -> str:
    """A file-name-safe form: "bundled:mini-clip" -> "mini-clip", "attention.rollout" -> "attention_rollout"."""
    text = str(text).rsplit(":", 1)[-1]              # the backend prefix goes; a local path keeps its last name
    text = PurePath(text).name if text.startswith(("/", "\\", ".")) else text
    return re.sub(r"[^A-Za-z0-9-]+", "_", text.replace("/", "-")).strip("_-").lower() or "figure"


def figure_filename(meta: Any, fallback: str = "figure") -> str:
    """The base name a figure's files get: "clipscope_<model>_<view>" (no extension)."""
    found = provenance_of(meta) or {}
    parts = ["clipscope", slug(found["model"]) if found.get("model") else None, slug(found.get("view") or fallback)]
    return "_".join(p for p in parts if p)
