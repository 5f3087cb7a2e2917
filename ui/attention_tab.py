"""Attention tab: one hooked forward per image, then every view is read from the stored subject.

Models with one token grid (ViT, CLIP-ViT) get the query / heads / step-by-step / rollout / relevancy views; models
with a grid per stage (Swin, MaxViT, MobileCLIP / FastViT hybrids) get the "Window attention per stage" section
(viz.hierarchical). The handlers bind widgets to the registered views (viz.views): they call a view and place its
named figures.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.errors import figures_only, user_errors
from ui.export import Plot, export_button
from ui.figure_layout import COLUMN, WIDE
from ui.inputs import load_attention_model, load_vit, needs_token_grid
from ui.plotly_html import PlotlyFigure, clicked_point
from ui.sessions import STORE
from ui.shared_inputs import SharedInputs
from ui.staleness import STALE, inputs_signature, is_current
from viz.attention import FUSIONS
from viz.figure_clicks import head_grid_columns, image_cell, mosaic_cell
from viz.hierarchical import has_stage_attention
from viz.reproduce import reproduce_code
from viz.views import Subject, has_token_grid, run_view

HEAD_CHOICES = list(FUSIONS)
KEY = "attention"
NOT_YET = "Press Analyse first (then click the attention map, the patch grid or the image to pick a patch)."
WINDOW_KEY = "attention.windows"
WINDOW_NOT_YET = ("Press Analyse with a model that has attention per stage (Swin, MaxViT, MobileCLIP) first; then "
                  "click the image to pick the query cell.")
VIT_VIEWS = "The query, heads, step-by-step, rollout, relevancy, per-patch zero-shot and mean-distance views"


def _views(state: dict, layer: int, head: str, temperature: float):
    subject, query = state["subject"], state["query"]
    layer = int(layer)
    chosen = run_view("attention.query", subject, layer=layer, head=head, query=query)
    heads = run_view("attention.heads", subject, layer=layer, query=query)
    steps = run_view("attention.steps", subject, layer=layer, head=head, query=query, temperature=float(temperature))
    return chosen["overlay"], heads["heads"], steps["steps"], chosen["query_info"]


def _vit_state(request: gr.Request) -> dict:
    """The stored state of the token-grid views, refused with a clear message for a model without one grid."""
    state = STORE.get(request, KEY, NOT_YET)
    if not has_token_grid(state["subject"].model):
        raise gr.Error(needs_token_grid(state["model_id"], state["subject"].model, VIT_VIEWS),
                       print_exception=False)
    return state


@user_errors
def analyse(model_id: str, image, layer: float, head: str, temperature: float, request: gr.Request):
    """Run the one hooked forward for this image and draw every view (a model with a grid per stage: say that these
    views need one token grid; its window attention is drawn by :func:`analyse_windows`)."""
    model = load_attention_model(model_id, image)
    subject = Subject(model, image)
    state = {"subject": subject, "query": 0, "model_id": model_id, "inputs": inputs_signature(model_id, image)}
    STORE.put(request, KEY, state)
    if not has_token_grid(model):
        return (gr.update(), gr.update(), None, None, None, None,
                f"**{model_id} attends on a grid per stage** (window or per-stage attention), not on a single token "
                f"grid. {VIT_VIEWS} need a single token grid (a ViT, or a CLIP with a ViT image tower): its "
                "attention is in the \"Window attention per stage\" section below.")
    session = subject.attention()
    heads = [f"head {i}" for i in range(session.vit.num_heads)] + HEAD_CHOICES
    head = head if head in heads else "mean"
    last = session.vit.num_layers - 1
    return (gr.update(maximum=last, value=min(int(layer), last)), gr.update(choices=heads, value=head),
            run_view("patches.grid", subject)["grid"], *_views(state, min(int(layer), last), head, temperature))


@user_errors
def update_views(layer: float, head: str, temperature: float, request: gr.Request):
    """Layer, head or temperature changed: redraw from the stored session (no forward)."""
    return _views(_vit_state(request), layer, head, temperature)


def _query_views(state: dict, query: int, layer: float, head: str, temperature: float):
    """Make ``query`` the stored query token and redraw its views; the query box shows it."""
    state["query"] = _checked_query(state, query)
    return (*_views(state, layer, head, temperature), state["query"])


def _checked_query(state: dict, query) -> int:
    session = state["subject"].attention()
    try:
        query = int(query)
    except (TypeError, ValueError):
        raise gr.Error(f"Query token {query!r}: type a token number.", print_exception=False) from None
    if not 0 <= query < session.num_tokens:
        raise gr.Error(f"Token {query} does not exist: this model has tokens 0 to {session.num_tokens - 1}.",
                       print_exception=False)
    return query


@user_errors
def pick_query(layer: float, head: str, temperature: float, event: gr.SelectData, request: gr.Request):
    """A click on the shared image picks the patch under the pointer as the query (nothing before Analyse)."""
    state = STORE.peek(request, KEY)
    if state is None or not has_token_grid(state["subject"].model):
        return [gr.skip()] * 5
    x, y = event.index
    return _query_views(state, state["subject"].attention().token_at_source_pixel(x, y), layer, head, temperature)


@user_errors
def click_patch(layer: float, head: str, temperature: float, event: gr.EventData, request: gr.Request):
    """A click on the attention overlay or the patch grid (both drawn over the image the model saw) picks the
    patch under it as the query."""
    state, point = STORE.peek(request, KEY), clicked_point(event)
    if state is None or point is None or not has_token_grid(state["subject"].model):
        return [gr.skip()] * 5
    session = state["subject"].attention()
    row, col = image_cell(*point, tuple(session.pixels.shape[-2:]), session.grid)
    return _query_views(state, session.token_of_patch(row, col), layer, head, temperature)


@user_errors
def click_head(event: gr.EventData, request: gr.Request):
    """A click on the every-head mosaic picks that head (the head control then redraws every view)."""
    state, point = STORE.peek(request, KEY), clicked_point(event)
    if state is None or point is None or not has_token_grid(state["subject"].model):
        return gr.skip()
    session = state["subject"].attention()
    heads = session.vit.num_heads
    cell = mosaic_cell(*point, session.grid, heads, head_grid_columns(heads))
    return gr.skip() if cell is None else gr.update(value=f"head {cell[0]}")


@user_errors
def overview_view(request: gr.Request):
    """Every layer x head for the stored query (no forward: the stored patterns)."""
    state = _vit_state(request)
    return run_view("attention.overview", state["subject"], query=int(state["query"]))["overview"]


@user_errors
def click_overview(event: gr.EventData, request: gr.Request):
    """A click on the every-layer-x-head overview picks that layer and head (the controls then redraw the views)."""
    state, point = STORE.peek(request, KEY), clicked_point(event)
    if state is None or point is None or not has_token_grid(state["subject"].model):
        return gr.skip(), gr.skip()
    session = state["subject"].attention()
    heads = session.vit.num_heads
    cell = mosaic_cell(*point, session.grid, session.vit.num_layers * heads, heads)
    if cell is None:
        return gr.skip(), gr.skip()
    layer, head = divmod(cell[0], heads)
    return gr.update(value=layer), gr.update(value=f"head {head}")


@user_errors
def set_query(layer: float, head: str, temperature: float, query: float, request: gr.Request):
    """The query token typed in (or restored from a shared link): redraw its views."""
    return _query_views(_vit_state(request), query, layer, head, temperature)


@user_errors
def reset_query(layer: float, head: str, temperature: float, request: gr.Request):
    return _query_views(_vit_state(request), 0, layer, head, temperature)


def query_of(request: gr.Request) -> int:
    """The stored query token (0 before Analyse)."""
    state = STORE.peek(request, KEY)
    return 0 if state is None else int(state["query"])


@user_errors
def copy_python(model_id: str, source: str, layer: float, head: str, temperature: float, fusion: str,
                discard: float, request: gr.Request) -> str:
    """The notebook code that reproduces the query, heads, step-by-step and rollout figures as drawn now."""
    state = _vit_state(request)
    query = int(state["query"])
    calls = [("attention.query", {"layer": int(layer), "head": head, "query": query}),
             ("attention.heads", {"layer": int(layer), "query": query}),
             ("attention.steps", {"layer": int(layer), "head": head, "query": query,
                                  "temperature": float(temperature)}),
             ("attention.rollout", {"fusion": fusion, "discard": float(discard)})]
    return reproduce_code(state["model_id"], source, calls, show="overlay")


def _subject(request: gr.Request) -> Subject:
    return _vit_state(request)["subject"]


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
    model = load_vit(model_id, what="Mean attention distance per head and layer")
    return run_view("attention.mean_distance", Subject(model), images=16)["mean_distance"]


# -- window attention per stage (hierarchical towers) --------------------------------------------------------------
def _stage(value) -> int:
    """The stage dropdown's value (an index, or a typed "stage N")."""
    text = str(value if value is not None else "").strip().removeprefix("stage").strip()
    if not text.lstrip("-").isdigit():
        raise gr.Error(f"Pick a stage from the list (not {value!r}).", print_exception=False)
    return int(text)


def _window_state(request: gr.Request) -> dict:
    state = STORE.get(request, WINDOW_KEY, WINDOW_NOT_YET)
    if state.get("subject") is None:
        raise gr.Error(state["why"], print_exception=False)
    return state


def _window_draw(state: dict, stage, block: float, head: str, row: float | None = None, col: float | None = None,
                 fit: bool = False):
    """Block, head, row and col updates, the overlay, the heads figure and the caption for the stored subject.

    Without ``row`` / ``col`` the query is the stored point (the cell under it at this stage's resolution; none:
    the grid's centre). ``fit``: a block or head the stage lacks falls back to its last block / the mean."""
    subject, stage = state["subject"], _stage(stage)
    params = {"stage": stage, "block": int(block), "head": head}
    if fit:
        stages = run_view("hierarchical.stages", subject)
        if stage in stages["stage_blocks"]:
            params["block"] = min(max(int(block), 0), stages["stage_blocks"][stage] - 1)
            heads = [f"head {i}" for i in range(stages["stage_heads"][stage])]
            params["head"] = head if head in HEAD_CHOICES + heads else "mean"
    if row is None or state.get("cell") == (stage, int(row), int(col)):
        params["pixel"] = state["point"]   # the same cell as drawn last: keep the exact point (e.g. a click)
    else:
        params.update(row=int(row), col=int(col))
    chosen = run_view("hierarchical.window_query", subject, **params)
    query = chosen["query"]
    if "pixel" not in params:
        state["point"] = query["pixel"]
    state["cell"] = (query["stage"], query["row"], query["col"])
    heads = run_view("hierarchical.window_heads", subject, stage=query["stage"], block=query["block"],
                     row=query["row"], col=query["col"])["heads"]
    height, width = query["grid"]
    head_choices = HEAD_CHOICES + [f"head {i}" for i in range(query["heads"])]
    return (gr.update(maximum=max(query["blocks"] - 1, 1), value=query["block"]),
            gr.update(choices=head_choices, value=params["head"]),
            gr.update(maximum=max(height - 1, 1), value=query["row"]),
            gr.update(maximum=max(width - 1, 1), value=query["col"]),
            chosen["overlay"], heads, chosen["query_info"])


@user_errors
def analyse_windows(model_id: str, image, stage, block: float, head: str, request: gr.Request):
    """One hooked forward of a model with attention per stage: the stages table, the stage choices, and the window
    attention of the query cell (the grid's centre) at the chosen stage and block."""
    model = load_attention_model(model_id, image)
    if not has_stage_attention(model):
        why = (f"{model_id} attends over one token grid (a ViT): its attention is in the views above. This section "
               "is for models with attention per stage (Swin, MaxViT, MobileCLIP / FastViT hybrids).")
        STORE.put(request, WINDOW_KEY, {"subject": None, "why": why})
        return (gr.update(choices=[], value=None), *[gr.update()] * 4, None, None, why, None)
    subject = Subject(model, image)
    stages = run_view("hierarchical.stages", subject)
    choices = stages["stage_choices"]
    chosen = _stage(stage) if stage not in (None, "") else choices[0]
    chosen = chosen if chosen in choices else choices[0]
    state = {"subject": subject, "point": None, "cell": None, "inputs": inputs_signature(model_id, image)}
    STORE.put(request, WINDOW_KEY, state)
    return (gr.update(choices=[(f"stage {s}", s) for s in choices], value=chosen),
            *_window_draw(state, chosen, block, head, fit=True), stages["stages"])


@user_errors
def change_window_stage(stage, block: float, head: str, request: gr.Request):
    """Another stage: the same place in the image, at that stage's resolution (block and head kept where it has
    them)."""
    return _window_draw(_window_state(request), stage, block, head, fit=True)


@user_errors
def update_window_view(stage, block: float, head: str, row: float, col: float, request: gr.Request):
    """Block, head or query cell (row, col) changed: redraw from the stored forward."""
    return _window_draw(_window_state(request), stage, block, head, row, col)


@user_errors
def pick_window_query(stage, block: float, head: str, event: gr.SelectData, request: gr.Request):
    """A click on the shared image picks the cell under the pointer, at the chosen stage (nothing before Analyse, or
    for a model without attention per stage)."""
    state = STORE.peek(request, WINDOW_KEY)
    if state is None or state.get("subject") is None:
        return [gr.skip()] * 7
    state["point"] = state["subject"].stage_attention().input_pixel(*event.index)
    return _window_draw(state, stage, block, head)


@dataclass
class AttentionTab:
    """The Attention tab's controls a shared link restores, and its first drawing."""

    layer: gr.Slider
    head: gr.Dropdown
    temperature: gr.Slider
    query: gr.Number
    fusion: gr.Dropdown
    discard: gr.Slider
    target: gr.Textbox
    draw: object  # draw(dependency): chain Analyse (and the stored query) after an event, e.g. the page load

    def url_fields(self) -> dict:
        return {"layer": self.layer, "head": self.head, "temperature": self.temperature, "query": self.query,
                "fusion": self.fusion, "discard": self.discard, "target": self.target}


def _controls(scale: int = 1, min_width: int = 260):
    """The narrow column of controls beside the figure they drive."""
    return gr.Column(scale=scale, min_width=min_width)


def build_attention_tab(shared: SharedInputs) -> AttentionTab:
    model_id, image = shared.pickers["transformer"], shared.image
    stale_note = gr.Markdown(elem_classes=["cs-stale"], elem_id="cs-attention-stale")
    with gr.Row(equal_height=False):
        with _controls():
            gr.Markdown("Where one query token (CLS, or a patch: **click the map, the patch grid or the image**) "
                        "looks, per head or fused. One hooked forward; layer, head and query redraw without "
                        "running the model again.")
            analyse_button = gr.Button("Analyse", variant="primary")
            layer = gr.Slider(0, 11, value=0, step=1, label="Layer")
            head = gr.Dropdown(HEAD_CHOICES, value="mean", label="Head (or fusion; click a head in the grid)",
                               allow_custom_value=True)
            with gr.Row():
                query = gr.Number(0, precision=0, minimum=0, label="Query token (0 = CLS)", min_width=120,
                                   elem_id="cs-query")
                reset = gr.Button("Query: CLS", size="sm", min_width=80)
            query_info = gr.Markdown()
            copy_button = gr.Button("Copy as Python", size="sm")
        with gr.Column(scale=2, min_width=320):
            overlay = PlotlyFigure("Attention of the query (click a patch)", title_chars=COLUMN, elem_id="cs-overlay")
        with gr.Column(scale=2, min_width=320):
            heads = PlotlyFigure("All heads (click one to pick it)", title_chars=COLUMN, elem_id="cs-heads")
    code = gr.Code(language="python", label="Python that draws these figures in a notebook", visible=False,
                   interactive=False)
    with gr.Row(equal_height=False):
        with _controls():
            temperature = gr.Slider(0.01, 10.0, value=1.0, step=0.01, label="Softmax temperature (step-by-step)")
            gr.Markdown("The query's attention row computed step by step for the chosen head (or every head, for a "
                        "fusion). The patch grid is the image as the model saw it: click a patch to query it.")
        with gr.Column(scale=2, min_width=320):
            steps = Plot(label="Step by step: scores, softmax", title_chars=COLUMN)
        with gr.Column(scale=2, min_width=320):
            grid_plot = PlotlyFigure("Patch grid (click a patch)", title_chars=COLUMN, elem_id="cs-attention-grid")
    gr.Markdown("**Rollout** multiplies (attention + identity) through the layers: what the CLS token draws on. "
                "**Relevancy** (Chefer et al.) weights attention by its gradient for a prompt or class. "
                "The **per-patch zero-shot** map pushes each final patch token through the model's own final norm "
                "and projection and names the prompt it matches best.")
    with gr.Row(equal_height=False):
        with _controls():
            fusion = gr.Dropdown(HEAD_CHOICES, value="mean", label="Rollout head fusion")
            discard = gr.Slider(0.0, 0.95, value=0.0, step=0.05, label="Rollout discard ratio (CLS never)")
            rollout_button = gr.Button("Rollout")
            gr.Markdown("**Mean attention distance**: how far each head looks, in pixels, against depth (the ViT "
                        "paper's Figure 7), over 16 procedural images.")
            distance_button = gr.Button("Mean attention distance (16 images)")
        with gr.Column(scale=2, min_width=320):
            rollout_plot = Plot(label="Rollout", title_chars=COLUMN)
        with gr.Column(scale=2, min_width=320):
            distance_plot = Plot(label="Mean attention distance", title_chars=COLUMN)
    with gr.Row(equal_height=False):
        with _controls():
            gr.Markdown("**Every layer × head** at once for the current query (each map scaled to its own "
                        "maximum; hover for the weight). Click a map to pick its layer and head above.")
            overview_button = gr.Button("Every layer × head")
        with gr.Column(scale=4, min_width=320):
            overview_plot = PlotlyFigure("Every layer × head for the query (click one)", title_chars=WIDE,
                                         elem_id="cs-overview")
    with gr.Row(equal_height=False):
        with _controls():
            target = gr.Textbox(label="Relevancy target: prompt (CLIP), class name or output index (empty: the "
                                      "top output)", value="a red triangle")
            relevancy_button = gr.Button("Relevancy")
        with gr.Column(scale=2, min_width=320):
            relevancy_plot = Plot(label="Relevancy", title_chars=COLUMN)
        with gr.Column(scale=2, min_width=320):
            token_plot = Plot(label="Prompt token relevance", title_chars=COLUMN)
    with gr.Row(equal_height=False):
        with _controls():
            prompts = gr.Textbox(label="Prompts for the per-patch map (one per line or comma-separated)",
                                 value="a red triangle, an orange circle, a background", lines=3)
            zero_shot_button = gr.Button("Per-patch zero-shot")
        with gr.Column(scale=4, min_width=320):
            zero_shot_plot = Plot(label="Per-patch zero-shot", title_chars=WIDE)
    with gr.Accordion("Window attention per stage (Swin, MaxViT, MobileCLIP / FastViT hybrids)", open=False):
        gr.Markdown("For models with a grid per stage: where one query cell looks inside its own window (shifted "
                    "windows, MaxViT's block and grid partitions, or the whole grid for global attention), at the "
                    "chosen stage and block. Analyse fills it; click the image (or set row / col) to pick the query "
                    "cell.")
        with gr.Row(equal_height=False):
            with _controls():
                stage = gr.Dropdown([], value=None, label="Stage (with attention)", allow_custom_value=True)
                block = gr.Slider(0, 1, value=0, step=1, label="Block in the stage")
                window_head = gr.Dropdown(HEAD_CHOICES, value="mean", label="Head (or fusion)",
                                          allow_custom_value=True)
                row = gr.Slider(0, 1, value=0, step=1, label="Query cell: row")
                col = gr.Slider(0, 1, value=0, step=1, label="Query cell: column")
                window_info = gr.Markdown()
            with gr.Column(scale=2, min_width=320):
                window_overlay = Plot(label="Window attention of the query cell", title_chars=COLUMN)
            with gr.Column(scale=2, min_width=320):
                window_heads = Plot(label="Every head, in the query's window", title_chars=COLUMN)
        stages_plot = Plot(label="Attention stages", title_chars=WIDE)
    figures = [overlay, heads, grid_plot, steps, window_overlay, window_heads, stages_plot, rollout_plot,
               relevancy_plot, token_plot, zero_shot_plot, distance_plot, overview_plot]
    window_figures = [window_overlay, window_heads, stages_plot]   # in the accordion: cleared only when drawn
    export_button("Attention", figures)
    views = [overlay, heads, steps, query_info]
    controls = [layer, head, temperature]
    window_views = [block, window_head, row, col, window_overlay, window_heads, window_info]

    def draw(after):
        """Analyse after ``after`` (an event), then the window section, then the stored query of the query box."""
        analysed = after.then(analyse, [model_id, image, *controls], [layer, head, grid_plot, *views],
                              api_name=False, concurrency_limit=2, show_progress_on=figures_only([grid_plot, *views]))
        analysed.success(lambda: "", None, stale_note, api_name=False).success(
            analyse_windows, [model_id, image, stage, block, window_head], [stage, *window_views, stages_plot],
            api_name=False, concurrency_limit=2, show_progress_on=figures_only([*window_views, stages_plot])).success(
            set_query_if_any, [*controls, query], [*views, query], api_name=False)
        return analysed

    analysed = analyse_button.click(analyse, [model_id, image, *controls], [layer, head, grid_plot, *views],
                                    api_name="attention_analyse", concurrency_limit=2,
                                    show_progress_on=figures_only([grid_plot, *views]))
    analysed.success(query_of, None, query, api_name=False)
    analysed.success(lambda: "", None, stale_note, api_name=False)
    analysed.success(analyse_windows, [model_id, image, stage, block, window_head],
                     [stage, *window_views, stages_plot], api_name="attention_windows", concurrency_limit=2,
                     show_progress_on=figures_only([*window_views, stages_plot]))
    # .input, not .change: these handlers set the same controls (block range, heads, row / col of the query)
    stage.input(change_window_stage, [stage, block, window_head], window_views, api_name="attention_window_stage",
                show_progress_on=figures_only(window_views))
    for control in (block, window_head, row, col):
        control.input(update_window_view, [stage, block, window_head, row, col], window_views,
                      show_progress_on=figures_only(window_views),
                      api_name="attention_window_view" if control is block else False)
    image.select(pick_window_query, [stage, block, window_head], window_views, api_name=False)
    for control in controls:
        control.change(update_views, controls, views, api_name="attention_view" if control is layer else False)
    image.select(pick_query, controls, [*views, query], api_name=False)
    for clickable in (overlay, grid_plot):
        clickable.click(click_patch, controls, [*views, query], api_name=False)
    heads.click(click_head, None, head, api_name=False)
    query.submit(set_query, [*controls, query], [*views, query], api_name="attention_query")
    reset.click(reset_query, controls, [*views, query], api_name=False)
    copy_button.click(copy_python, [model_id, shared.source, *controls, fusion, discard], code,
                      api_name="attention_copy_python").success(lambda: gr.update(visible=True), None, code,
                                                                api_name=False)
    rollout_button.click(rollout_view, [fusion, discard], rollout_plot, api_name="attention_rollout")
    overview_button.click(overview_view, None, overview_plot, api_name="attention_overview",
                          show_progress_on=[overview_plot])
    overview_plot.click(click_overview, None, [layer, head], api_name=False)
    for control in (fusion, discard):
        control.change(rollout_view, [fusion, discard], rollout_plot, api_name=False)
    relevancy_button.click(relevancy_view, target, [relevancy_plot, token_plot],
                           api_name="attention_relevancy", concurrency_limit=2)
    zero_shot_button.click(zero_shot_view, prompts, zero_shot_plot, api_name="attention_zero_shot")
    distance_button.click(mean_distance_view, model_id, distance_plot, api_name="mean_attention_distance",
                          concurrency_limit=2)

    @user_errors
    def clear_if_stale(model: str, picture, request: gr.Request):
        """The image or model changed: clear every figure drawn from other inputs, and say so."""
        states = [STORE.peek(request, KEY), STORE.peek(request, WINDOW_KEY)]
        if all(is_current(state, model, picture) for state in states):
            return [gr.skip()] * (len(figures) + 3)
        window_drawn = (states[1] or {}).get("subject") is not None
        STORE.put(request, KEY, None)
        STORE.put(request, WINDOW_KEY, None)
        return [STALE, "", ""] + [None if window_drawn or f not in window_figures else gr.skip() for f in figures]

    for changed in (image, model_id):
        changed.change(clear_if_stale, [model_id, image], [stale_note, query_info, window_info, *figures],
                       api_name=False)
    return AttentionTab(layer, head, temperature, query, fusion, discard, target, draw)


@user_errors
def set_query_if_any(layer: float, head: str, temperature: float, query: float, request: gr.Request):
    """After an Analyse chained by a page load: the query box's token (e.g. from a shared link), if not CLS."""
    state = STORE.peek(request, KEY)
    if state is None or not has_token_grid(state["subject"].model) or not query:
        return [gr.skip()] * 5
    return _query_views(state, query, layer, head, temperature)
