"""Attention tab: one hooked forward per image, then every view is read from the stored subject.

The handlers bind widgets to the registered views (viz.views): they call a view and place its named figures.
"""
from __future__ import annotations

import gradio as gr

from ui.errors import user_errors
from ui.export import export_button
from ui.inputs import load_vit
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from viz.attention import FUSIONS
from viz.views import Subject, run_view

HEAD_CHOICES = list(FUSIONS)
KEY = "attention"
NOT_YET = "Press Analyse first (then click the image to pick a patch)."


def _views(state: dict, layer: int, head: str, temperature: float):
    subject, query = state["subject"], state["query"]
    layer = int(layer)
    chosen = run_view("attention.query", subject, layer=layer, head=head, query=query)
    heads = run_view("attention.heads", subject, layer=layer, query=query)
    steps = run_view("attention.steps", subject, layer=layer, head=head, query=query, temperature=float(temperature))
    return chosen["overlay"], heads["heads"], steps["steps"], chosen["query_info"]


@user_errors
def analyse(model_id: str, image, layer: float, head: str, temperature: float, request: gr.Request):
    """Run the one hooked forward for this image and draw every view."""
    subject = Subject(load_vit(model_id, image), image)
    session = subject.attention()
    state = {"subject": subject, "query": 0}
    STORE.put(request, KEY, state)
    heads = [f"head {i}" for i in range(session.vit.num_heads)] + HEAD_CHOICES
    head = head if head in heads else "mean"
    last = session.vit.num_layers - 1
    return (gr.update(maximum=last, value=min(int(layer), last)), gr.update(choices=heads, value=head),
            run_view("patches.grid", subject)["grid"], *_views(state, min(int(layer), last), head, temperature))


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
    state["query"] = state["subject"].attention().token_at_source_pixel(x, y)
    return _views(state, layer, head, temperature)


@user_errors
def reset_query(layer: float, head: str, temperature: float, request: gr.Request):
    state = STORE.get(request, KEY, NOT_YET)
    state["query"] = 0
    return _views(state, layer, head, temperature)


def _subject(request: gr.Request) -> Subject:
    return STORE.get(request, KEY, NOT_YET)["subject"]


@user_errors
def rollout_view(fusion: str, discard: float, request: gr.Request):
    """Attention rollout of the readout (no forward: the stored patterns)."""
    return run_view("attention.rollout", _subject(request), fusion=fusion, discard=float(discard))["rollout"]


@user_errors
def relevancy_view(target: str, request: gr.Request):
    """Chefer relevancy for a prompt (text models) or a class name / index (default: the top output), plus the
    prompt's token relevance."""
    subject = _subject(request)
    target = (target or "").strip()
    if not target and subject.model.has_text:
        raise gr.Error("Type a prompt: relevancy explains the image's similarity with it.", print_exception=False)
    figures = run_view("attention.relevancy", subject, target=target or None)
    return figures["relevancy"], figures.get("token_relevance")


@user_errors
def zero_shot_view(prompts_text: str, request: gr.Request):
    """Which prompt each final patch token matches (text models only)."""
    subject = _subject(request)
    if not subject.model.has_text:
        raise ValueError("The per-patch zero-shot map needs a model with a text tower (CLIP).")
    prompts = [p.strip() for p in (prompts_text or "").replace(",", "\n").splitlines() if p.strip()]
    return run_view("attention.patch_zero_shot", subject, prompts=prompts)["patch_zero_shot"]


@user_errors
def mean_distance_view(model_id: str):
    """Mean attention distance per head and layer over 16 procedural images."""
    return run_view("attention.mean_distance", Subject(load_vit(model_id)), images=16)["mean_distance"]


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
            target = gr.Textbox(label="Relevancy target: prompt (CLIP), class name or output index (empty: the "
                                      "top output)", value="a red triangle")
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
