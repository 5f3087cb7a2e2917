"""The WebGL point map: a million points drawn by regl-scatterplot inside gr.HTML.

Coordinates and colours travel as binary arrays (viz/map_payload.py) fetched once by URL from a route this module
adds to the app's FastAPI server (``/clipscope/blob/KEY``); the component's value is a small JSON view (the URLs, the
legend, highlighted points, cluster labels and density contours). The scatter itself is ``ui/point_map/``: an npm
package built by esbuild into one static file, ``ui/point_map/dist/point_map.js``, served by the app (no CDN).
Hovering a point asks the server for its details (``server_functions``); clicking one fires the component's
``click`` event with ``{"point": index}``, as the Plotly map does (ui/plotly_html.py).
"""
from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr
import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response
from fastapi.routing import APIRoute

from viz.map_payload import Categories

POINT_MAP_JS = Path(__file__).resolve().parent / "point_map" / "dist" / "point_map.js"
BLOB_PREFIX = "/clipscope/blob/"
MAX_BLOB_BYTES = 512 * 2**20   # all maps' arrays kept at once; the least recently used are dropped first


class BlobStore:
    """Binary arrays by unguessable key, bounded in total bytes (least recently used dropped first)."""

    def __init__(self, max_bytes: int = MAX_BLOB_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, blob: bytes) -> str:
        """Keep ``blob``; returns the URL path the browser fetches it from."""
        key = secrets.token_urlsafe(18)
        with self._lock:
            self._items[key] = blob
            self._size += len(blob)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)
        return BLOB_PREFIX + key

    def get(self, key: str) -> bytes | None:
        with self._lock:
            blob = self._items.get(key)
            if blob is not None:
                self._items.move_to_end(key)
            return blob


BLOBS = BlobStore()


def _blob_response(key: str) -> Response:
    blob = BLOBS.get(key)
    if blob is None:
        raise HTTPException(status_code=404, detail="This map is gone from the server: draw it again.")
    return Response(blob, media_type="application/octet-stream", headers={"Cache-Control": "private, max-age=3600"})


def routes() -> list[APIRoute]:
    """The routes the map needs on the app's server: pass as ``launch(app_kwargs={"routes": routes()})``."""
    return [APIRoute(BLOB_PREFIX + "{key}", _blob_response, methods=["GET"], include_in_schema=False)]


def launch_kwargs() -> dict:
    """Keyword arguments of ``Blocks.launch`` that add this map's routes to the server."""
    return {"app_kwargs": {"routes": routes()}}


TEMPLATE = """
<div class="pm-wrap">
  <div class="pm-main">
    <div class="pm-title"></div>
    <div class="pm-plot"><canvas class="pm-canvas"></canvas><svg class="pm-svg"></svg><div class="pm-labels"></div>
      <p class="pm-empty">Press <b>Embed</b> to draw the map.</p></div>
    <div class="pm-status"></div>
  </div>
  <div class="pm-side">
    <div class="pm-tip"><img class="pm-thumb" alt="" />
      <div class="pm-caption">Hover a point to see it; click it to open it below; shift-drag to lasso.</div></div>
    <div class="pm-legend"></div>
  </div>
</div>
"""

CSS = """
.pm-wrap { display: flex; gap: 10px; align-items: flex-start; }
.pm-main { flex: 1 1 auto; min-width: 0; }
.pm-title { font-weight: 600; font-size: 14px; margin: 2px 0 4px 0; }
.pm-plot { position: relative; height: 620px; background: #ffffff; border: 1px solid #ddd; overflow: hidden; }
.pm-canvas { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
.pm-svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; pointer-events: none; }
.pm-labels { position: absolute; left: 0; top: 0; width: 100%; height: 100%; pointer-events: none; }
.pm-label { position: absolute; transform: translate(-50%, -50%); font: 600 12px sans-serif; color: #111;
            background: rgba(255,255,255,0.75); padding: 0 3px; border-radius: 3px; white-space: nowrap; }
.pm-rank { position: absolute; transform: translate(6px, -16px); font: 700 11px sans-serif; color: #c00; }
.pm-status { font-size: 12px; color: #555; margin-top: 3px; }
.pm-side { flex: 0 0 190px; font-size: 13px; word-wrap: break-word; }
.pm-thumb { width: 160px; height: 160px; object-fit: contain; image-rendering: pixelated; display: none;
            border: 1px solid #ccc; margin-bottom: 6px; }
.pm-legend { margin-top: 10px; max-height: 420px; overflow-y: auto; }
.pm-legend div { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.pm-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 5px; }
.pm-empty { color: #888; padding: 2em; position: absolute; }
"""

JS = """
const draw = () => {
  if (!props.value) return;
  if (typeof ClipscopePointMap === 'undefined') { setTimeout(draw, 50); return; }
  ClipscopePointMap.render(element, props.value, server, trigger);
};
watch('value', draw);
draw();
"""


def new_token() -> str:
    """An unguessable name for one drawn map, so a hover can only ask about maps its page was sent."""
    return secrets.token_urlsafe(16)


def publish_points(points_blob: bytes) -> str:
    """Keep a map's points array (viz.map_payload.pack_points) on the server; returns its URL."""
    return BLOBS.put(points_blob)


def map_value(token: str, points_url: str, categories: Categories, *, title: str, note: str = "",
              highlight: Sequence[int] = (), labels: Sequence[dict] = (), contours: Sequence[dict] = (),
              texts_first: bool = False, sizes: Sequence[float] = (3, 6, 8), mask: np.ndarray | None = None) -> str:
    """The component's value: a small JSON view of the map. The colouring goes to the server as its own binary
    array (fetched by URL); ``labels`` are {"text", "x", "y"} and ``contours`` {"x": [...], "y": [...]} in the
    points' [-1, 1] coordinates; ``highlight`` points (best first) are ringed and numbered; ``mask`` (one bool per
    point) shows only those points, sent as its own uint8 array."""
    legend = list(zip(categories.names, categories.colours, strict=True))
    view = {"token": token, "points_url": points_url, "colours_url": BLOBS.put(categories.to_bytes()),
            "colour_bytes": categories.bytes_per_point, "legend": legend,
            "title": title, "note": note, "highlight": [int(i) for i in highlight], "labels": list(labels),
            "contours": list(contours), "texts_first": bool(texts_first), "sizes": list(sizes),
            "filter_url": BLOBS.put(np.asarray(mask, dtype=np.uint8).tobytes()) if mask is not None else None}
    return json.dumps(view, separators=(",", ":"))


def point_map(point_info: Callable[[str], dict], label: str = "Map", visible: bool = True) -> gr.HTML:
    """The WebGL map component. ``point_info("TOKEN:INDEX")`` returns {"src": thumbnail data URL or "", "text": ...}.
    The app must serve :func:`routes` (``launch(**launch_kwargs())``)."""
    if not POINT_MAP_JS.is_file():
        raise FileNotFoundError(f"{POINT_MAP_JS} is missing: build it with `npm ci && npm run build` in "
                                f"{POINT_MAP_JS.parent.parent}.")
    gr.set_static_paths([POINT_MAP_JS])

    def map_point(reference: str) -> dict:
        return point_info(str(reference))

    return gr.HTML(value=None, label=label, html_template=TEMPLATE, css_template=CSS, js_on_load=JS,
                   head=f'<script src="/gradio_api/file={POINT_MAP_JS}"></script>', server_functions=[map_point],
                   min_height=680, visible=visible)
