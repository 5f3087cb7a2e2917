"""Attention tab: one hooked forward per image, then every view is read from the stored session."""
from __future__ import annotations

import gradio as gr

from models import shapes
from ui.errors import user_errors
from ui.export import export_button
from ui.inputs import load_vit
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from viz.attention import mean_distance_by_layer
from viz.attention_figures import (
    head_grid_figure,
    mean_distance_figure,
    overlay_figure,
    patch_grid_figure,
    patch_zero_shot_figure,
    steps_figure,
    token_relevance_figure,
)
from viz.attention_session import AttentionSession

HEAD_CHOICES = ["mean", "max", "min"]
KEY = "attention"
NOT_YET = "Press Analyse first (then click the image to pick a patch)."


def _token_label(session: AttentionSession, token: int) -> str:
    if token < session.prefix:
        return session.vit.prefix_tokens[token].upper()
    row, col = divmod(token - session.prefix, session.grid[1])
    return f"patch ({row}, {col})"


def _head(head: str, heads: int) -> int | str:
    """"mean" / "max" / "min", or the index from "head N" (checked against the model's head count)."""
    if head in HEAD_CHOICES:
        return head
    try:
        index = int(str(head).split()[-1])
    except (ValueError, IndexError):
        raise ValueError(f"Head {head!r}: use 'head N' or one of {HEAD_CHOICES}.") from None
    if not 0 <= index < heads:
        raise ValueError(f"Head {index} does not exist: this model has heads 0 to {heads - 1}.")
    return index


def _views(state: dict, layer: int, head: str, temperature: float):
    session, query = state["session"], state["query"]
    image = session.vit.preprocess.unnormalize(session.pixels[0])
    layer = min(int(layer), session.vit.num_layers - 1)
    cell = None if query < session.prefix else divmod(query - session.prefix, session.grid[1])
    label = _token_label(session, query)
    chosen = _head(head, session.vit.num_heads)
    overlay = overlay_figure(image, session.query_map(layer, chosen, query),
                             f"layer {layer}, head {head}: where {label} looks", query_cell=cell)
    heads = head_grid_figure(session.all_heads(layer, query), f"layer {layer}: every head, query {label}")
    step_head = 0 if isinstance(chosen, str) else chosen
    labels = [_token_label(session, t) for t in range(session.num_tokens)]
    steps = steps_figure(session.steps(layer, step_head, query, float(temperature)), labels)
    return overlay, heads, steps, f"Query: **{label}** (token {query}). Click the image to pick a patch."


@user_errors
def analyse(model_id: str, image, layer: float, head: str, temperature: float, request: gr.Request):
    """Run the one hooked forward for this image and draw every view."""
    model = load_vit(model_id, image)
    session = AttentionSession(model, image)
    state = {"session": session, "query": 0}
    STORE.put(request, KEY, state)
    heads = [f"head {i}" for i in range(session.vit.num_heads)] + HEAD_CHOICES
    head = head if head in heads else "mean"
    grid_fig = patch_grid_figure(session.vit.preprocess.unnormalize(session.pixels[0]), session.grid,
                                 session.vit.patch_size, session.vit.prefix_tokens)
    return (gr.update(maximum=session.vit.num_layers - 1, value=min(int(layer), session.vit.num_layers - 1)),
            gr.update(choices=heads, value=head), grid_fig, *_views(state, layer, head, temperature))


@user_errors
def update_views(layer: float, head: str, temperature: float, request: gr.Request):
    """Layer, head or temperature changed: redraw from the stored session (no forward)."""
    return _views(STORE.get(request, KEY, NOT_YET), layer, head, temperature)


@user_errors
def pick_query(layer: float, head: str, temperature: float, event: gr.SelectData, request: gr.Request):
    """A click on the shared image picks the patch under the pointer as the query (nothing before Analyse)."""
    state = STORE.peek(request, KEY)
    if state is None:
        return [gr.skip()] * 4
    x, y = event.index
    state["query"] = state["session"].token_at_source_pixel(x, y)
    return _views(state, layer, head, temperature)


@user_errors
def reset_query(layer: float, head: str, temperature: float, request: gr.Request):
    state = STORE.get(request, KEY, NOT_YET)
    state["query"] = 0
    return _views(state, layer, head, temperature)


def _session(request: gr.Request) -> AttentionSession:
    return STORE.get(request, KEY, NOT_YET)["session"]


def _seen(session: AttentionSession):
    return session.vit.preprocess.unnormalize(session.pixels[0])


@user_errors
def rollout_view(fusion: str, discard: float, request: gr.Request):
    """Attention rollout of the CLS token (no forward: the stored patterns)."""
    session = _session(request)
    heat = session.rollout_map(fusion, float(discard))
    return overlay_figure(_seen(session), heat, f"Rollout ({fusion} over heads, discard {float(discard):.0%})")


@user_errors
def relevancy_view(target: str, request: gr.Request):
    """Chefer relevancy for a prompt (CLIP) or a class name / index (classifiers), plus text-token relevance."""
    session = _session(request)
    target = (target or "").strip()
    if not target:
        raise gr.Error("Type a prompt (CLIP) or a class name (classifier).", print_exception=False)
    model = session.model
    if model.family == "clip":
        heat = session.relevancy(target)
        tokens, scores = session.token_relevance(target)
        return (overlay_figure(_seen(session), heat, f"Relevancy for “{target}”"),
                token_relevance_figure(tokens, scores))
    names = session.vit.class_names
    index = names.index(target) if target in names else (int(target) if target.isdigit() else None)
    if index is None or not 0 <= index < max(len(names), 1):
        raise gr.Error(f"Unknown class {target!r}; e.g. {', '.join(names[:5])}", print_exception=False)
    heat = session.relevancy(index)
    return overlay_figure(_seen(session), heat, f"Relevancy for class {names[index]}"), None


@user_errors
def zero_shot_view(prompts_text: str, request: gr.Request):
    """Which prompt each final patch token matches (CLIP only)."""
    session = _session(request)
    prompts = [p.strip() for p in (prompts_text or "").replace(",", "\n").splitlines() if p.strip()]
    return patch_zero_shot_figure(_seen(session), session.patch_zero_shot(prompts), prompts)


@user_errors
def mean_distance_view(model_id: str):
    """Mean attention distance per head and layer over 16 procedural images."""
    model = load_vit(model_id)
    images = [e.image for e in shapes.make_dataset(16, seed=7)]
    return mean_distance_figure(mean_distance_by_layer(model, model.pixels(images)))


def build_attention_tab(shared: SharedInputs) -> None:
    gr.Markdown("Attention of one query token (CLS, or any patch: click the image), per head or fused, with the "
                "computation of one row step by step. Brighter = more attention. Everything comes from one hooked "
                "forward; changing layer, head or query does not run the model again.")
    with gr.Row():
        with gr.Column(scale=1):
            model_id, image = shared.pickers["transformer"], shared.image
            analyse_button = gr.Button("Analyse", variant="primary")
            layer = gr.Slider(0, 11, value=0, step=1, label="Layer")
            head = gr.Dropdown(HEAD_CHOICES, value="mean", label="Head (or fusion)", allow_custom_value=True)
            temperature = gr.Slider(0.01, 10.0, value=1.0, step=0.01, label="Softmax temperature (step-by-step)")
            reset = gr.Button("Query: CLS")
            query_info = gr.Markdown()
        with gr.Column(scale=2):
            overlay = gr.Plot(label="Attention of the query")
            heads = gr.Plot(label="All heads")
    with gr.Row():
        grid_plot = gr.Plot(label="Patch grid")
        steps = gr.Plot(label="Step by step: scores, softmax")
    gr.Markdown("**Rollout** multiplies (attention + identity) through the layers: what the CLS token draws on. "
                "**Relevancy** (Chefer et al.) weights attention by its gradient for a prompt or class. "
                "The **per-patch zero-shot** map pushes each final patch token through the model's own final norm "
                "and projection and names the prompt it matches best.")
    with gr.Row():
        with gr.Column(scale=1):
            fusion = gr.Dropdown(HEAD_CHOICES, value="mean", label="Rollout head fusion")
            discard = gr.Slider(0.0, 0.95, value=0.0, step=0.05, label="Rollout discard ratio (CLS never)")
            rollout_button = gr.Button("Rollout")
            target = gr.Textbox(label="Relevancy target: prompt (CLIP) or class name", value="a red triangle")
            relevancy_button = gr.Button("Relevancy")
            prompts = gr.Textbox(label="Prompts for the per-patch map (one per line or comma-separated)",
                                 value="a red triangle, an orange circle, a background", lines=3)
            zero_shot_button = gr.Button("Per-patch zero-shot")
            distance_button = gr.Button("Mean attention distance (16 images)")
        with gr.Column(scale=2):
            rollout_plot = gr.Plot(label="Rollout")
            relevancy_plot = gr.Plot(label="Relevancy")
            token_plot = gr.Plot(label="Prompt token relevance")
            zero_shot_plot = gr.Plot(label="Per-patch zero-shot")
            distance_plot = gr.Plot(label="Mean attention distance")
    export_button("Attention", [overlay, heads, grid_plot, steps, rollout_plot, relevancy_plot, token_plot,
                                zero_shot_plot, distance_plot])
    views = [overlay, heads, steps, query_info]
    controls = [layer, head, temperature]
    analyse_button.click(analyse, [model_id, image, *controls], [layer, head, grid_plot, *views],
                         api_name="attention_analyse", concurrency_limit=2)
    for control in controls:
        control.change(update_views, controls, views, api_name="attention_view" if control is layer else False)
    image.select(pick_query, controls, views, api_name=False)
    reset.click(reset_query, controls, views, api_name=False)
    rollout_button.click(rollout_view, [fusion, discard], rollout_plot, api_name="attention_rollout")
    for control in (fusion, discard):
        control.change(rollout_view, [fusion, discard], rollout_plot, api_name=False)
    relevancy_button.click(relevancy_view, target, [relevancy_plot, token_plot],
                           api_name="attention_relevancy", concurrency_limit=2)
    zero_shot_button.click(zero_shot_view, prompts, zero_shot_plot, api_name="attention_zero_shot")
    distance_button.click(mean_distance_view, model_id, distance_plot, api_name="mean_attention_distance",
                          concurrency_limit=2)
