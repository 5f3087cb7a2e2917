"""Patches tab: patch-embedding filters, position-embedding similarity, token similarity and "islands", and the
residual stream, all from one hooked forward (the same session the Attention tab uses)."""
from __future__ import annotations

import math

import gradio as gr

from ui.errors import user_errors
from ui.export import export_button
from ui.inputs import load_vit
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from viz.attention_figures import patch_grid_figure
from viz.attention_session import AttentionSession
from viz.patch_figures import (
    attention_correlation_figure,
    filters_figure,
    patch_pca_figure,
    position_similarity_figure,
    residual_figure,
    token_similarity_figure,
)
from viz.patches import (
    filters_to_rgb_tiles,
    patch_embed_weight,
    patch_filter_components,
    patch_pca_rgb,
    position_similarity,
    token_similarity,
)
from viz.residual import attention_map_correlation, residual_norms

KEY = "patches"
NOT_YET = "Press Analyse first (then click the image to pick a patch)."


def _token_views(session: AttentionSession, layer: int, query: int):
    layer = min(int(layer), session.vit.num_layers - 1)
    tokens = session.stream[f"blocks.{layer}.resid_post"][0]
    similarity = token_similarity(tokens, query)[session.prefix:].reshape(session.grid)
    cell = (0, 0) if query < session.prefix else divmod(query - session.prefix, session.grid[1])
    islands = patch_pca_rgb(tokens[session.prefix:], session.grid)
    return token_similarity_figure(similarity, cell), patch_pca_figure(islands)


@user_errors
def analyse_patches(model_id: str, image, layer: float, request: gr.Request):
    """One hooked forward, then every Patches view."""
    model = load_vit(model_id, image)
    session = AttentionSession(model, image)
    vit = session.vit
    seen = vit.preprocess.unnormalize(session.pixels[0])
    components, explained = patch_filter_components(patch_embed_weight(vit.layout.patch_embed))
    figures = [patch_grid_figure(seen, session.grid, vit.patch_size, vit.prefix_tokens),
               filters_figure(filters_to_rgb_tiles(components), explained)]
    if session.pos_table is not None:
        prefix_rows = vit.layout.pos_embed_prefix_rows
        side = math.isqrt(session.pos_table.shape[0] - prefix_rows)
        figures.append(position_similarity_figure(
            position_similarity(session.pos_table, (side, side), prefix_rows, target_grid=session.grid)))
    else:
        figures.append(None)
    figures += [residual_figure(residual_norms(session.stream, vit.num_layers)),
                attention_correlation_figure(attention_map_correlation([p[None] for p in session.patterns]))]
    state = {"session": session, "query": session.prefix}
    STORE.put(request, KEY, state)
    return (gr.update(maximum=vit.num_layers - 1), *figures, *_token_views(session, layer, state["query"]))


@user_errors
def pick_patch(layer: float, event: gr.SelectData, request: gr.Request):
    """Click on the shared image: that patch becomes the query of the token-similarity map (nothing before
    Analyse)."""
    state = STORE.peek(request, KEY)
    if state is None:
        return gr.skip(), gr.skip()
    state["query"] = state["session"].token_at_source_pixel(*event.index)
    return _token_views(state["session"], layer, state["query"])


@user_errors
def change_layer(layer: float, request: gr.Request):
    state = STORE.get(request, KEY, NOT_YET)
    return _token_views(state["session"], layer, state["query"])


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
