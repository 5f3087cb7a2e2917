"""CNN tab: feature maps, filters, receptive fields, CAMs, prediction and inductive-bias probes.

Analyse runs one hooked forward (stem and stages captured); the views then read the stored session.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.errors import figures_only, user_errors
from ui.export import Plot, export_button
from ui.figure_layout import NARROW
from ui.model_access import load_model
from ui.plotly_html import PlotlyFigure, clicked_point
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from ui.staleness import clear_when_stale, inputs_signature
from ui.url_state import link_params
from viz.cam import CAM_METHODS, cam_layer_choices, class_labels, default_cam_layer
from viz.cnn import SCALES
from viz.cnn_views import DEFAULT_PROMPTS, default_map_layer, summary_text
from viz.figure_clicks import heatmap_cell
from viz.reproduce import reproduce_code
from viz.views import Subject, run_view

KEY = "cnn"
NOT_YET = "Press Analyse first."
TOP_K = "top-k by mean activation"
CHOSEN = "chosen channels"


def _prompts(text: str) -> list[str]:
    return [p.strip() for p in (text or "").replace(",", "\n").splitlines() if p.strip()]


def _channels(text: str) -> list[int]:
    try:
        return [int(c) for c in (text or "").replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"Channels {text!r}: type channel numbers separated by commas, e.g. 0, 5, 17.") from None


def _state(request: gr.Request) -> dict:
    return STORE.get(request, KEY, NOT_YET)


# -- handlers ------------------------------------------------------------------------------------------------------
@user_errors
def analyse(model_id: str, image, prompts_text: str, request: gr.Request):
    """One forward for this image: prediction, stage shapes, and the choices every view offers."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    model = load_model((model_id or "").strip())
    subject = Subject(model, image)
    session = subject.cnn()
    prompts = _prompts(prompts_text)
    predicted = run_view("cnn.prediction", subject, prompts=prompts) if not model.has_text or prompts else None
    STORE.put(request, KEY, {"subject": subject, "unit": None, "prompts": prompts, "model_id": model_id,
                             "inputs": inputs_signature(model_id, image)})
    layers = session.layers()
    default_layer = default_map_layer(session) if session.is_cnn else None
    prediction = session.prediction(prompts) if predicted else None
    classes = class_labels(model, prompts) or (prediction.labels if prediction else [])
    target = prediction.labels[0] if prediction else (classes[0] if classes else None)
    convs = [n for n in layers if n.startswith("module.")]
    return (
        summary_text(subject),
        predicted["prediction"] if predicted else None,
        run_view("cnn.stages", subject)["stages"] if session.is_cnn else None,
        gr.update(choices=layers, value=default_layer),
        gr.update(choices=layers, value=default_layer),
        gr.update(choices=convs, value=convs[-1] if convs else None),
        gr.update(choices=cam_layer_choices(model), value=default_cam_layer(model)),
        gr.update(choices=classes, value=target),
    )


@user_errors
def feature_view(layer: str, mode: str, k: float, channels_text: str, scale: str, request: gr.Request):
    """A grid of the layer's channel maps (no forward for stages; one capture for another conv layer)."""
    channels = (_channels(channels_text) if mode == CHOSEN else None) or None  # none typed yet: the top k
    return run_view("cnn.feature_maps", _state(request)["subject"], layer=layer or None, k=int(k),
                    channels=channels, scale=scale)["feature_maps"]


@user_errors
def filters_view(request: gr.Request):
    """The first convolution's kernels as RGB tiles."""
    return run_view("cnn.filters", _state(request)["subject"])["filters"]


@user_errors
def kernel_view(layer: str, out_channel: float, request: gr.Request):
    """One output channel's kernel of any convolution, one tile per input channel."""
    if not layer:
        raise ValueError("Pick a convolution layer.")
    return run_view("cnn.kernel", _state(request)["subject"], layer=layer, out_channel=int(out_channel))["kernel"]


def _field_views(state: dict, layer: str):
    unit = state.get("unit")
    unit = unit[1] if unit is not None and unit[0] == layer else None
    figures = run_view("cnn.receptive_field", state["subject"], layer=layer or None, unit=unit)
    state["unit"] = (layer, figures["unit"])
    return figures["field"], figures["layer_map"], figures["text"], "{}, {}".format(*figures["unit"])


def parse_unit(text: str, shape: tuple[int, int]) -> tuple[int, int]:
    """'row, col' typed (or from a link) as a unit of a map of ``shape``; a clear error otherwise."""
    parts = [p for p in str(text or "").replace("(", " ").replace(")", " ").replace(",", " ").split() if p]
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise gr.Error(f"A unit is 'row, col' (two whole numbers), not {text!r}.", print_exception=False) from None
    if not (0 <= row < shape[0] and 0 <= col < shape[1]):
        raise gr.Error(f"Unit ({row}, {col}) is outside this layer's {shape[0]}x{shape[1]} map.",
                       print_exception=False)
    return row, col


@user_errors
def field_view(layer: str, request: gr.Request):
    """Receptive field of the layer's centre unit (or the last clicked one)."""
    return _field_views(_state(request), layer)


@user_errors
def pick_unit(layer: str, event: gr.SelectData, request: gr.Request):
    """A click on the shared image picks the unit of the layer whose field is centred nearest to it (nothing
    before a CNN was analysed)."""
    state = STORE.peek(request, KEY)
    if state is None or not state["subject"].cnn().is_cnn or not layer:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    x, y = event.index
    state["unit"] = (layer, state["subject"].cnn().unit_at_source_pixel(layer, x, y))
    return _field_views(state, layer)


@user_errors
def set_unit(layer: str, text: str, request: gr.Request):
    """The unit typed in (or restored from a shared link) as 'row, col'."""
    state = _state(request)
    if not layer or not state["subject"].cnn().is_cnn:
        raise gr.Error("Pick a layer of a CNN first.", print_exception=False)
    state["unit"] = (layer, parse_unit(text, tuple(state["subject"].cnn().layer_maps(layer).shape[-2:])))
    return _field_views(state, layer)


@user_errors
def click_unit(layer: str, event: gr.EventData, request: gr.Request):
    """A click on the layer map (one cell per unit) picks that unit."""
    state, point = STORE.peek(request, KEY), clicked_point(event)
    if state is None or point is None or not layer or not state["subject"].cnn().is_cnn:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    shape = tuple(state["subject"].cnn().layer_maps(layer).shape[-2:])
    state["unit"] = (layer, heatmap_cell(*point, shape))
    return _field_views(state, layer)


@user_errors
def copy_python(source: str, layer: str, mode: str, k: float, channels_text: str, scale: str, field_layer: str,
                method: str, cam_layer: str, target: str, request: gr.Request) -> str:
    """The notebook code that reproduces the prediction, feature maps, receptive field and CAM as set now."""
    state = _state(request)
    subject, unit = state["subject"], state.get("unit")
    calls = [("cnn.prediction", {"prompts": state["prompts"]} if subject.model.has_text else {})]
    if subject.cnn().is_cnn:
        channels = _channels(channels_text) if mode == CHOSEN else None
        calls += [("cnn.feature_maps", {"layer": layer or None, "k": int(k), "channels": channels or None,
                                        "scale": scale}),
                  ("cnn.receptive_field", {"layer": field_layer or None,
                                           "unit": tuple(unit[1]) if unit and unit[0] == field_layer else None})]
    calls.append(("cnn.cam", {"method": method, "layer": cam_layer or None, "target": target or None,
                              "prompts": state["prompts"] or list(DEFAULT_PROMPTS)}))
    return reproduce_code(state["model_id"], source, calls, show="feature_maps" if subject.cnn().is_cnn else "cam")


@user_errors
def cam_view(method: str, layer: str, target: str, request: gr.Request):
    """A class activation map for the chosen class (or prompt, for CLIP; default: the top output)."""
    state = _state(request)
    if state["subject"].model.has_text and not state["prompts"]:
        raise ValueError("Type the prompts (one per line) and press Analyse: a CLIP CAM explains one of them.")
    return run_view("cnn.cam", state["subject"], method=method, layer=layer or None, target=target or None,
                    prompts=state["prompts"])["cam"]


@user_errors
def probes_view(model_id: str, image, compare_id: str, max_shift: float, progress=gr.Progress()):
    """Shift probe on this image and the cue-conflict test, for the model and the comparison model."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    ids = list(dict.fromkeys(i.strip() for i in (model_id, compare_id) if i and i.strip()))
    models = [load_model(i) for i in progress.tqdm(ids, desc="loading models")]
    figures = run_view("cnn.probes", Subject(models[0], image), compare=tuple(models[1:]), max_shift=int(max_shift))
    return figures["shift"], figures["cue_conflict"], figures["gallery"], figures["note"]


# -- layout --------------------------------------------------------------------------------------------------------
@dataclass
class CNNTab:
    """The CNN tab's controls a shared link restores, and its drawing when a link opens it."""

    fields: dict
    draw: object

    def url_fields(self) -> dict:
        return self.fields


def _controls():
    """The controls column beside its figure, wide enough for long module names (``layer4.1.downsample.0``)."""
    return gr.Column(scale=1, min_width=330)


def build_cnn_tab(shared: SharedInputs, compare_choices: list[str], compare_model: str = "bundled:mini-vit") -> CNNTab:
    model_id, image = shared.pickers["cnn"], shared.image
    stale_note = gr.Markdown(elem_classes=["cs-stale"], elem_id="cs-cnn-stale")
    with gr.Row(equal_height=False):
        with _controls():
            gr.Markdown("Inside a CNN: feature maps, first kernels, receptive fields, CAMs and inductive-bias "
                        "probes. ViTs and CLIP towers get CAMs, prediction and probes.")
            prompts = gr.Textbox(label="CLIP models: prompts, one per line (the CAM explains one of them)",
                                 value="a red circle\na blue star\na green square", lines=3)
            analyse_button = gr.Button("Analyse", variant="primary")
            copy_button = gr.Button("Copy as Python", size="sm")
            summary = gr.Markdown()
        with gr.Column(scale=2, min_width=320):
            prediction_plot = Plot(label="Prediction", title_chars=NARROW)
        with gr.Column(scale=2, min_width=320):
            shapes_plot = Plot(label="Stages", title_chars=NARROW)
    code = gr.Code(language="python", label="Python that draws these figures in a notebook", visible=False,
                   interactive=False)
    with gr.Tab("Feature maps"):
        with gr.Row(equal_height=False):
            with _controls():
                gr.Markdown("Each tile is one channel's map over the image: bright = strong activation. Early "
                            "layers respond to edges and colours, later ones to parts, at coarser resolution.")
                map_layer = gr.Dropdown([], label="Layer (stage or any convolution)")
                mode = gr.Radio([TOP_K, CHOSEN], value=TOP_K, label="Channels")
                k = gr.Slider(1, 64, value=16, step=1, label="k")
                channels = gr.Textbox(label="Chosen channels", placeholder="0, 5, 17")
                scale = gr.Radio(list(SCALES), value="per unit", label="Colour scale")
            with gr.Column(scale=3):
                maps_plot = Plot(label="Feature maps")
    with gr.Tab("Receptive field"):
        with gr.Row(equal_height=False):
            with _controls():
                gr.Markdown("The box is the theoretical receptive field, traced from the real kernel sizes, strides, "
                            "padding and dilation; the heat is the effective one, |d unit / d pixel| for this image, "
                            "usually a much smaller blob in the middle of the box. **Click the layer map** (or the "
                            "input image) to pick the unit.")
                field_layer = gr.Dropdown([], label="Layer")
                unit = gr.Textbox(label="Unit: row, col (Enter; or click the layer map or the image)",
                                  placeholder="the centre unit", elem_id="cs-unit")
                field_text = gr.Markdown()
            with gr.Column(scale=2, min_width=320):
                field_plot = Plot(label="Receptive field", title_chars=NARROW)
            with gr.Column(scale=2, min_width=320):
                field_map = PlotlyFigure("Layer map (click a unit)", title_chars=NARROW, elem_id="cs-layer-map")
    with gr.Tab("CAM"):
        with gr.Row(equal_height=False):
            with _controls():
                gr.Markdown("Class activation maps (pytorch-grad-cam): where the evidence for the chosen class lies, "
                            "red = more. On ViTs the map comes from a block's first norm over the patch grid.")
                method = gr.Dropdown(list(CAM_METHODS), value="Grad-CAM", label="Method")
                cam_layer = gr.Dropdown([], label="Target layer")
                target = gr.Dropdown([], label="Class (or prompt)", allow_custom_value=True)
                cam_button = gr.Button("CAM", variant="primary")
            with gr.Column(scale=3):
                cam_plot = Plot(label="CAM")
    with gr.Tab("Filters"):
        with gr.Row(equal_height=False):
            with _controls():
                gr.Markdown("First-layer kernels as RGB tiles (grey = 0; each kernel scaled by its own largest "
                            "weight): oriented edges, colour blobs. Pick any convolution and output channel to see "
                            "its kernel.")
                filters_button = gr.Button("First-layer filters")
                kernel_layer = gr.Dropdown([], label="Convolution")
                out_channel = gr.Number(value=0, precision=0, label="Output channel")
                kernel_button = gr.Button("Show kernel")
            with gr.Column(scale=2, min_width=320):
                filters_plot = Plot(label="First-layer filters", title_chars=NARROW)
            with gr.Column(scale=2, min_width=320):
                kernel_plot = Plot(label="Kernel", title_chars=NARROW)
    with gr.Tab("Probes"):
        with gr.Row(equal_height=False):
            with _controls():
                gr.Markdown("**Translation**: the image shifted left pixel by pixel. A CNN's maps move with it "
                            "(small change at multiples of its stride); a ViT re-cuts every patch unless the shift is "
                            "a multiple of the patch size. **Cue conflict**: a large shape made of small shapes of "
                            "another kind; which one decides the prediction?")
                compare_id = gr.Dropdown(compare_choices, value=compare_model, allow_custom_value=True,
                                         label="Compare with")
                max_shift = gr.Slider(1, 64, value=16, step=1, label="Largest shift (px)")
                probes_button = gr.Button("Run probes", variant="primary")
                cue_note = gr.Markdown()
            with gr.Column(scale=2, min_width=320):
                shift_plot = Plot(label="Translation probe", title_chars=NARROW)
            with gr.Column(scale=2, min_width=320):
                cue_plot = Plot(label="Cue conflict", title_chars=NARROW)
        cue_gallery = gr.Gallery(label="Cue-conflict images", columns=8, height=160)

    figures = [prediction_plot, shapes_plot, maps_plot, filters_plot, kernel_plot, field_plot, field_map, cam_plot,
               shift_plot, cue_plot]
    export_button("CNN", figures)
    map_controls = [map_layer, mode, k, channels, scale]
    field_outputs = [field_plot, field_map, field_text, unit]
    analyse_outputs = [summary, prediction_plot, shapes_plot, map_layer, field_layer, kernel_layer, cam_layer, target]
    analysed = analyse_button.click(analyse, [model_id, image, prompts], analyse_outputs, api_name="cnn_analyse",
                                    concurrency_limit=2, show_progress_on=figures_only(analyse_outputs))
    analysed.success(lambda: "", None, stale_note, api_name=False)
    analysed.success(feature_view, map_controls, maps_plot, api_name=False).success(
        field_view, field_layer, field_outputs, api_name=False)
    for control in map_controls:  # user edits only (.input): Analyse draws the first view itself
        control.input(feature_view, map_controls, maps_plot,
                      api_name="cnn_feature_maps" if control is map_layer else False)
    filters_button.click(filters_view, None, filters_plot, api_name="cnn_filters")
    kernel_button.click(kernel_view, [kernel_layer, out_channel], kernel_plot, api_name="cnn_kernel")
    field_layer.input(field_view, field_layer, field_outputs, api_name="cnn_receptive_field")
    image.select(pick_unit, field_layer, field_outputs, api_name=False)
    field_map.click(click_unit, field_layer, field_outputs, api_name=False)
    unit.submit(set_unit, [field_layer, unit], field_outputs, api_name="cnn_unit")
    cam_button.click(cam_view, [method, cam_layer, target], cam_plot, api_name="cnn_cam", concurrency_limit=2)
    probes_button.click(probes_view, [model_id, image, compare_id, max_shift],
                        [shift_plot, cue_plot, cue_gallery, cue_note], api_name="cnn_probes", concurrency_limit=1)
    copy_button.click(copy_python, [shared.source, *map_controls, field_layer, method, cam_layer, target], code,
                      api_name="cnn_copy_python").success(lambda: gr.update(visible=True), None, code,
                                                          api_name=False)
    fields = {"cnn_layer": map_layer, "scale": scale, "k": k, "field_layer": field_layer, "unit": unit,
              "method": method}

    def draw(after):
        """When a shared link opens this tab: Analyse after ``after`` (the page load), then the link's layers."""
        @user_errors
        def analyse_if_opened(model: str, picture, prompts_text: str, request: gr.Request):
            if link_params(request).get("tab") != "cnn":
                return [gr.skip()] * len(analyse_outputs)
            return analyse(model, picture, prompts_text, request)

        def link_layers(request: gr.Request):
            """The link's layer choices, where the analysed model has them (else the defaults stay)."""
            params, state = link_params(request), STORE.peek(request, KEY)
            if state is None or params.get("tab") != "cnn":
                return gr.skip(), gr.skip()
            layers = state["subject"].cnn().layers()
            return tuple(params[key] if params.get(key) in layers else gr.skip() for key in ("cnn_layer",
                                                                                              "field_layer"))

        @user_errors
        def views_if_opened(layer: str, mode_value: str, k_value: float, channels_text: str, scale_value: str,
                            field_layer_value: str, request: gr.Request):
            params = link_params(request)
            if STORE.peek(request, KEY) is None or params.get("tab") != "cnn":
                return [gr.skip()] * (1 + len(field_outputs))
            maps = feature_view(layer, mode_value, k_value, channels_text, scale_value, request)
            if params.get("unit") and field_layer_value:
                return maps, *set_unit(field_layer_value, params["unit"], request)
            return maps, *field_view(field_layer_value, request)

        opened = after.then(analyse_if_opened, [model_id, image, prompts], analyse_outputs, api_name=False,
                            show_progress_on=figures_only(analyse_outputs))
        opened.success(link_layers, None, [map_layer, field_layer], api_name=False).success(
            views_if_opened, [*map_controls, field_layer], [maps_plot, *field_outputs], api_name=False)

    clear_when_stale(KEY, model_id, image, stale_note, figures, texts=[field_text])
    return CNNTab(fields, draw)
