"""Downloads: a tab's current figures as one interactive HTML file (PNG comes from each figure's own toolbar), and the
embedding table as CSV or Parquet."""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import gradio as gr
import plotly.io as pio

from ui.errors import user_errors

EXPORT_DIR = Path(tempfile.gettempdir()) / "clipscope-exports"


def _figure_json(value) -> str | None:
    """The Plotly JSON inside a gr.Plot value (a PlotData, its dict form, or None)."""
    if value is None:
        return None
    plot = value.get("plot") if isinstance(value, dict) else getattr(value, "plot", None)
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", "plotly")
    return plot if kind == "plotly" and plot else None


def figures_html(figures: list[tuple[str, str]], title: str) -> str:
    """One standalone HTML page holding every (label, Plotly JSON) figure, plotly.js inlined once (works offline)."""
    parts = []
    for index, (label, payload) in enumerate(figures):
        figure = pio.from_json(payload)
        parts.append(f"<h2>{label}</h2>" + figure.to_html(full_html=False, include_plotlyjs=index == 0))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family: sans-serif'><h1>{title}</h1>{''.join(parts)}</body></html>")


def export_path(name: str, suffix: str) -> Path:
    """A fresh file under the export folder, named after the view and the time."""
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return EXPORT_DIR / f"clipscope-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}{suffix}"


def export_button(tab: str, plots: list[gr.Plot]) -> None:
    """A button that writes the tab's figures, as they are now, into one interactive HTML file to download."""
    labels = [p.label or f"figure {i + 1}" for i, p in enumerate(plots)]
    with gr.Row():
        button = gr.Button(f"Export the {tab} figures (interactive HTML)", size="sm", scale=1)
        download = gr.File(label="Download", scale=2, interactive=False, height=90)

    @user_errors
    def export(*values):
        figures = [(label, payload) for label, value in zip(labels, values, strict=True)
                   if (payload := _figure_json(value)) is not None]
        if not figures:
            raise gr.Error("Nothing to export yet: draw some figures first.", print_exception=False)
        path = export_path(tab, ".html")
        path.write_text(figures_html(figures, f"clipscope: {tab}"), encoding="utf-8")
        return str(path)

    slug = re.sub(r"[^a-z0-9]+", "_", tab.lower()).strip("_")
    button.click(export, plots, download, api_name=f"{slug}_export")
