"""Patches tab: patch-embedding filters, position-embedding similarity, token similarity and "islands", and the
residual stream, all from one hooked forward (the same session the Attention tab uses)."""
from __future__ import annotations

import gradio as gr

from ui.errors import user_errors
from ui.export import export_button
from ui.inputs import load_vit
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from viz.views import VIEWS, Subject, run_view

KEY = "patches"
NOT_YET = "Press Analyse first (then click the image to pick a patch)."


def _token_views(subject: Subject, layer: int, query: int):
    similarity = run_view("patches.token_similarity", subject, layer=int(layer), query=query)["similarity"]
    return similarity, run_view("patches.islands", subject, layer=int(layer))["islands"]


def _figure(name: str, subject: Subject, key: str):
    """The view's figure, or None where the view does not apply to this model (e.g. no position table)."""
    return run_view(name, subject)[key] if VIEWS[name].applies(subject.model) else None


@user_errors
def analyse_patches(model_id: str, image, layer: float, request: gr.Request):
    """One hooked forward, then every Patches view."""
    subject = Subject(load_vit(model_id, image, "The Patches views"), image)
    session = subject.attention()
    figures = [_figure("patches.grid", subject, "grid"), _figure("patches.filters", subject, "filters"),
               _figure("patches.positions", subject, "positions"), _figure("patches.residual", subject, "residual"),
               _figure("patches.attention_correlation", subject, "correlation")]
    state = {"subject": subject, "query": session.prefix}
    STORE.put(request, KEY, state)
    return (gr.update(maximum=session.vit.num_layers - 1), *figures, *_token_views(subject, layer, state["query"]))


@user_errors
def pick_patch(layer: float, event: gr.SelectData, request: gr.Request):
    """Click on the shared image: that patch becomes the query of the token-similarity map (nothing before
    Analyse)."""
    state = STORE.peek(request, KEY)
    if state is None:
        return gr.skip(), gr.skip()
    state["query"] = state["subject"].attention().token_at_source_pixel(*event.index)
    return _token_views(state["subject"], layer, state["query"])


@user_errors
def change_layer(layer: float, request: gr.Request):
    state = STORE.get(request, KEY, NOT_YET)
    return _token_views(state["subject"], layer, state["query"])


def build_patches_tab(shared: SharedInputs) -> None:
    gr.Markdown("How a ViT cuts the image into patches and what it does with them: the first layer is a convolution "
                "with kernel = stride = patch size (its filters' principal components below), each position has a "
                "learned (or fixed) embedding (cosine similarity of each position with all others), and tokens at "
                "a layer can be compared (click a patch) or mapped to colours by PCA (\"islands\").")
    with gr.Row():
        with gr.Column(scale=1):
            model_id, image = shared.pickers["transformer"], shared.image
            analyse = gr.Button("Analyse", variant="primary")
            layer = gr.Slider(0, 11, value=0, step=1, label="Layer for token similarity and islands")
        with gr.Column(scale=2):
            grid_plot = gr.Plot(label="Patch grid")
            filters = gr.Plot(label="Patch-embedding filters (principal components)")
    with gr.Row():
        positions = gr.Plot(label="Position-embedding similarity")
        similarity = gr.Plot(label="Token similarity to the clicked patch")
        islands = gr.Plot(label="Patch tokens, PCA to RGB")
    with gr.Row():
        residual = gr.Plot(label="Residual stream norms")
        correlation = gr.Plot(label="Attention-map correlation across layers")
    export_button("Patches", [grid_plot, filters, positions, similarity, islands, residual, correlation])
    analyse.click(analyse_patches, [model_id, image, layer],
                  [layer, grid_plot, filters, positions, residual, correlation, similarity, islands],
                  api_name="patches_analyse", concurrency_limit=2)
    image.select(pick_patch, layer, [similarity, islands], api_name=False)
    layer.change(change_layer, layer, [similarity, islands], api_name="patches_layer")
