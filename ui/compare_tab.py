"""Compare tab: one view with two settings, or on two models, side by side on the shared image (two heads of a
layer, two CAM methods, two models' rollout)."""
from __future__ import annotations

import gradio as gr

from ui.errors import user_errors
from ui.export import Plot
from ui.model_access import labelled_choices, load_model
from ui.shared_inputs import SharedInputs
from ui.staleness import clear_on_change
from viz.compare import Side, comparable_views, compare, first_figure, parse_settings, view_parameters

PRESETS = {  # name -> (model A, view A, settings A, model B, view B, settings B); None keeps the chosen model
    "two heads of one layer": (None, "attention.query", "layer=1, head=0", "same as A", "attention.query",
                               "layer=1, head=1"),
    "two CAM methods": ("bundled:mini-cnn", "cnn.cam", "method=Grad-CAM", "same as A", "cnn.cam",
                        "method=Grad-CAM++"),
    "two models, one view": ("bundled:mini-clip", "attention.rollout", "", "bundled:mini-vit", "attention.rollout", ""),
}


def parameters_hint(view_name: str) -> str:
    """The view's parameters and defaults, for the settings box."""
    listed = ", ".join(f"{name}={default!r}" for name, default in view_parameters(view_name).items())
    return f"{view_name}: {listed or 'no parameters'}"


@user_errors
def run_compare(image, model_a: str, view_a: str, settings_a: str, model_b: str, view_b: str, settings_b: str):
    """Both sides on the shared image; returns figure A, figure B and what each side ran."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    side_a = Side(view_a, load_model(model_a), parse_settings(view_a, settings_a))
    side_b = Side(view_b, load_model(model_b), parse_settings(view_b, settings_b))
    figures_a, figures_b = compare(side_a, side_b, image)
    said = " | ".join(f"**{label}**: {side.model.model_id} · {side.view}({_listed(side.settings)})"
                      for label, side in (("A", side_a), ("B", side_b)))
    return first_figure(figures_a), first_figure(figures_b), said


def _listed(settings: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in settings.items())


def apply_preset(preset: str, model_a: str):
    """The preset's views and settings; its models where it names them ("same as A": B uses A's model)."""
    chosen_a, view_a, settings_a, chosen_b, view_b, settings_b = PRESETS[preset]
    model_a = chosen_a or model_a
    return model_a, view_a, settings_a, (model_a if chosen_b == "same as A" else chosen_b), view_b, settings_b


def build_compare_tab(shared: SharedInputs, model_choices: list[str], second_model: str) -> None:
    """Widgets and events of the Compare tab (call inside a gr.Tab)."""
    views = comparable_views()
    gr.Markdown("Two settings of one view, or one view on two models, side by side on the shared image. Settings are "
                "`name=value` pairs; lists are written `a; b; c`.")
    preset = gr.Radio(list(PRESETS), value=None, label="Start from")
    sides = []
    with gr.Row(equal_height=False):
        for label, model, view, settings in (("A", "bundled:mini-clip", "attention.query", "layer=1, head=0"),
                                             ("B", second_model, "attention.query", "layer=1, head=1")):
            with gr.Column():
                model_box = gr.Dropdown(labelled_choices(model_choices), value=model, allow_custom_value=True,
                                        label=f"Model {label}")
                view_box = gr.Dropdown(views, value=view, label=f"View {label}")
                settings_box = gr.Textbox(settings, label=f"Settings {label}", info=parameters_hint(view))
                plot = Plot(label=f"{label}")
                view_box.change(lambda v: gr.update(info=parameters_hint(v)), view_box, settings_box, api_name=False)
                sides.append((model_box, view_box, settings_box, plot))
    button = gr.Button("Compare", variant="primary")
    said = gr.Markdown()
    (model_a, view_a, settings_a, plot_a), (model_b, view_b, settings_b, plot_b) = sides
    clear_on_change([shared.image, model_a, model_b], [plot_a, plot_b], said)
    button.click(run_compare, [shared.image, model_a, view_a, settings_a, model_b, view_b, settings_b],
                 [plot_a, plot_b, said], api_name="compare", concurrency_limit=2)
    preset.input(apply_preset, [preset, model_a], [model_a, view_a, settings_a, model_b, view_b, settings_b],
                 api_name=False)
