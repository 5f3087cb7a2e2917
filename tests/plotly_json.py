"""Reading Plotly figures as the HTTP API sends them (for tests)."""
from __future__ import annotations

import base64
import json

import numpy as np


def plotly_array(value) -> np.ndarray:
    """A trace's data array: a plain list, or plotly's base64 typed array ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(value)


def figure_json(payload) -> dict:
    """A figure as JSON: a gr.Plot's ``{"plot": JSON}``, or the JSON string itself (a PlotlyFigure's value)."""
    return json.loads(payload["plot"] if isinstance(payload, dict) else payload)


def plain_title(figure: dict) -> str:
    """A figure's title as a reader sees it: markup and the line breaks the app wraps long titles with removed."""
    import re

    title = figure["layout"].get("title") or {}
    text = title.get("text", "") if isinstance(title, dict) else str(title)
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())
