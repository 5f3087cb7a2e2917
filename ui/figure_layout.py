"""How a figure is fitted to the slot it is shown in: titles wrapped to the slot's width (Plotly never wraps, so a
long title in a narrow column is cut off), a height where the figure sets none (a Plotly figure in gr.HTML would
otherwise take its container's height, which can leave no room for the axes), and the camera button's file name."""
from __future__ import annotations

import re
import textwrap

from viz.provenance import figure_filename

DEFAULT_HEIGHT = 450        # px, Plotly's own default when a figure sets none
TITLE_LINE = 22             # px per title line at Plotly's default 17 px title font
PNG_SCALE = 2               # the camera button's PNG at twice the shown size
NARROW = 40    # title characters that fit one line in a figure of about 320 px (beside a wide control column)
COLUMN = 44    # ... of about 350-380 px (two figures beside a control column, as on the Attention tab)
HALF = 64      # ... of half the row (the default)
WIDE = 130     # ... of the whole row at 1440 px


def image_config(figure: dict) -> dict:
    """Plotly config for one figure (JSON form): the camera button saves "clipscope_<model>_<view>.png"."""
    return {"toImageButtonOptions": {"format": "png", "scale": PNG_SCALE,
                                     "filename": figure_filename((figure.get("layout") or {}).get("meta"))}}


SMALL_TAGS = ("<sup>", "<sub>")   # Plotly draws these at about 70% of the size: more characters fit a line
TAG = re.compile(r"<[^>]+>")
KEEP = "\ue000"   # a private-use character standing for a space that must not break a line


def _wrap_line(line: str, chars: int) -> list[str]:
    """One line of a Plotly text wrapped at word boundaries. A line wholly inside one tag pair
    (``<sup>...</sup>``) is wrapped inside it, each piece in its own pair; other markup is never split."""
    opening = re.match(r"^(<(\w+)[^>]*>)(.*)(</\2>)$", line, re.DOTALL)
    prefix, inner, suffix = (opening.group(1), opening.group(3), opening.group(4)) if opening else ("", line, "")
    if TAG.search(inner):
        return [line]
    if prefix.lower() in SMALL_TAGS:
        chars = int(chars / 0.7)
    # a short bracketed group ("unit (3, 1)", "(4 × 48)") stays on one line: its spaces are held by a placeholder
    held = re.sub(r"\(([^()]{1,24})\)", lambda m: "(" + m.group(1).replace(" ", KEEP) + ")", inner)
    pieces = textwrap.wrap(held, chars, break_long_words=False, break_on_hyphens=False) or [""]
    return [prefix + piece.replace(KEEP, " ") + suffix for piece in pieces]


def wrapped(text: str, chars: int) -> str:
    """``text`` broken at word boundaries into lines of at most ``chars`` characters, joined by Plotly's <br>
    (a title that already has line breaks keeps them; each of its lines is wrapped on its own)."""
    lines = []
    for line in re.split(r"<br\s*/?>", text):
        lines += _wrap_line(line, chars)
    return "<br>".join(lines)


def _added_lines(before: str, after: str) -> int:
    return after.count("<br>") - len(re.findall(r"<br\s*/?>", before))


def _grow_top(layout: dict, lines: int) -> None:
    """Room for ``lines`` more lines of text above the plot: a taller top margin (and figure, if it sets a height)."""
    margin = dict(layout.get("margin") or {})
    margin["t"] = int(margin.get("t", 100)) + TITLE_LINE * lines
    layout["margin"] = margin
    if "height" in layout:
        layout["height"] = int(layout["height"]) + TITLE_LINE * lines


def fit_title(layout: dict, chars: int) -> int:
    """Wrap the layout's title to ``chars`` characters a line; returns the lines added (the caller grows the top
    margin by as many)."""
    title = layout.get("title")
    text = title.get("text") if isinstance(title, dict) else title
    if not isinstance(text, str) or not text:
        return 0
    fitted = wrapped(text, chars)
    extra_lines = _added_lines(text, fitted)
    if extra_lines > 0:
        layout["title"] = {**(title if isinstance(title, dict) else {}), "text": fitted}
    return max(extra_lines, 0)


def fit_labels(layout: dict, chars: int) -> int:
    """Wrap subplot titles (annotations) and axis titles longer than ``chars`` characters (Plotly clips them at the
    figure's edge otherwise); returns the lines added to the top row's subplot titles, which grow upwards."""
    top_row = 0
    for annotation in layout.get("annotations") or ():
        text = annotation.get("text")
        if isinstance(text, str) and len(text) > chars:
            annotation["text"] = wrapped(text, chars)
            if annotation.get("yref") == "paper" and annotation.get("yanchor") == "bottom" \
                    and float(annotation.get("y", 0)) >= 0.9:
                top_row = max(top_row, _added_lines(text, annotation["text"]))
    for name, axis in layout.items():
        if not (name.startswith("xaxis") or name.startswith("yaxis")) or not isinstance(axis, dict):
            continue
        title = axis.get("title")
        text = title.get("text") if isinstance(title, dict) else None
        if isinstance(text, str) and len(text) > chars:
            axis["title"] = {**title, "text": wrapped(text, chars)}
    return top_row


def shown_figure(figure: dict, title_chars: int | None = HALF, default_height: bool = False) -> dict:
    """The figure (Plotly JSON form) as a slot shows it: title wrapped to ``title_chars`` (None: as it is), a height
    if ``default_height`` and it has none, and the camera button's file name in its config."""
    layout = figure.setdefault("layout", {})
    if default_height and "height" not in layout:
        layout["height"] = DEFAULT_HEIGHT
    if title_chars:
        added = fit_title(layout, title_chars) + fit_labels(layout, title_chars)
        if added:
            _grow_top(layout, added)
    figure["config"] = {**figure.get("config", {}), **image_config(figure)}
    return figure
