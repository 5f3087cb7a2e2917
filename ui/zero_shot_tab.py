"""Zero-shot & Softmax tab: classify an image against typed labels, the image-text similarity matrix with both
softmax halves, and softmax sliders over the current prediction's logits."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from models.images import open_image
from ui.errors import user_errors
from ui.export import Plot, export_button
from ui.model_access import load_model
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from ui.staleness import clear_on_change
from viz.views import Subject, run_view
from viz.zero_shot import (
    DEFAULT_LABELS,
    DEFAULT_TEMPLATE,
    ENSEMBLE_TEMPLATES,
    parse_labels,
    parse_templates,
    require_clip,
)
from viz.zero_shot_views import MAX_SLIDERS, classification, slider_classes

KEY = "zero_shot"
NOT_YET = "Classify an image first: the sliders hold that prediction's logits."
MAX_PAIRS = 16
TEMPLATE_MODES = [f"default: {DEFAULT_TEMPLATE}", "custom", f"ensemble of {len(ENSEMBLE_TEMPLATES)} templates"]
PAIR_SOURCES = ["procedural shapes and their captions", "my images and texts"]
SLIDER_DECIMALS = 2   # the sliders' step is 0.01: a value box with more digits says nothing more


def load_clip(model_id: str):
    """Load ``model_id`` and check that it is a CLIP model (these views need its text tower)."""
    model = load_model((model_id or "").strip())
    require_clip(model)
    return model


def templates_for(mode: str, custom: str) -> list[str]:
    """The templates the chosen mode stands for (custom: one per line; several are ensembled)."""
    if mode.startswith("custom"):
        return parse_templates(custom)
    if mode.startswith("ensemble"):
        return list(ENSEMBLE_TEMPLATES)
    return [DEFAULT_TEMPLATE]


def _sliders(state: dict, values, log_t: float):
    figures = run_view("zero_shot.sliders", state["subject"], values=values, log_t=float(log_t),
                       labels=state["labels"], templates=state["templates"])
    return figures["probabilities"], figures["entropy"]


def _slider_updates(state: dict) -> list:
    result = classification(state["subject"], state["labels"], state["templates"])
    bias = state["subject"].model.logit_bias or 0.0
    low = -2.0 * result.logit_scale + bias   # logits are scale * cosine (+ bias): room on both sides
    high = 2.0 * result.logit_scale + bias
    held = slider_classes(result)
    updates = []
    for position in range(MAX_SLIDERS):
        if position < len(held):
            index = held[position]
            updates.append(gr.update(visible=True, minimum=round(low, 2), maximum=round(high, 2),
                                     value=round(float(result.logits[index]), SLIDER_DECIMALS),
                                     label=f"logit: {result.labels[index]}"))
        else:
            updates.append(gr.update(visible=False, value=0.0))
    return updates


@user_errors
def classify(model_id: str, image, labels_text: str, mode: str, custom: str, k: float, request: gr.Request):
    """Zero-shot prediction of the image, then sliders set to its top logits."""
    model = load_clip(model_id)
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    state = {"subject": Subject(model, image), "labels": parse_labels(labels_text),
             "templates": templates_for(mode, custom)}
    figures = run_view("zero_shot.classify", state["subject"], labels=state["labels"], templates=state["templates"],
                       k=int(k))
    STORE.put(request, KEY, state)
    return (figures["top_k"], figures["notice"], *_slider_updates(state), gr.update(value=0.0),
            *_sliders(state, None, 0.0))


@user_errors
def move_sliders(s0: float, s1: float, s2: float, s3: float, s4: float, s5: float, s6: float, s7: float,
                 log_t: float, request: gr.Request):
    """Any slider moved: every probability follows (logits of the slider classes replaced, at temperature T)."""
    state = STORE.get(request, KEY, NOT_YET)
    held = slider_classes(classification(state["subject"], state["labels"], state["templates"]))
    values = [s0, s1, s2, s3, s4, s5, s6, s7][:len(held)]
    return _sliders(state, [float(v) for v in values], log_t)


@user_errors
def reset_sliders(request: gr.Request):
    """Sliders back to the model's logits and T = 1."""
    state = STORE.get(request, KEY, NOT_YET)
    return (*_slider_updates(state), gr.update(value=0.0), *_sliders(state, None, 0.0))


def _pairs(files, texts_text: str):
    paths = [getattr(f, "name", f) for f in (files or [])]
    if not paths:
        raise gr.Error("Upload at least one image (or use the procedural pairs).", print_exception=False)
    if len(paths) > MAX_PAIRS:
        raise gr.Error(f"At most {MAX_PAIRS} images, please ({len(paths)} uploaded).", print_exception=False)
    images = [open_image(path) for path in paths]
    texts = [line.strip() for line in (texts_text or "").splitlines() if line.strip()]
    if len(texts) > MAX_PAIRS:
        raise gr.Error(f"At most {MAX_PAIRS} texts, please ({len(texts)} typed).", print_exception=False)
    return images, texts, [Path(p).name[:24] for p in paths]


@user_errors
def similarity(model_id: str, source: str, count: float, files, texts_text: str):
    """Cosine similarity matrix of images x texts and its probabilities (softmax halves, or SigLIP sigmoids)."""
    subject = Subject(load_clip(model_id))
    if source == PAIR_SOURCES[0]:
        figures = run_view("zero_shot.similarity", subject, count=int(count))
    else:
        images, texts, names = _pairs(files, texts_text)
        figures = run_view("zero_shot.similarity", subject, images=images, texts=texts, names=names)
    return figures["similarity"], figures["probabilities"], figures["notice"]


def build_zero_shot_tab(shared: SharedInputs) -> None:
    gr.Markdown("**Zero-shot classification**: the image's embedding against one text embedding per label "
                "(prompt template filled with the label; an ensemble normalises each template's embedding, "
                "averages and renormalises). Probabilities = softmax(logit scale × cosine); SigLIP models score "
                "each label with its own sigmoid(logit scale × cosine + bias), which need not sum to 1. "
                "Multilingual CLIP models take labels in any language, with their own tokenizer and context length.")
    with gr.Row():
        with gr.Column(scale=1):
            model_id, image = shared.pickers["clip"], shared.image
            classify_button = gr.Button("Classify", variant="primary")
            labels = gr.Textbox(label="Labels (one per line or comma-separated)", value=", ".join(DEFAULT_LABELS),
                                lines=3)
            mode = gr.Radio(TEMPLATE_MODES, value=TEMPLATE_MODES[0], label="Prompt template")
            custom = gr.Textbox(label="Custom template(s), one per line, {} = the label (several are ensembled)",
                                value="a picture of a {}", lines=2)
            k = gr.Slider(1, 20, value=5, step=1, label="Top k")
        with gr.Column(scale=2):
            top_plot = Plot(label="Top-k labels")
            notice = gr.Markdown()
    gr.Markdown("**Softmax sliders**: each slider is one logit of the current prediction. Moving one changes every "
                "probability at once: that class rises, all others fall, and they still sum to 1. The temperature "
                "divides every logit: low T is sharp (one class takes all), high T is flat.")
    with gr.Row():
        with gr.Column(scale=1):
            sliders = [gr.Slider(-30, 30, value=0.0, step=10 ** -SLIDER_DECIMALS, label=f"logit {i}", visible=False)
                       for i in range(MAX_SLIDERS)]
            log_t = gr.Slider(-2, 2, value=0.0, step=0.01, label="Temperature: log10 T (−2 sharp … 0 model … 2 flat)")
            reset = gr.Button("Reset to the model's logits and T = 1")
        with gr.Column(scale=2):
            softmax_plot = Plot(label="Probabilities")
            entropy = gr.Markdown()
    gr.Markdown("**Similarity matrix**: every image against every text, as in CLIP's training picture (matching "
                "pairs on the outlined diagonal), then scaled by the logit scale and softmaxed along each axis: "
                "the two halves of the symmetric contrastive loss.")
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio(PAIR_SOURCES, value=PAIR_SOURCES[0], label="Pairs")
            count = gr.Slider(2, MAX_PAIRS, value=6, step=1, label="Procedural pairs")
            files = gr.File(file_count="multiple", file_types=["image"], label="My images (in the order of the texts)")
            texts = gr.Textbox(label="My texts, one per line", lines=4)
            similarity_button = gr.Button("Similarity matrix", variant="primary")
        with gr.Column(scale=2):
            similarity_plot = Plot(label="Cosine similarity")
            halves_plot = Plot(label="Softmax along each axis")
            similarity_notice = gr.Markdown()
    export_button("Zero-shot", [top_plot, softmax_plot, similarity_plot, halves_plot])
    clear_on_change([image, model_id], [top_plot, softmax_plot], notice)
    clear_on_change([model_id], [similarity_plot, halves_plot], similarity_notice)
    slider_outputs = [*sliders, log_t, softmax_plot, entropy]
    # progress and errors show on the figures only: a failed request must not turn a slider into an "Error" badge
    classify_button.click(classify, [model_id, image, labels, mode, custom, k],
                          [top_plot, notice, *slider_outputs], api_name="zero_shot_classify", concurrency_limit=2,
                          show_progress_on=[top_plot, softmax_plot])
    for slider in sliders:
        slider.input(move_sliders, [*sliders, log_t], [softmax_plot, entropy], api_name=False,
                     trigger_mode="always_last", show_progress="hidden")
    log_t.input(move_sliders, [*sliders, log_t], [softmax_plot, entropy], api_name="softmax_sliders",
                trigger_mode="always_last", show_progress="hidden")
    reset.click(reset_sliders, None, slider_outputs, api_name="softmax_reset", show_progress_on=[softmax_plot])
    similarity_button.click(similarity, [model_id, source, count, files, texts],
                            [similarity_plot, halves_plot, similarity_notice], api_name="similarity_matrix",
                            concurrency_limit=2)
