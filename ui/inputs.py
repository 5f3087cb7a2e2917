"""Widgets and checks the view tabs share: a model picker with an image input, and loading a ViT-family model."""
from __future__ import annotations

import gradio as gr

from models import load_model
from ui.examples import example_paths


def model_and_image(model_choices: list[str], default_model: str, image_label: str) -> tuple:
    """Model id dropdown, image input with clickable examples, and the Analyse button (call inside a column)."""
    model_id = gr.Dropdown(model_choices, value=default_model, allow_custom_value=True, label="Model id")
    image = gr.Image(type="pil", label=image_label, height=300)
    gr.Examples(example_paths(), inputs=image)
    analyse = gr.Button("Analyse", variant="primary")
    return model_id, image, analyse


def load_vit(model_id: str, image: object = True):
    """Load ``model_id`` and check it has a ViT image tower (and that an image was supplied, where one is needed)."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    model = load_model((model_id or "").strip())
    if model.family == "cnn" or (model.family == "clip" and model.visual.family != "vit"):
        raise gr.Error(f"{model_id} is not a vision transformer; open it in the CNN tab.", print_exception=False)
    return model
