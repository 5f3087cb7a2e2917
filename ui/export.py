"""Downloads that say what they hold: a tab's current figures as one self-contained interactive HTML file, tables as
CSV or Parquet, and each figure's camera PNG, all named after model and view and carrying their provenance (model
ids, image name / size / hash, each view's settings, clipscope version and commit, date).

The HTML file works offline: plotly.js travels inside it once, gzip-compressed (about 1.9 MB instead of 4.8 MB), and
is unpacked by the browser (DecompressionStream) before the figures are drawn from their JSON.
"""
from __future__ import annotations

import base64
import csv
import datetime
import functools
import gzip
import html
import json
import re
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components.plot import PlotData

from ui.errors import user_errors
from ui.figure_layout import HALF, image_config, shown_figure
from viz.provenance import provenance_of, slug

EXPORT_DIR = Path(tempfile.gettempdir()) / "clipscope-exports"
ROOT = Path(__file__).resolve().parent.parent


# -- where and when ------------------------------------------------------------------------------------------------
@functools.cache
def clipscope_version() -> dict:
    """clipscope's version (pyproject.toml) and the git commit of this checkout, where there is one."""
    found = {"version": None, "commit": None}
    try:  # the [project] table's version line (tomllib is Python 3.11+; the project supports 3.10)
        project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]
        found["version"] = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE).group(1)
    except (OSError, IndexError, AttributeError):
        pass
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            packed = git / "packed-refs"
            if loose.exists():
                head = loose.read_text().strip()
            elif packed.exists():
                head = next((line.split()[0] for line in packed.read_text().splitlines()
                             if line.endswith(" " + ref)), "")
        found["commit"] = head[:12] or None
    except OSError:
        pass
    return found


def export_provenance(what: str, figures: Sequence[dict | None] = (), **extra) -> dict:
    """The provenance of one export: what it is, clipscope version / commit, the UTC time, the model ids, and
    each figure's own stamp (view, model, image, settings; see viz.provenance)."""
    stamps = [f for f in figures if f]
    models = list(dict.fromkeys(s["model"] for s in stamps if s.get("model")))
    images = list({json.dumps(s["image"], sort_keys=True): s["image"] for s in stamps if s.get("image")}.values())
    return {"export": what, "clipscope": clipscope_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "models": models, "images": images, **extra, "figures": stamps}


def export_path(name: str, suffix: str, models: Sequence[str] = ()) -> Path:
    """A fresh file "clipscope_<model>_<name><suffix>", in a folder of its own (two users' exports never clash and
    the download keeps the readable name)."""
    folder = EXPORT_DIR / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    parts = ["clipscope", "+".join(slug(m) for m in models) if models else None, slug(name)]
    return folder / ("_".join(p for p in parts if p) + suffix)


# -- figures -------------------------------------------------------------------------------------------------------
class Plot(gr.Plot):
    """gr.Plot whose Plotly figures carry their camera-PNG file name (model and view, from the figure's stamp) and
    whose titles are wrapped to ``title_chars`` characters a line (ui.figure_layout: NARROW for a third of the row,
    HALF for half, WIDE for all of it)."""

    is_template = True  # drawn by gr.Plot's own front end

    def __init__(self, *args, title_chars: int = HALF, **kwargs):
        self.title_chars = title_chars
        super().__init__(*args, **kwargs)

    def get_config(self) -> dict:
        """gr.Plot's own configuration: gradio reads it from the constructor's signature, and this constructor
        takes its arguments as ``**kwargs``."""
        return {**super(gr.Plot, self).get_config(gr.Plot), "bokeh_version": None}

    def postprocess(self, value) -> PlotData | None:
        data = super().postprocess(value)
        if data is None or data.type != "plotly":
            return data
        return PlotData(type="plotly", plot=json.dumps(shown_figure(json.loads(data.plot), self.title_chars)))


def _figure_json(value) -> str | None:
    """The Plotly JSON inside a gr.Plot value (a PlotData, its dict form, or None)."""
    if value is None:
        return None
    plot = value.get("plot") if isinstance(value, dict) else getattr(value, "plot", None)
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", "plotly")
    return plot if kind == "plotly" and plot else None


@functools.cache
def _packed_plotlyjs() -> str:
    """plotly.js, gzip-compressed and base64-encoded, as the export's loader unpacks it."""
    from plotly.offline import get_plotlyjs
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


LOADER = """
(async () => {
  const packed = document.getElementById("plotlyjs").textContent;
  const bytes = Uint8Array.from(atob(packed), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const code = await new Response(stream).text();
  const script = document.createElement("script");
  script.textContent = code;
  document.head.appendChild(script);
  for (const holder of document.querySelectorAll("script.figure")) {
    const spec = JSON.parse(holder.textContent);
    await Plotly.newPlot(document.getElementById(holder.dataset.target), spec.data, spec.layout, spec.config);
  }
  document.body.dataset.drawn = "yes";
})();
"""


def _json_script(payload: str) -> str:
    """JSON safe inside a <script> element ("</" cannot close it)."""
    return payload.replace("</", "<\\/")


def _provenance_table(provenance: dict) -> str:
    rows = [("created", provenance["created"]), ("clipscope", " ".join(
        f"{k} {v}" for k, v in provenance["clipscope"].items() if v)), ("models", ", ".join(provenance["models"]))]
    rows += [("image", ", ".join(f"{i.get('name', 'image')} {i['size'][0]}x{i['size'][1]} sha256 {i['sha256']}"
                                  for i in provenance["images"]))] if provenance["images"] else []
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v)
    return f"<table class='provenance'>{cells}</table>"


def _settings_line(stamp: dict | None) -> str:
    if not stamp:
        return ""
    settings = ", ".join(f"{k} = {v}" for k, v in (stamp.get("settings") or {}).items()) or "defaults"
    return (f"<p class='settings'>view <code>{html.escape(str(stamp.get('view')))}</code> · model "
            f"<code>{html.escape(str(stamp.get('model')))}</code> · {html.escape(settings)}</p>")


def figures_html(figures: list[tuple[str, str]], title: str, provenance: dict | None = None) -> str:
    """One standalone HTML page holding every (label, Plotly JSON) figure and their provenance; plotly.js is inside
    it once, compressed (works offline)."""
    provenance = provenance or export_provenance(title, [])
    parts = []
    for index, (label, payload) in enumerate(figures):
        figure = json.loads(payload)
        figure["config"] = {**figure.get("config", {}), **image_config(figure), "responsive": True}
        stamp = provenance_of((figure.get("layout") or {}).get("meta"))
        parts.append(f"<h2>{html.escape(label)}</h2>{_settings_line(stamp)}<div id='figure-{index}'></div>"
                     f"<script type='application/json' class='figure' data-target='figure-{index}'>"
                     f"{_json_script(json.dumps(figure))}</script>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:1em 2em} table.provenance th{text-align:left;padding-right:1em}"
            " .settings{color:#555;font-size:90%}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{_provenance_table(provenance)}{''.join(parts)}"
            f"<script type='application/json' id='clipscope-provenance'>{_json_script(json.dumps(provenance))}"
            f"</script><script type='text/plain' id='plotlyjs'>{_packed_plotlyjs()}</script>"
            f"<script>{LOADER}</script></body></html>")


def write_figures(tab: str, figures: list[tuple[str, str]]) -> Path:
    """Write one tab's (label, Plotly JSON) figures into "clipscope_<models>_<tab>.html"; returns the path."""
    stamps = [provenance_of((json.loads(p).get("layout") or {}).get("meta")) for _, p in figures]
    provenance = export_provenance(f"{tab} figures", stamps)
    path = export_path(tab, ".html", provenance["models"])
    path.write_text(figures_html(figures, f"clipscope: {tab}", provenance), encoding="utf-8")
    return path


def export_button(tab: str, plots: list[gr.Plot],
                  extra_figures: Callable[[gr.Request], list[tuple[str, Any]]] | None = None) -> None:
    """A button that writes the tab's figures, as they are now, into one interactive HTML file to download.

    ``extra_figures(request)`` adds figures that live outside a gr.Plot (the embedding map in a gr.HTML): (label,
    Plotly figure or its JSON) pairs read from the user's session; [] when there are none yet.
    """
    labels = [p.label or f"figure {i + 1}" for i, p in enumerate(plots)]
    with gr.Row():
        button = gr.Button(f"Export the {tab} figures (interactive HTML)", size="sm", scale=1)
        download = gr.File(label="Download", scale=2, interactive=False, height=90)

    @user_errors
    def export(request: gr.Request, *values):
        figures = [(label, payload) for label, value in zip(labels, values, strict=True)
                   if (payload := _figure_json(value)) is not None]
        for label, figure in (extra_figures(request) if extra_figures is not None else []):
            figures.append((label, figure if isinstance(figure, str) else figure.to_json()))
        if not figures:
            raise gr.Error("Nothing to export yet: draw some figures first.", print_exception=False)
        return str(write_figures(tab, figures))

    button.click(export, plots, download, api_name=f"{slug(tab)}_export")


# -- tables --------------------------------------------------------------------------------------------------------
def write_table(table, file_format: str, name: str, provenance: dict,
                coordinates: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Write a pandas table as CSV or Parquet, named after its model and ``name``, with its provenance: CSV in
    leading "# " lines (read back with ``pandas.read_csv(path, comment="#")``; text fields are quoted, so a "#"
    inside them is kept), Parquet in the schema metadata under "clipscope".

    ``coordinates`` (column name -> one value per row, e.g. the map's {"umap_x": ..., "umap_y": ...}) are added as
    columns after the table's non-numeric ones, and named in the provenance.
    """
    table = table.copy()
    if coordinates:
        at = next((i for i, c in enumerate(table.columns) if str(c).startswith("e") and str(c)[1:].isdigit()),
                  len(table.columns))
        for offset, (column, values) in enumerate(coordinates.items()):
            if len(values) != len(table):
                raise ValueError(f"{column} has {len(values)} values for {len(table)} rows.")
            table.insert(at + offset, column, list(values))
        provenance = {**provenance, "coordinates": list(coordinates)}
    models = provenance.get("models") or []
    if file_format.lower() == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        metadata = {**(arrow.schema.metadata or {}), b"clipscope": json.dumps(provenance).encode("utf-8")}
        path = export_path(name, ".parquet", models)
        pq.write_table(arrow.replace_schema_metadata(metadata), path)
        return path
    path = export_path(name, ".csv", models)
    with path.open("w", encoding="utf-8", newline="") as handle:
        for key, value in provenance.items():
            handle.write(f"# {key}: {json.dumps(value)}\n")
        table.to_csv(handle, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return path
