"""Ablate & patch tab: tick heads or layers to ablate and compare the prediction with the clean run, sweep every head
for the target logit's drop, and patch a source image's residual stream into the image. Widgets only: every figure
is a view of ``viz/intervention_views.py``."""
from __future__ import annotations

import gradio as gr

from ui.errors import user_errors
from ui.export import Plot, export_button
from ui.model_access import load_model
from ui.shared_inputs import ImageInput, SharedInputs
from ui.staleness import clear_on_change
from viz.intervention_views import SOURCE_SEED, ablation_choices, can_ablate, can_patch, can_sweep
from viz.interventions import REFERENCE_COUNT
from viz.views import Subject, run_view
from viz.zero_shot import DEFAULT_LABELS

MODEL_SOURCES = ["transformer or CLIP picker", "CNN picker"]
MODES = ["zero", "mean"]
TOKEN_SETS = [("all tokens", "all"), ("prefix tokens (CLS)", "prefix"), ("patches under the box", "box")]


def _model(source: str, transformer_id: str, cnn_id: str):
    model_id = cnn_id if source == MODEL_SOURCES[1] else transformer_id
    return load_model((model_id or "").strip())


def _subject(source: str, transformer_id: str, cnn_id: str, image) -> Subject:
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    return Subject(_model(source, transformer_id, cnn_id), image)


def _label(name: str) -> str:
    """"layer 3 head 1" for blocks.3.attn.head.1; other names as they are."""
    site, _, head = name.rpartition(".head.")
    parts = site.split(".")
    if parts[0] == "blocks" and head:
        return f"layer {parts[1]} head {head}"
    if parts[0] == "stages" and head:
        return f"stage {parts[1]} block {parts[3]} head {head}"
    return f"{site.replace('.attn', '')} head {head}" if head else name


def _typed_names(text: str) -> list[str]:
    return [name.strip() for name in (text or "").replace("\n", ",").split(",") if name.strip()]


@user_errors
def parts(source: str, transformer_id: str, cnn_id: str):
    """The heads and layers the picked model offers to tick, and the patch layer's range."""
    model = _model(source, transformer_id, cnn_id)
    if not can_ablate(model):
        raise gr.Error(f"{model.model_id} has no heads, attention / MLP outputs or stages to ablate.",
                       print_exception=False)
    choices = ablation_choices(model)
    layers = sum(name.endswith(".resid_post") and name.startswith("blocks.") for name in model.image_tower.points)
    notes = [f"**{model.model_id}**: {len(choices['heads'])} heads, {len(choices['layers'])} whole layers."]
    if not can_sweep(model):
        notes.append("No attention heads: the sweep does not apply.")
    if not can_patch(model):
        notes.append("No single token grid: patching does not apply.")
    return (gr.update(choices=[(_label(n), n) for n in choices["heads"]], value=[]),
            gr.update(choices=choices["layers"], value=[]),
            gr.update(maximum=max(layers - 1, 1), value=min(layers // 2, max(layers - 1, 0))), " ".join(notes))


def parts_quietly(source: str, transformer_id: str, cnn_id: str):
    """A picker changed: list the new model's parts, or say in this tab (no pop-up) why not."""
    try:
        return parts(source, transformer_id, cnn_id)
    except gr.Error as exc:
        return gr.skip(), gr.skip(), gr.skip(), str(exc.message)


@user_errors
def ablate(source: str, transformer_id: str, cnn_id: str, image, heads: list[str], layers: list[str], typed: str,
           mode: str, reference: float, labels: str, k: float):
    """The prediction with the ticked (and typed) parts ablated, against the clean run."""
    names = list(heads or []) + list(layers or []) + _typed_names(typed)
    if not names:
        raise gr.Error("Tick at least one head or layer (or type a name) to ablate.", print_exception=False)
    figures = run_view("poke.ablate", _subject(source, transformer_id, cnn_id, image), names=names, mode=mode,
                       reference_count=int(reference), labels=labels or None, k=int(k))
    return figures["bars"], figures["notice"]


@user_errors
def sweep(source: str, transformer_id: str, cnn_id: str, image, target: str, mode: str, reference: float,
          labels: str):
    """Every head ablated alone: the drop of the target logit as a layer x head map."""
    subject = _subject(source, transformer_id, cnn_id, image)
    if not can_sweep(subject.model):
        raise gr.Error(f"{subject.model.model_id} has no attention heads to sweep.", print_exception=False)
    figures = run_view("poke.sweep", subject, target=(target or "").strip() or None, mode=mode,
                       reference_count=int(reference), labels=labels or None)
    return figures["importance"], figures["notice"]


@user_errors
def patch(source: str, transformer_id: str, cnn_id: str, image, source_image, seed: float, layer: float,
          tokens: str, x0: float, y0: float, x1: float, y1: float, labels: str, k: float):
    """The source image's residual stream at a layer and token set, put into the image's forward."""
    subject = _subject(source, transformer_id, cnn_id, image)
    if not can_patch(subject.model):
        raise gr.Error(f"{subject.model.model_id} has no single token grid with a residual stream to patch.",
                       print_exception=False)
    if tokens == "box" and not (x1 > x0 and y1 > y0):
        raise gr.Error("The box needs x1 > x0 and y1 > y0.", print_exception=False)
    figures = run_view("poke.patch", subject, source=source_image, source_seed=int(seed), layer=int(layer),
                       tokens=tokens, box=(x0, y0, x1, y1), labels=labels or None, k=int(k))
    return figures["bars"], figures["layers"], figures["notice"]


def build_poke_tab(shared: SharedInputs) -> None:
    gr.Markdown("**Ablate & patch**: change the forward and watch the prediction. *Ablation* removes parts: a head "
                "is cut at the attention output, before the output projection; a layer's attention or MLP output "
                "is replaced whole. *Zero* sets it to 0, *mean* to its mean over held-out reference scenes (per "
                "token position). *Patching* puts a source image's residual stream into this image's forward. "
                "Labels apply to CLIP models; classifiers use their own classes.")
    source = gr.Radio(MODEL_SOURCES, value=MODEL_SOURCES[0], label="Model (from the shared pickers)")
    transformer_id, cnn_id, image = shared.pickers["transformer"], shared.pickers["cnn"], shared.image
    with gr.Row():
        parts_button = gr.Button("List the model's heads and layers")
        parts_notice = gr.Markdown()
    labels = gr.Textbox(label="Labels (CLIP models; one per line or comma-separated)", value=", ".join(DEFAULT_LABELS))
    with gr.Row():
        mode = gr.Radio(MODES, value="zero", label="Ablation")
        reference = gr.Slider(4, 64, value=REFERENCE_COUNT, step=4, label="Reference scenes (mean ablation)")
        k = gr.Slider(1, 20, value=5, step=1, label="Top k")
    gr.Markdown("**Ablate**: tick heads and / or whole layers, or type names (``blocks.5.mlp_out``, "
                "``stages.2.channel.17``, globs such as ``blocks.*.mlp_out``).")
    with gr.Row():
        with gr.Column(scale=1):
            heads = gr.CheckboxGroup([], label="Heads")
            layers = gr.CheckboxGroup([], label="Whole layers")
            typed = gr.Textbox(label="More names (comma-separated)")
            ablate_button = gr.Button("Ablate", variant="primary")
        with gr.Column(scale=2):
            ablate_plot = Plot(label="Clean vs ablated")
            ablate_notice = gr.Markdown()
    gr.Markdown("**Head-importance sweep**: each head ablated alone (batched: one forward over copies of the image, "
                "a different head removed in each copy); the drop of the target logit per layer and head.")
    with gr.Row():
        with gr.Column(scale=1):
            target = gr.Textbox(label="Target label or class index (blank: the clean top class)")
            sweep_button = gr.Button("Sweep every head", variant="primary")
        with gr.Column(scale=2):
            sweep_plot = Plot(label="Head importance")
            sweep_notice = gr.Markdown()
    gr.Markdown("**Activation patching**: the source image's ``blocks.N.resid_post`` (all tokens, the prefix tokens, "
                "or the patches whose centre is in the box) replaces this image's; below, every layer patched in "
                "turn.")
    with gr.Row():
        with gr.Column(scale=1):
            source_image = ImageInput(type="filepath", image_mode=None, height=160, sources=["upload", "clipboard"],
                                      label="Source image (blank: a held-out procedural scene)")
            seed = gr.Number(label="Procedural source scene (seed)", value=SOURCE_SEED, precision=0, minimum=0)
            layer = gr.Slider(0, 11, value=2, step=1, label="Layer to patch")
            tokens = gr.Radio(TOKEN_SETS, value="all", label="Tokens")
            with gr.Row():
                x0 = gr.Slider(0, 1, value=0.0, step=0.05, label="box x0")
                y0 = gr.Slider(0, 1, value=0.0, step=0.05, label="box y0")
            with gr.Row():
                x1 = gr.Slider(0, 1, value=0.5, step=0.05, label="box x1")
                y1 = gr.Slider(0, 1, value=0.5, step=0.05, label="box y1")
            patch_button = gr.Button("Patch", variant="primary")
        with gr.Column(scale=2):
            patch_plot = Plot(label="Clean vs patched")
            layers_plot = Plot(label="Every layer patched")
            patch_notice = gr.Markdown()
    export_button("Ablate & patch", [ablate_plot, sweep_plot, patch_plot, layers_plot])
    pickers = [source, transformer_id, cnn_id]
    clear_on_change([image, *pickers], [ablate_plot], ablate_notice)
    clear_on_change([image, *pickers], [sweep_plot], sweep_notice)
    clear_on_change([image, *pickers], [patch_plot, layers_plot], patch_notice)
    parts_button.click(parts, pickers, [heads, layers, layer, parts_notice], api_name="poke_parts")
    for changed in pickers:   # another model: its own heads and layers to tick
        changed.change(parts_quietly, pickers, [heads, layers, layer, parts_notice], api_name=False,
                       show_progress="hidden")
    ablate_button.click(ablate, [*pickers, image, heads, layers, typed, mode, reference, labels, k],
                        [ablate_plot, ablate_notice], api_name="poke_ablate", concurrency_limit=2)
    sweep_button.click(sweep, [*pickers, image, target, mode, reference, labels], [sweep_plot, sweep_notice],
                       api_name="poke_sweep", concurrency_limit=2)
    patch_button.click(patch, [*pickers, image, source_image, seed, layer, tokens, x0, y0, x1, y1, labels, k],
                       [patch_plot, layers_plot, patch_notice], api_name="poke_patch", concurrency_limit=2)
