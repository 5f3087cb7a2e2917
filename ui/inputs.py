"""Checks the view tabs share: loading a model for the transformer views (one token grid, or attention per stage)."""
from __future__ import annotations

import gradio as gr

from models import load_model
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
