"""A Plotly figure drawn by plotly.js inside gr.HTML, so that hovering a point can show its image.

gr.Plot has no hover or click events. Here the figure travels as JSON in the component's value; plotly.js (the copy
shipped with the plotly Python package, served by the app itself, so it works offline) draws it; hovering a point
asks the server for that point's thumbnail and caption (``server_functions``), and clicking a point fires the
component's ``click`` event with ``{"point": index}``.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import plotly

from ui.figure_layout import HALF, shown_figure

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"

TEMPLATE = """
<div class="cs-wrap">
  <div class="cs-map"><p class="cs-empty">Press <b>Embed</b> to draw the map.</p></div>
  <div class="cs-tip"><img class="cs-thumb" alt="" />
    <div class="cs-caption">Hover a point to see its image and caption; click it to open it below; the lasso and box
      tools (top right) select points.</div></div>
</div>
"""

CSS = """
.cs-wrap { display: flex; gap: 10px; align-items: flex-start; }
.cs-map { flex: 1 1 auto; min-height: 620px; min-width: 0; }
.cs-tip { flex: 0 0 170px; font-size: 13px; word-wrap: break-word; }
.cs-thumb { width: 160px; height: 160px; object-fit: contain; image-rendering: pixelated; display: none;
            border: 1px solid #ccc; margin-bottom: 6px; }
.cs-empty { color: #888; padding: 2em; }
"""

JS = """
const draw = () => {
  const host = element.querySelector('.cs-map');
  const tip = element.querySelector('.cs-tip');
  if (!host || !tip) return;
  if (!props.value) return;
  let view;
  try { view = JSON.parse(props.value); } catch (error) { host.textContent = 'The map could not be read.'; return; }
  if (typeof Plotly === 'undefined') { host.textContent = 'plotly.js did not load.'; return; }
  const placeholder = host.querySelector('.cs-empty');
  if (placeholder) placeholder.remove();
  const thumb = tip.querySelector('.cs-thumb');
  const caption = tip.querySelector('.cs-caption');
  Plotly.react(host, view.figure.data, view.figure.layout, {responsive: true, displaylogo: false}).then(() => {
    if (host.removeAllListeners) { host.removeAllListeners('plotly_hover'); host.removeAllListeners('plotly_click'); }
    host.on('plotly_hover', async (event) => {
      const point = event.points[0];
      if (point === undefined || point.customdata === undefined) return;
      const id = String(point.customdata);
      tip.dataset.point = id;
      caption.innerHTML = point.hovertext || '';
      thumb.style.display = 'none';
      const answer = await server.map_point(view.token + ':' + id);
      if (tip.dataset.point !== id || !answer) return;  // the pointer has moved on
      if (answer.src) { thumb.src = answer.src; thumb.style.display = 'block'; }
      if (answer.text) caption.textContent = answer.text;
    });
    host.on('plotly_click', (event) => {
      const point = event.points[0];
      if (point !== undefined && point.customdata !== undefined) trigger('click', {point: Number(point.customdata)});
    });
    if (host.removeAllListeners) {
      host.removeAllListeners('plotly_selected');
      host.removeAllListeners('plotly_deselect');
    }
    host.on('plotly_selected', (event) => {  // lasso or box: every caught point's number (lines carry none)
      const caught = ((event && event.points) || []).map(p => p.customdata)
        .filter(c => c !== undefined && c !== null);
      trigger('select', {points: [...new Set(caught.map(Number))]});
    });
    host.on('plotly_deselect', () => trigger('select', {points: []}));
  });
};
watch('value', draw);
draw();
"""


def new_token() -> str:
    """An unguessable name for one drawn map, so a hover can only ask about maps its page was sent."""
    return secrets.token_urlsafe(16)


def map_value(figure_json: str, token: str) -> str:
    """The component's value: the figure (as plotly's own JSON, numpy arrays base64-encoded) and the map's token."""
    return '{"token": ' + json.dumps(token) + ', "figure": ' + figure_json + "}"


def plotly_map(point_info: Callable[[str], dict], label: str = "Map") -> gr.HTML:
    """The map component. ``point_info("TOKEN:INDEX")`` returns {"src": thumbnail data URL or "", "text": ...}."""
    gr.set_static_paths([PLOTLY_JS])

    def map_point(reference: str) -> dict:
        return point_info(str(reference))

    return gr.HTML(value=None, label=label, html_template=TEMPLATE, css_template=CSS, js_on_load=JS,
                   head=f'<script src="/gradio_api/file={PLOTLY_JS}"></script>', server_functions=[map_point],
                   min_height=640)


# -- a clickable figure: any Plotly figure drawn by plotly.js in gr.HTML, a click sent back as data coordinates ------
EMPTY_FIGURE = "Press Analyse to draw this figure."
FIGURE_TEMPLATE = f'<div class="cs-figure"><p class="cs-empty">{EMPTY_FIGURE}</p></div>'

FIGURE_CSS = """
.cs-figure { min-height: 120px; }
.cs-empty { color: #888; padding: 1em; margin: 0; }
"""

FIGURE_JS = """
const EMPTY = '""" + EMPTY_FIGURE + """';
let drawing = Promise.resolve();  // one Plotly call at a time: two quick updates must not interleave
const draw = () => { drawing = drawing.then(render, render); };
const render = () => {
  const host = element.querySelector('.cs-figure');
  if (!host) return;
  if (typeof Plotly === 'undefined') { host.textContent = 'plotly.js did not load.'; return; }
  if (!props.value) {
    Plotly.purge(host);
    host.innerHTML = '<p class="cs-empty"></p>';
    host.firstChild.textContent = EMPTY;
    return;
  }
  let figure;
  try { figure = JSON.parse(props.value); }
  catch (error) { host.textContent = 'The figure could not be read.'; return; }
  const placeholder = host.querySelector('.cs-empty');
  if (placeholder) placeholder.remove();
  const config = Object.assign({responsive: true, displaylogo: false}, figure.config || {});
  return Plotly.react(host, figure.data, figure.layout, config).then(() => {
    if (host.removeAllListeners) host.removeAllListeners('plotly_click');
    host.on('plotly_click', (event) => {
      const point = event.points[0];
      if (point === undefined || typeof point.x !== 'number' || typeof point.y !== 'number') return;
      trigger('click', {x: point.x, y: point.y, trace: point.curveNumber});
    });
  });
};
watch('value', draw);
draw();
"""


class PlotlyFigure(gr.HTML):
    """A Plotly figure that answers clicks (gr.Plot has no click event): its ``click`` event carries the clicked
    point's data coordinates (``event.x``, ``event.y``; for a heatmap the cell's centre, for an image the pixel).

    A handler returns a ``go.Figure`` (or None to clear it); as an input (the exports) it gives what gr.Plot gives,
    ``{"type": "plotly", "plot": JSON}``, so one export reads both; over the HTTP API its value is the figure JSON.
    """

    def __init__(self, label: str, title_chars: int = HALF, **kwargs):
        self.title_chars = title_chars
        gr.set_static_paths([PLOTLY_JS])
        super().__init__(value=None, label=label, show_label=True, container=True, html_template=FIGURE_TEMPLATE,
                         css_template=FIGURE_CSS, js_on_load=FIGURE_JS,
                         head=f'<script src="/gradio_api/file={PLOTLY_JS}"></script>', **kwargs)

    def preprocess(self, payload: str | None) -> dict | None:
        return {"type": "plotly", "plot": payload} if payload else None

    def postprocess(self, value) -> str | None:
        """The figure JSON fitted to its slot (ui.figure_layout: title wrapped, a height where it has none, the
        camera button's file name)."""
        if value is None or isinstance(value, str):
            return value
        return json.dumps(shown_figure(json.loads(value.to_json()), self.title_chars, default_height=True))


def clicked_point(event: gr.EventData) -> tuple[float, float] | None:
    """The data coordinates (x, y) a PlotlyFigure click carries, or None for an event without them."""
    data = getattr(event, "_data", None)
    data = data if isinstance(data, dict) else {}
    x, y = data.get("x"), data.get("y")
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return None
    return float(x), float(y)
