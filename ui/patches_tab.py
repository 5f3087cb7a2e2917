"""Patches tab: patch-embedding filters, position-embedding similarity, token similarity and "islands", and the
residual stream, all from one hooked forward (the same session the Attention tab uses)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.errors import figures_only, user_errors
from ui.export import Plot, export_button
from ui.figure_layout import COLUMN, WIDE
from ui.inputs import load_vit
from ui.plotly_html import PlotlyFigure, clicked_point
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from ui.staleness import clear_when_stale, inputs_signature
from ui.url_state import link_params
from viz.figure_clicks import heatmap_cell, image_cell
from viz.reproduce import reproduce_code
from viz.views import VIEWS, Subject, run_view

KEY = "patches"
NOT_YET = "Press Analyse first (then click the image to pick a patch)."
FIGURES = (("patches.grid", "grid"), ("patches.filters", "filters"), ("patches.positions", "positions"),
           ("patches.residual", "residual"), ("patches.attention_correlation", "correlation"))


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
    figures = [_figure(name, subject, key) for name, key in FIGURES]
    state = {"subject": subject, "query": session.prefix, "model_id": model_id,
             "inputs": inputs_signature(model_id, image)}
    STORE.put(request, KEY, state)
    notes = run_view("patches.grid", subject)["notes"]   # what the model knows (a bundled model, a photograph)
    return (gr.update(maximum=session.vit.num_layers - 1), *figures, *_token_views(subject, layer, state["query"]),
            notes)


@user_errors
def pick_patch(layer: float, event: gr.SelectData, request: gr.Request):
    """Click on the shared image: that patch becomes the query of the token-similarity map (nothing before
    Analyse)."""
    state = STORE.peek(request, KEY)
    if state is None:
        return gr.skip(), gr.skip(), gr.skip()
    return _set_query(state, state["subject"].attention().token_at_source_pixel(*event.index), layer)


def _clicked_query(layer: float, event: gr.EventData, request: gr.Request, cell_of):
    """The patch a click on one of the tab's maps lands on (``cell_of(session, x, y)`` -> (row, col)) becomes the
    query (nothing before Analyse)."""
    state, point = STORE.peek(request, KEY), clicked_point(event)
    if state is None or point is None:
        return gr.skip(), gr.skip(), gr.skip()
    session = state["subject"].attention()
    return _set_query(state, session.token_of_patch(*cell_of(session, *point)), layer)


@user_errors
def click_grid(layer: float, event: gr.EventData, request: gr.Request):
    """A click on the patch grid (the image as the model saw it, in its pixels) picks that patch as the query."""
    return _clicked_query(layer, event, request,
                          lambda session, x, y: image_cell(x, y, tuple(session.pixels.shape[-2:]), session.grid))


@user_errors
def click_similarity(layer: float, event: gr.EventData, request: gr.Request):
    """A click on the token-similarity map (one cell per patch) makes that patch the query."""
    return _clicked_query(layer, event, request, lambda session, x, y: heatmap_cell(x, y, session.grid))


def _set_query(state: dict, query: int, layer: float):
    state["query"] = int(query)
    return (*_token_views(state["subject"], layer, state["query"]), state["query"])


@user_errors
def set_query(layer: float, query: float, request: gr.Request):
    """The query token typed in (or restored from a shared link)."""
    state = STORE.get(request, KEY, NOT_YET)
    session = state["subject"].attention()
    if query is None or not 0 <= int(query) < session.num_tokens:
        raise gr.Error(f"Token {query} does not exist: this model has tokens 0 to {session.num_tokens - 1}.",
                       print_exception=False)
    return _set_query(state, int(query), layer)


def query_of(request: gr.Request) -> int | None:
    """The stored query token (None before Analyse)."""
    state = STORE.peek(request, KEY)
    return None if state is None else int(state["query"])


@user_errors
def change_layer(layer: float, request: gr.Request):
    state = STORE.get(request, KEY, NOT_YET)
    return _token_views(state["subject"], layer, state["query"])


@user_errors
def copy_python(source: str, layer: float, request: gr.Request) -> str:
    """The notebook code that reproduces this tab's figures as drawn now."""
    state = STORE.get(request, KEY, NOT_YET)
    model = state["subject"].model
    calls = [(name, {}) for name, _ in FIGURES if VIEWS[name].applies(model)]
    calls += [("patches.token_similarity", {"layer": int(layer), "query": int(state["query"])}),
              ("patches.islands", {"layer": int(layer)})]
    return reproduce_code(state["model_id"], source, calls, show="similarity")


@dataclass
class PatchesTab:
    """The Patches tab's controls a shared link restores, and its drawing when a link opens it."""

    layer: gr.Slider
    query: gr.Number
    draw: object

    def url_fields(self) -> dict:
        return {"patch_layer": self.layer, "patch_query": self.query}


def build_patches_tab(shared: SharedInputs) -> PatchesTab:
    model_id, image = shared.pickers["transformer"], shared.image
    stale_note = gr.Markdown(elem_classes=["cs-stale"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            gr.Markdown("How a ViT cuts the image into patches and what it does with them: the first layer is a "
                        "convolution with kernel = stride = patch size, each position has a learned (or fixed) "
                        "embedding, and tokens at a layer can be compared (**click a patch of the grid, the "
                        "similarity map or the image**) or mapped to colours by PCA (\"islands\").")
            analyse = gr.Button("Analyse", variant="primary")
            layer = gr.Slider(0, 11, value=0, step=1, label="Layer for token similarity and islands")
            query = gr.Number(None, precision=0, minimum=0, label="Query token (first patch by default)",
                              elem_id="cs-patch-query")
            copy_button = gr.Button("Copy as Python", size="sm")
            domain = gr.Markdown()
        with gr.Column(scale=2, min_width=320):
            grid_plot = PlotlyFigure("Patch grid (click a patch)", title_chars=COLUMN, elem_id="cs-patch-grid")
        with gr.Column(scale=2, min_width=320):
            similarity = PlotlyFigure("Token similarity to the query patch (click a patch)", title_chars=COLUMN,
                                      elem_id="cs-patch-similarity")
    code = gr.Code(language="python", label="Python that draws these figures in a notebook", visible=False,
                   interactive=False)
    with gr.Row(equal_height=False):
        islands = Plot(label="Patch tokens, PCA to RGB")
        filters = Plot(label="Patch-embedding filters (principal components)")
    with gr.Row(equal_height=False):
        positions = Plot(label="Position-embedding similarity")
        residual = Plot(label="Residual stream norms")
    with gr.Row(equal_height=False):
        correlation = Plot(label="Attention-map correlation across layers", title_chars=WIDE)
    figures = [grid_plot, filters, positions, similarity, islands, residual, correlation]
    export_button("Patches", figures)
    outputs = [layer, grid_plot, filters, positions, residual, correlation, similarity, islands, domain]
    token_outputs = [similarity, islands, query]

    def draw(after):
        """When a shared link opens this tab: Analyse after ``after`` (the page load), then the link's query."""
        @user_errors
        def analyse_if_opened(model: str, picture, layer_value: float, request: gr.Request):
            if link_params(request).get("tab") != "patches":
                return [gr.skip()] * len(outputs)
            return analyse_patches(model, picture, layer_value, request)

        @user_errors
        def query_if_any(layer_value: float, query_value: float, request: gr.Request):
            state = STORE.peek(request, KEY)
            if state is None or query_value is None or link_params(request).get("tab") != "patches":
                return [gr.skip()] * len(token_outputs)
            return set_query(layer_value, query_value, request)

        after.then(analyse_if_opened, [model_id, image, layer], outputs, api_name=False,
                   show_progress_on=figures_only(outputs)).success(
            query_if_any, [layer, query], token_outputs, api_name=False)

    analysed = analyse.click(analyse_patches, [model_id, image, layer], outputs, api_name="patches_analyse",
                             concurrency_limit=2, show_progress_on=figures_only(outputs))
    analysed.success(lambda: "", None, stale_note, api_name=False)
    analysed.success(query_of, None, query, api_name=False)
    image.select(pick_patch, layer, token_outputs, api_name=False)
    grid_plot.click(click_grid, layer, token_outputs, api_name=False)
    similarity.click(click_similarity, layer, token_outputs, api_name=False)
    query.submit(set_query, [layer, query], token_outputs, api_name="patches_query")
    layer.change(change_layer, layer, [similarity, islands], api_name="patches_layer")
    copy_button.click(copy_python, [shared.source, layer], code, api_name="patches_copy_python").success(
        lambda: gr.update(visible=True), None, code, api_name=False)

    clear_when_stale(KEY, model_id, image, stale_note, figures, texts=[domain])
    return PatchesTab(layer, query, draw)
