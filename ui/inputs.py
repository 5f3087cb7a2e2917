"""Checks the view tabs share: an upload as it arrives, and loading a model for the transformer views (one token grid,
or attention per stage)."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from models.images import ImageInputError, open_image
from ui.model_access import load_model
from viz.hierarchical import has_stage_attention
from viz.views import has_token_grid


def _load(model_id: str, image: object):
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    return load_model((model_id or "").strip())


def needs_token_grid(model_id: str, model, what: str = "These views") -> str:
    """Why a model without a single token grid cannot be shown by a ViT view (``what``), and where it can."""
    if has_stage_attention(model):
        return (f"{what} need a single token grid (a ViT, or a CLIP with a ViT image tower); {model_id} attends on a "
                "grid per stage (window or per-stage attention). Its attention is in the Attention tab's \"Window "
                "attention per stage\" section, its stages in the CNN tab.")
    return f"{model_id} is not a vision transformer; open it in the CNN tab."


def load_vit(model_id: str, image: object = True, what: str = "These views"):
    """Load ``model_id`` and check it has a ViT image tower (and that an image was supplied, where one is needed)."""
    model = _load(model_id, image)
    if not has_token_grid(model):
        raise gr.Error(needs_token_grid(model_id, model, what), print_exception=False)
    return model


def load_attention_model(model_id: str, image: object = True):
    """Load ``model_id`` and check the Attention tab can show its attention: one token grid (ViT) or a grid per
    stage (Swin, MaxViT, MobileCLIP / FastViT hybrids)."""
    model = _load(model_id, image)
    if not (has_token_grid(model) or has_stage_attention(model)):
        raise gr.Error(f"{model_id} is not a vision transformer (it has no attention on a token grid or per stage); "
                       "open it in the CNN tab.", print_exception=False)
    return model


MIN_SIDE = 16   # px: below this a model's resize invents nearly every pixel it sees


def _upload_path(payload) -> str | None:
    """The server-side path of an upload as gr.Image sends it unprocessed (a FileData dict or object, or a path)."""
    if payload is None or isinstance(payload, str):
        return payload
    return payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)


def check_upload(payload) -> tuple:
    """Validate an upload as soon as it arrives (not on Analyse): a file that is not an image, too large, or has too
    many pixels is refused with its reason and cleared from the image box; a tiny image is kept with a warning.
    Returns (image update, status text); wire it as ``image.upload(check_upload, image, [image, status],
    preprocess=False)``."""
    path = _upload_path(payload)
    if path is None:
        return gr.update(), gr.update()
    name = (payload.get("orig_name") if isinstance(payload, dict) else None) or Path(path).name
    try:
        image = open_image(path)
    except ImageInputError as exc:
        message = f"{name} was not loaded: {exc}"
        gr.Warning(message)
        return gr.update(value=None), f"⚠️ {message}"
    size = f"{image.width}x{image.height} px"
    if min(image.size) < MIN_SIDE:
        message = (f"{name} is only {size}: every model resizes it to its own input size (e.g. 224x224), so nearly "
                   "every pixel it sees is interpolated; its maps say little about the image.")
        gr.Warning(message)
        return gr.update(), f"⚠️ {message}"
    return gr.update(), f"Image **{name}**: {size}."
