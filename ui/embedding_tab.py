"""Embedding space tab: embed a set of images and texts, map it (UMAP / PCA), search it with a text, measure the
modality gap and evaluate zero-shot accuracy of a labelled folder."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np

from models.embed import (
    DEFAULT_CLASS_TEMPLATE,
    EmbeddingCache,
    ImageItem,
    embed_set,
    embedding_table,
    load_embedding_output,
    scan_folder,
)
from ui.errors import user_errors
from ui.examples import example_paths
from ui.export import Plot, export_button, export_provenance, write_table
from ui.figure_layout import NARROW
from ui.plotly_html import map_value, new_token, plotly_map
from ui.point_ranges import format_ranges, parse_ranges
from ui.sessions import STORE, SessionStore
from ui.shared_inputs import SharedInputs
from ui.url_state import TAB_KEY, link_params
from ui.webgl_map import map_value as webgl_value
from ui.webgl_map import point_map, publish_points
from ui.zero_shot_tab import load_clip
from viz.embedding_figures import thumbnail_data_url
from viz.embedding_space import project
from viz.embedding_views import (
    COLOURS,
    EXPLORER_SEED,
    FILTER_COLUMNS,
    metadata_filter,
    procedural_items,
    selection_summary,
    use_webgl,
)
from viz.views import Subject, run_view
from viz.zero_shot import parse_templates, truncation_notice

KEY = "embedding"
NOT_YET = "Press Embed first."
SOURCES = ["procedural shapes (images + captions)", "example photos", "uploaded images", "folder on the server",
           "models.embed output folder"]
METHODS = ["UMAP", "PCA"]
MAX_PROCEDURAL = 2000
MAX_RANGES_TEXT = 4000   # characters of "0-9, 15, ..." shown in the selection box; beyond, the summary says so
_MAPS = SessionStore(capacity=64)  # map token -> EmbeddingSet, for hover look-ups


def _by_token(token: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=f"map:{token}")


def allowed_folder(path_text: str, allowed: list[Path]) -> Path:
    """The folder, resolved, if it lies inside one of the folders the launcher allowed (``--allow-folder``)."""
    if not (path_text or "").strip():
        raise ValueError("Type the path of a folder on the server.")
    if not allowed:
        raise ValueError("This app reads no folders on the server: start it with --allow-folder DIR to allow one.")
    folder = Path(path_text.strip()).expanduser().resolve()
    if not any(folder == root or root in folder.parents for root in allowed):
        raise ValueError(f"{folder} is outside the folders this app may read "
                         f"({', '.join(str(root) for root in allowed)}). Start it with --allow-folder to allow more.")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    return folder


def _items(source: str, count: float, seed: float, uploads, folder: str, allowed: list[Path]) -> list[ImageItem]:
    if source == SOURCES[0]:
        count = int(count)
        if not 1 <= count <= MAX_PROCEDURAL:
            raise ValueError(f"Choose between 1 and {MAX_PROCEDURAL} procedural images.")
        return procedural_items(count, int(seed))
    if source == SOURCES[1]:
        return [ImageItem(path, None, None, Path(path).stem) for path in example_paths()]
    if source == SOURCES[2]:
        paths = [getattr(f, "name", f) for f in (uploads or [])]
        if not paths:
            raise ValueError("Upload some images first.")
        return [ImageItem(path, None, None, Path(path).name) for path in paths]
    return scan_folder(allowed_folder(folder, allowed))


def _class_labels(text: str) -> list[str]:
    return [x.strip() for x in (text or "").replace("\n", ",").split(",") if x.strip()]


def _map_views(state: dict, method: str, colour: str, remove_gap: bool, lines: bool) -> dict:
    return run_view("embedding.map", state["subject"], embedding_set=state["set"], method=method, colour=colour,
                    remove_gap=bool(remove_gap), lines=bool(lines), highlight=state["highlight"],
                    vocabulary=state.get("vocabulary", ()))


def _webgl(state: dict, method: str, colour: str, remove_gap: bool) -> str:
    """The WebGL map's value; its points array is published once per projection and reused by every recolouring
    and search (only the colouring and the small JSON view travel again)."""
    points = run_view("embedding.points", state["subject"], embedding_set=state["set"], method=method, colour=colour,
                      remove_gap=bool(remove_gap), highlight=state["highlight"],
                      vocabulary=state.get("vocabulary", ()), filter_column=state.get("filter", ("label", ""))[0],
                      filter_text=state.get("filter", ("label", ""))[1], only=state.get("isolate", ()))["points"]
    key = (method, bool(remove_gap))
    urls = state.setdefault("points_urls", {})
    if key not in urls:
        urls[key] = publish_points(points.points_bytes())
    return webgl_value(state["token"], urls[key], points.categories, title=points.title, note=points.note,
                       highlight=points.highlight, labels=points.labels, contours=points.contours,
                       texts_first=points.texts_first, mask=points.mask)


def _map(state: dict, method: str, colour: str, remove_gap: bool, lines: bool) -> tuple:
    """(Plotly map, WebGL map) updates: a set of WEBGL_FROM points or more, a filtered one or an isolated
    neighbourhood is drawn by WebGL; a smaller one by Plotly (with image-caption lines and symbols per kind)."""
    state["map_settings"] = {"method": method, "colour": colour, "remove_gap": bool(remove_gap)}
    if use_webgl(state["set"]) or state.get("filter", ("", ""))[1].strip() or state.get("isolate"):
        state["map_figure"] = None
        return gr.update(visible=False), gr.update(value=_webgl(state, method, colour, remove_gap), visible=True)
    figure = _map_views(state, method, colour, remove_gap, lines)["map"]
    state["map_figure"] = figure
    return gr.update(value=map_value(figure.to_json(), state["token"]), visible=True), gr.update(visible=False)


def _write_table(state: dict, file_format: str, name: str, rows=None) -> str:
    """The set's table (or the ``rows`` selected) with the map's coordinates as drawn now, written to download."""
    es, settings = state["set"], state.get("map_settings")
    coordinates = None
    if settings is not None:   # the map as drawn now: its 2-D coordinates, one per row (images, then texts)
        projection = project(es.image_embeddings, es.text_embeddings, settings["method"].lower(),
                             settings["remove_gap"])
        method = settings["method"].lower()
        coords = projection.coords if rows is None else projection.coords[np.asarray(rows, dtype=np.int64)]
        coordinates = {f"{method}_x": coords[:, 0], f"{method}_y": coords[:, 1]}
    what = "embedding table" if rows is None else f"selection of {len(rows):,} points"
    provenance = export_provenance(what, models=[es.model_id], map=settings)
    return str(write_table(embedding_table(es, rows), file_format, name, provenance, coordinates=coordinates))


def build_embedding_tab(shared: SharedInputs, allowed_folders: list[Path]) -> EmbeddingTab:
    allowed = [Path(folder).expanduser().resolve() for folder in allowed_folders]

    def point_info(reference: str) -> dict:
        """Thumbnail and description of one map point (asked by the page on hover)."""
        token, _, index = reference.partition(":")
        try:
            es = _MAPS.get(_by_token(token), "map", "gone")
            i = int(index)
            if 0 <= i < len(es.images):
                item = es.images[i]
                text = " · ".join(x for x in (item.name, item.label, item.caption) if x)
                src = thumbnail_data_url(item.open(), 96) if item.source is not None else ""
                return {"src": src, "text": text}
            j = i - len(es.images)
            if 0 <= j < len(es.texts):
                return {"src": "", "text": f"{es.text_kinds[j]}: {es.texts[j]}"}
        except (gr.Error, ValueError, OSError):
            pass
        return {}

    @user_errors
    def embed(model_id: str, source: str, count: float, seed: float, uploads, folder: str, labels_text: str,
              template: str, method: str, colour: str, remove_gap: bool, lines: bool, request: gr.Request,
              progress: gr.Progress = gr.Progress()):
        """Embed the chosen images (and their captions and class prompts), then draw the map."""
        cached = [None]
        model = None  # a models.embed output folder is read without its model
        if source == SOURCES[4]:
            es = load_embedding_output(allowed_folder(folder, allowed))
            note = f"Read {len(es.images)} image and {len(es.texts)} text embeddings of {es.model_id} from disk."
        else:
            model = load_clip(model_id)
            items = _items(source, count, seed, uploads, folder, allowed)
            template = parse_templates(template or DEFAULT_CLASS_TEMPLATE)[0]

            def on_progress(done: int, total: int) -> None:
                if cached[0] is None:
                    cached[0] = done
                progress((done, total), desc="Embedding images", unit="images")

            es = embed_set(model, items, template=template, extra_labels=_class_labels(labels_text),
                           cache=EmbeddingCache(model), on_progress=on_progress)
            note = (f"{len(es.images)} images embedded with {es.model_id} ({cached[0] or 0} from the embedding "
                    f"cache, no model run for those).")
            truncated = truncation_notice(model, es.texts)
            if truncated:
                note += f"\n\n⚠️ {truncated}"
        token = new_token()
        state = {"set": es, "token": token, "highlight": [], "subject": Subject(model)}
        STORE.put(request, KEY, state)
        _MAPS.put(_by_token(token), "map", es)
        progress(0.95, desc=f"{method} projection")
        plotly_update, webgl_update = _map(state, method, colour, remove_gap, lines)
        gap_figure, gap_note = run_view("embedding.gap", state["subject"], embedding_set=es).values()
        captions = es.text_kinds.count("caption")
        info = (f"{note}\n\n{len(es.texts)} texts: {captions} captions, {len(es.texts) - captions} class prompts. "
                f"{gap_note}")
        return plotly_update, webgl_update, info, gap_figure

    @user_errors
    def redraw(method: str, colour: str, remove_gap: bool, lines: bool, request: gr.Request):
        """Projection, colouring, gap removal or lines changed: redraw from the stored embeddings (no model)."""
        return _map(STORE.get(request, KEY, NOT_YET), method, colour, remove_gap, lines)

    @user_errors
    def search(query: str, k: float, method: str, colour: str, remove_gap: bool, lines: bool, request: gr.Request):
        """The k images nearest to a text query, found in the original space, highlighted and shown as a gallery."""
        state = STORE.get(request, KEY, NOT_YET)
        es = state["set"]
        figures = run_view("embedding.search", Subject(load_clip(es.model_id)), query=query, k=int(k),
                           embedding_set=es)
        state["highlight"] = figures["highlight"]
        gallery, info = figures["gallery"], figures["info"]
        return *_map(state, method, colour, remove_gap, lines), gallery, info

    @user_errors
    def name_clusters(vocabulary: str, method: str, colour: str, remove_gap: bool, lines: bool, request: gr.Request):
        """Name the map's clusters with the user's words (comma-separated; empty: the set's own texts)."""
        state = STORE.get(request, KEY, NOT_YET)
        words = _class_labels(vocabulary)
        if words and state["subject"].model is None:
            state["subject"] = Subject(load_clip(state["set"].model_id))
        state["vocabulary"] = words
        return _map(state, method, colour, remove_gap, lines)

    @user_errors
    def show_point(index: float, request: gr.Request):
        """One point of the map: an image with its label and caption, or a text."""
        es = STORE.get(request, KEY, NOT_YET)["set"]
        i = int(index)
        if 0 <= i < len(es.images):
            item = es.images[i]
            image = item.open().convert("RGB") if item.source is not None else None
            if image is not None:
                image.thumbnail((256, 256))
            lines = [f"**image {i}**: {item.name}", f"label: {item.label or '—'}", f"caption: {item.caption or '—'}"]
            return image, "\n\n".join(lines)
        j = i - len(es.images)
        if 0 <= j < len(es.texts):
            return None, f"**text {j}** ({es.text_kinds[j]}): {es.texts[j]}"
        raise ValueError(f"Point {i} does not exist: the map has {len(es.images) + len(es.texts)} points.")

    @user_errors
    def filter_points(column: str, text: str, method: str, colour: str, remove_gap: bool, lines: bool,
                      request: gr.Request):
        """Show only the points whose metadata column contains the text (on the WebGL map); empty text: all."""
        state = STORE.get(request, KEY, NOT_YET)
        metadata_filter(state["set"], column, text)   # a column or text that matches nothing: a message, no change
        state["filter"] = (column, text or "")
        return _map(state, method, colour, remove_gap, lines)

    def clicked_point(event: gr.EventData, request: gr.Request):
        """A click on the map: the point's image and text, and its number in the Point box."""
        index = int(getattr(event, "point", -1))
        return *show_point(index, request), index

    def _selection(state: dict, rows) -> tuple[str, str]:
        """Keep ``rows`` as the selection; (the selection as ranges, or "" if too long to show; its summary)."""
        state["selection"] = rows
        if not len(rows):
            return "", "Nothing selected."
        text = format_ranges(rows)
        summary = selection_summary(state["set"], rows)
        if len(text) > MAX_RANGES_TEXT:
            return "", summary + " (Too many runs of points to list; **Export the selection** writes them all.)"
        return text, summary

    def lassoed(event: gr.EventData, request: gr.Request):
        """A lasso or box on either map: the points it caught become the selection (none: cleared)."""
        state = STORE.peek(request, KEY)
        if state is None:
            return gr.skip(), gr.skip()
        data = getattr(event, "_data", None)
        points = data.get("points") if isinstance(data, dict) else None
        es = state["set"]
        total = len(es.images) + len(es.texts)
        rows = np.unique(np.asarray([int(p) for p in points or () if isinstance(p, (int, float)) and 0 <= p < total],
                                    dtype=np.int64))
        return _selection(state, rows)

    @user_errors
    def select_typed(text: str, request: gr.Request):
        """Points typed by number ("0-9, 15") become the selection."""
        state = STORE.get(request, KEY, NOT_YET)
        es = state["set"]
        return _selection(state, parse_ranges(text, len(es.images) + len(es.texts)))

    @user_errors
    def export_selection(file_format: str, request: gr.Request):
        """The selected points as a table (their number, metadata, map coordinates and raw embedding) to
        download."""
        state = STORE.get(request, KEY, NOT_YET)
        rows = state.get("selection")
        if rows is None or not len(rows):
            raise ValueError("Select some points first: lasso or box them on the map, or type e.g. 0-9, 15.")
        return _write_table(state, file_format, "selection", rows)

    @user_errors
    def isolate(point: float, k: float, method: str, colour: str, remove_gap: bool, lines: bool,
                request: gr.Request):
        """Show only the point and its k nearest neighbours in the original space, numbered by rank."""
        state = STORE.get(request, KEY, NOT_YET)
        found = run_view("embedding.neighbours", state["subject"], point=int(point), k=int(k),
                         embedding_set=state["set"])
        state["isolate"] = [int(point), *found["neighbours"]]
        state["filter"] = ("label", "")   # the neighbourhood replaces a metadata filter
        state["highlight"] = found["neighbours"]
        return *_map(state, method, colour, remove_gap, lines), found["info"]

    @user_errors
    def show_all(method: str, colour: str, remove_gap: bool, lines: bool, request: gr.Request):
        """Every point again: no isolation, no filter, no rings."""
        state = STORE.get(request, KEY, NOT_YET)
        state.pop("isolate", None)
        state["filter"] = ("label", "")
        state["highlight"] = []
        return *_map(state, method, colour, remove_gap, lines), ""

    @user_errors
    def evaluate(request: gr.Request):
        """Zero-shot accuracy of the labelled images against the class prompts: top-1, top-5, per class."""
        state = STORE.get(request, KEY, NOT_YET)
        figures = run_view("embedding.evaluate", state["subject"], embedding_set=state["set"])
        return figures["summary"], figures["per_class"], figures["confusion"]

    @user_errors
    def export_table(file_format: str, request: gr.Request):
        """The embedded set as a table (one row per image or text, one column per dimension) to download."""
        return _write_table(STORE.get(request, KEY, NOT_YET), file_format, "embeddings")

    def map_for_export(request: gr.Request) -> list:
        """The Plotly map as drawn now, for the HTML export (none yet, or a WebGL map: it lives in the browser)."""
        state = STORE.peek(request, KEY)
        figure = None if state is None else state.get("map_figure")
        return [] if figure is None else [("Joint embedding map", figure)]

    folders_note = (", ".join(f"`{folder}`" for folder in allowed) if allowed
                    else "none (start the app with `--allow-folder DIR`)")
    gr.Markdown("Images and texts in CLIP's joint space. Every comparison (nearest images, zero-shot, the gap) is "
                "computed on the normalised embeddings in the original space; the map is only a picture. Images "
                "and texts split apart on the map: that is the **modality gap**; remove each modality's mean to see "
                f"the map without it. Folders this app may read: {folders_note}.")
    with gr.Row():
        with gr.Column(scale=1):
            model_id = shared.pickers["clip"]
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Images")
            count = gr.Slider(10, MAX_PROCEDURAL, value=360, step=10, label="Procedural images")
            seed = gr.Number(value=EXPLORER_SEED, precision=0, label="Procedural seed")
            uploads = gr.File(file_count="multiple", file_types=["image"], label="Uploaded images")
            folder = gr.Textbox(label="Folder on the server (subfolders = labels, optional captions.csv) or a "
                                      "models.embed output folder", value=str(allowed[0]) if allowed else "")
            labels_text = gr.Textbox(label="Extra class labels (comma-separated): text points, and the classes of "
                                           "the zero-shot colouring", lines=2)
            template = gr.Textbox(label="Class prompt template", value=DEFAULT_CLASS_TEMPLATE)
            embed_button = gr.Button("Embed", variant="primary")
        with gr.Column(scale=3):
            with gr.Row():
                method = gr.Radio(METHODS, value=METHODS[0], label="Projection")
                colour = gr.Radio(list(COLOURS), value="label", label="Colour by")
                remove_gap = gr.Checkbox(value=False, label="Remove each modality's mean (close the gap)")
                lines = gr.Checkbox(value=True, label="Lines image ↔ caption")
            map_html = plotly_map(point_info, label="Joint embedding map")
            webgl_html = point_map(point_info, label="Joint embedding map (WebGL)", visible=False)
            with gr.Row():
                vocabulary = gr.Textbox(label="Name the clusters with these words (comma-separated; empty: the "
                                              "set's class prompts, or its captions)", scale=4)
                vocabulary_button = gr.Button("Name clusters", size="sm", scale=1)
            with gr.Row():
                filter_column = gr.Dropdown(list(FILTER_COLUMNS), value="label", label="Filter by", scale=1)
                filter_text = gr.Textbox(label="… containing (empty: every point; a filter draws the WebGL map)",
                                         scale=3)
                filter_button = gr.Button("Filter", size="sm", scale=1)
            with gr.Row():
                selection_text = gr.Textbox(label="Selection: lasso or box points on the map (Plotly: the lasso "
                                                  "tool, top right; WebGL: shift-drag), or type them, e.g. 0-9, 15",
                                            scale=4, elem_id="cs-selection")
                export_selection_button = gr.Button("Export the selection", size="sm", scale=1)
            selection_info = gr.Markdown(elem_id="cs-selection-info")
            info = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=1):
            query = gr.Textbox(label="Text query", value="a red circle")
            k = gr.Slider(1, 32, value=8, step=1, label="Nearest images")
            search_button = gr.Button("Search")
            query_info = gr.Markdown()
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Nearest images (original space)", columns=8, height=220)
    with gr.Row():
        with gr.Column(scale=1):
            point_index = gr.Number(value=0, precision=0, label="Point (or click one on the map)",
                                    elem_id="cs-point")
            point_button = gr.Button("Show point")
            point_text = gr.Markdown()
            neighbour_k = gr.Slider(1, 200, value=20, step=1, label="Neighbours to isolate")
            with gr.Row():
                isolate_button = gr.Button("Isolate its neighbours", size="sm")
                show_all_button = gr.Button("Show all points", size="sm")
            isolate_info = gr.Markdown(elem_id="cs-isolate-info")
        with gr.Column(scale=1):
            point_image = gr.Image(label="Point", height=256, interactive=False)
        with gr.Column(scale=2):
            gap_plot = Plot(label="Modality gap: matching vs non-matching pairs", title_chars=NARROW)
    evaluate_button = gr.Button("Zero-shot evaluation of the labelled images")
    evaluation_info = gr.Markdown()
    with gr.Row():
        per_class_plot = Plot(label="Per-class accuracy")
        confusion_plot = Plot(label="Confusion matrix")

    export_button("Embedding space", [gap_plot, per_class_plot, confusion_plot], extra_figures=map_for_export)
    with gr.Row():
        table_format = gr.Radio(["CSV", "Parquet"], value="CSV", label="Embedding table format", scale=1)
        table_button = gr.Button("Export the embedding table", size="sm", scale=1)
        table_file = gr.File(label="Download", interactive=False, scale=2)
    table_button.click(export_table, table_format, table_file, api_name="embedding_table")
    export_selection_button.click(export_selection, table_format, table_file, api_name="embedding_selection_table")
    selection_text.submit(select_typed, selection_text, [selection_text, selection_info], api_name="embedding_select")
    view = [method, colour, remove_gap, lines]
    maps = [map_html, webgl_html]
    embed_button.click(embed, [model_id, source, count, seed, uploads, folder, labels_text, template, *view],
                       [*maps, info, gap_plot], api_name="embedding_embed", concurrency_limit=2)
    for control in view:
        control.change(redraw, view, maps, api_name="embedding_view" if control is method else False,
                       concurrency_limit=2)
    search_button.click(search, [query, k, *view], [*maps, gallery, query_info], api_name="embedding_search",
                        concurrency_limit=2)
    vocabulary_button.click(name_clusters, [vocabulary, *view], maps, api_name="embedding_clusters",
                            concurrency_limit=2)
    filter_button.click(filter_points, [filter_column, filter_text, *view], maps, api_name="embedding_filter",
                        concurrency_limit=2)
    point_button.click(show_point, point_index, [point_image, point_text], api_name="embedding_point")
    for drawn in maps:
        drawn.click(user_errors(clicked_point), None, [point_image, point_text, point_index], api_name=False)
        drawn.select(user_errors(lassoed), None, [selection_text, selection_info], api_name=False)
    isolate_button.click(isolate, [point_index, neighbour_k, *view], [*maps, isolate_info],
                         api_name="embedding_isolate", concurrency_limit=2)
    show_all_button.click(show_all, view, [*maps, isolate_info], api_name="embedding_show_all", concurrency_limit=2)
    evaluate_button.click(evaluate, None, [evaluation_info, per_class_plot, confusion_plot],
                          api_name="embedding_evaluate")
    embed_inputs = [model_id, source, count, seed, uploads, folder, labels_text, template, *view]

    def embed_if_linked(model_id: str, source: str, count: float, seed: float, uploads, folder: str,
                        labels_text: str, template: str, method: str, colour: str, remove_gap: bool, lines: bool,
                        request: gr.Request, progress: gr.Progress = gr.Progress()):
        """On page load: embed and draw only when the link opens this tab (no visitor pays for it otherwise)."""
        if link_params(request).get(TAB_KEY) != "embedding":
            return [gr.skip()] * (len(maps) + 2)
        return embed(model_id, source, count, seed, uploads, folder, labels_text, template, method, colour,
                     remove_gap, lines, request, progress)

    def draw(after) -> None:
        after.then(embed_if_linked, embed_inputs, [*maps, info, gap_plot], api_name=False, concurrency_limit=2)

    fields = {"map_source": source, "map_count": count, "map_seed": seed, "map_method": method,
              "map_colour": colour, "map_query": query}
    return EmbeddingTab(fields, draw)


@dataclass
class EmbeddingTab:
    """The tab's URL fields (the set, projection, colouring and text query) and its first draw (after the page
    load, when the link opens this tab)."""

    fields: dict
    draw: Callable

    def url_fields(self) -> dict:
        return self.fields
