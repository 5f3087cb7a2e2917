"""Checks the view tabs share: loading a ViT-family model for the transformer views."""
from __future__ import annotations

import gradio as gr

from models import load_model
from viz.views import has_token_grid


def load_vit(model_id: str, image: object = True):
    """Load ``model_id`` and check it has a ViT image tower (and that an image was supplied, where one is needed)."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    model = load_model((model_id or "").strip())
    if not has_token_grid(model):
        raise gr.Error(f"{model_id} is not a vision transformer; open it in the CNN tab.", print_exception=False)
    return model
