"""Plotly figures for the embedding explorer: the joint map, the modality gap and the zero-shot evaluation.

The map is one WebGL scatter (Scattergl) with coordinates sent as float32 arrays. Each point's ``customdata`` is
its index in the joint list (images first, then texts), which the app uses to fetch an image's thumbnail on hover
and to show the point on click; thumbnails are never embedded in the figure, so it stays small.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from models.embed import EmbeddingSet
from viz.embedding_space import ModalityGap, PairSimilarities, Projection, ZeroShotEvaluation
from viz.map_payload import group_colours

COLOUR_MODES = ("modality", "label", "prediction", "cluster")
MAX_LEGEND_GROUPS = 48
IMAGE_COLOUR, CAPTION_COLOUR, CLASS_COLOUR = "#1f77b4", "#ff7f0e", "#2ca02c"


def thumbnail_data_url(image: Image.Image, size: int = 64, quality: int = 80) -> str:
    """A small JPEG of ``image`` (longest side ``size`` px) as a data URL, for hovers and axis pictures."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size), Image.BILINEAR)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name that agrees with it: "red heart" is red (viz.map_payload.group_colours)."""
    return group_colours(names)


def _image_hover(es: EmbeddingSet, predictions: Sequence[str] | None) -> list[str]:
    hover = []
    for i, item in enumerate(es.images):
        lines = [item.name or f"image {i}"]
        if item.label:
            lines.append(f"label: {item.label}")
        if item.caption:
            lines.append(f"caption: {item.caption}")
        if predictions is not None:
            lines.append(f"zero-shot: {predictions[i]}")
        hover.append("<br>".join(lines))
    return hover


def embedding_map_figure(es: EmbeddingSet, projection: Projection, colour_by: str = "modality",
                         predictions: Sequence[str] | None = None, highlight: Sequence[int] = (),
                         show_lines: bool = True, title: str | None = None, clusters: Sequence[str] | None = None,
                         cluster_labels: Sequence[tuple[str, float, float]] = ()) -> go.Figure:
    """Images and texts on the 2-D map, coloured by modality, label, zero-shot prediction or cluster (``clusters``:
    each image's cluster name); image-caption pairs joined by lines; ``highlight`` images (a query's nearest, best
    first) ringed and numbered; ``cluster_labels`` (name, x, y) written at the cluster centres."""
    if colour_by not in COLOUR_MODES:
        raise ValueError(f"Colour by one of {', '.join(COLOUR_MODES)}, not {colour_by!r}.")
    if colour_by == "prediction" and predictions is None:
        raise ValueError("Colouring by zero-shot prediction needs the predictions (the set has no class labels).")
    if colour_by == "cluster" and clusters is None:
        raise ValueError("Colouring by cluster needs each image's cluster.")
    n = len(es.images)
    xy_images, xy_texts = projection.image_coords, projection.text_coords
    hover = np.asarray(_image_hover(es, predictions), dtype=object)
    traces: list[go.Scattergl] = []
    if show_lines and (es.image_caption >= 0).any():
        paired = np.flatnonzero(es.image_caption >= 0)
        ends = xy_texts[es.image_caption[paired]]
        gaps = np.full((len(paired), 2), np.nan, dtype=np.float32)
        segments = np.stack([xy_images[paired], ends, gaps], axis=1).reshape(-1, 2)
        traces.append(go.Scattergl(x=segments[:, 0], y=segments[:, 1], mode="lines", name="image–caption pairs",
                                   line={"color": "rgba(120,120,120,0.35)", "width": 1}, hoverinfo="skip"))
    groups = {"modality": ["images"] * n, "label": [label or "no label" for label in es.labels],
              "prediction": list(predictions) if predictions is not None else [],
              "cluster": list(clusters) if clusters is not None else []}[colour_by]
    colour_of = _colours(groups + [label or "no label" for label in es.text_labels])
    names = list(dict.fromkeys(groups))
    image_traces: list[go.Scattergl] = []
    if len(names) <= MAX_LEGEND_GROUPS:
        for rank, name in enumerate(names):
            rows = np.flatnonzero(np.asarray(groups, dtype=object) == name)
            colour = IMAGE_COLOUR if colour_by == "modality" else colour_of[name]
            image_traces.append(go.Scattergl(x=xy_images[rows, 0], y=xy_images[rows, 1], mode="markers", name=name,
                                             marker={"size": 6, "color": colour, "opacity": 0.9}, legendrank=rank,
                                             customdata=rows.astype(np.int32), hovertext=hover[rows],
                                             hovertemplate="%{hovertext}<extra></extra>"))
    else:  # too many groups for a legend: one trace, each point in its group's colour
        image_traces.append(go.Scattergl(x=xy_images[:, 0], y=xy_images[:, 1], mode="markers", name="images",
                                         marker={"size": 6, "color": [colour_of[g] for g in groups], "opacity": 0.9},
                                         customdata=np.arange(n, dtype=np.int32), hovertext=hover, legendrank=0,
                                         hovertemplate="%{hovertext}<extra></extra>"))
    # texts are drawn before the images (a later trace is drawn on top), so no text marker hides an image
    for kind, symbol, default in (("caption", "diamond", CAPTION_COLOUR), ("class", "star", CLASS_COLOUR)):
        rows = np.flatnonzero(np.asarray(es.text_kinds, dtype=object) == kind)
        if not len(rows):
            continue
        if colour_by == "modality":
            colour = default
        else:
            colour = [colour_of[es.text_labels[r] or "no label"] for r in rows]
        text_hover = np.asarray([f"{kind}: {es.texts[r]}" for r in rows], dtype=object)
        traces.append(go.Scattergl(x=xy_texts[rows, 0], y=xy_texts[rows, 1], mode="markers",
                                   name="captions" if kind == "caption" else "class prompts",
                                   marker={"size": 9 if kind == "caption" else 13, "symbol": symbol, "color": colour,
                                           "line": {"width": 1, "color": "black"}, "opacity": 0.8},
                                   legendrank=1000 + len(traces),
                                   customdata=(rows + n).astype(np.int32), hovertext=text_hover,
                                   hovertemplate="%{hovertext}<extra></extra>"))
    traces += image_traces
    if len(cluster_labels):
        names, xs, ys = zip(*cluster_labels, strict=True)
        traces.append(go.Scattergl(x=list(xs), y=list(ys), mode="text", text=list(names), name="cluster names",
                                   textfont={"size": 12, "color": "#111"}, hoverinfo="skip"))
    if len(highlight):
        rows = np.asarray(highlight, dtype=np.int64)
        # thin rings a little larger than a point, numbered beside it: neighbouring results stay apart
        traces.append(go.Scattergl(x=xy_images[rows, 0], y=xy_images[rows, 1], mode="markers+text",
                                   name=f"query: top {len(rows)}", text=[str(i + 1) for i in range(len(rows))],
                                   textposition="top right", textfont={"size": 10, "color": "#b00000"},
                                   marker={"size": 10, "symbol": "circle-open", "color": "#d00000",
                                           "line": {"width": 1.5}},
                                   customdata=rows.astype(np.int32), hovertext=hover[rows],
                                   hovertemplate="%{hovertext}<extra></extra>"))
    fig = go.Figure(traces)
    method = projection.method.upper()
    gap = ", modality means removed" if projection.remove_gap else ""
    note = f"<br><sup>{projection.note}</sup>" if projection.note else ""
    fig.update_layout(title=title or f"{method} of {n} images and {len(es.texts)} texts ({es.model_id}{gap}){note}",
                      height=620, hovermode="closest", legend={"itemsizing": "constant"},
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    fig.update_xaxes(showticklabels=False, title=f"{method} 1")
    fig.update_yaxes(showticklabels=False, title=f"{method} 2")
    return fig


def modality_gap_figure(pairs: PairSimilarities, gap: ModalityGap | None) -> go.Figure:
    """Histograms of the cosine similarity of matching and non-matching image-text pairs, titled with the gap's
    length and the number of image-caption pairs it was measured on (``gap`` None: no captions, no gap)."""
    fig = go.Figure([
        go.Histogram(x=pairs.non_matching, name=f"non-matching ({len(pairs.non_matching):,})", histnorm="probability",
                     opacity=0.6, marker_color="#7f7f7f", nbinsx=60),
        go.Histogram(x=pairs.matching, name=f"matching ({len(pairs.matching):,})", histnorm="probability",
                     opacity=0.75, marker_color="#d62728", nbinsx=60),
    ])
    if gap is None:
        measured = "no image has a caption, so no modality gap (it is measured on paired image-caption embeddings)"
    else:
        measured = (f"modality gap ‖mean image − mean caption‖ = {gap.length:.3f} "
                    f"over {gap.pairs:,} paired image-caption embeddings")
    fig.update_layout(barmode="overlay", height=380, margin={"l": 40, "r": 10, "t": 70, "b": 40},
                      title=f"Cosine similarity of image-text pairs<br><sup>{measured}</sup>",
                      xaxis_title="cosine similarity", yaxis_title="fraction of pairs")
    return fig


def per_class_accuracy_figure(evaluation: ZeroShotEvaluation) -> go.Figure:
    """Zero-shot accuracy of each class as bars, worst class first."""
    order = evaluation.worst_first
    names = [evaluation.class_names[i] for i in order]
    accuracy = evaluation.per_class[order]
    fig = go.Figure(go.Bar(x=names, y=accuracy, marker_color=accuracy, marker_colorscale="RdYlGn",
                           marker_cmin=0, marker_cmax=1, customdata=evaluation.counts[order],
                           hovertemplate="%{x}<br>accuracy %{y:.1%} of %{customdata} images<extra></extra>"))
    fig.update_layout(title=f"Per-class zero-shot accuracy, worst first (top-1 {evaluation.top1:.1%}, "
                            f"top-5 {evaluation.top5:.1%})", yaxis={"title": "accuracy", "range": [0, 1.02]},
                      height=400, margin={"l": 40, "r": 10, "t": 50, "b": 120})
    return fig


def confusion_figure(evaluation: ZeroShotEvaluation) -> go.Figure:
    """The confusion matrix (true class rows, predicted class columns), classes in worst-first order."""
    order = evaluation.worst_first
    names = [evaluation.class_names[i] for i in order]
    counts = evaluation.confusion[np.ix_(order, order)]
    show_values = len(names) <= 10  # 36 classes would print 1,296 numbers: hover instead
    fig = go.Figure(go.Heatmap(z=counts, x=names, y=names, colorscale="Blues", colorbar={"title": "images"},
                               texttemplate="%{z}" if show_values else None,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="predicted class", tickangle=-45)
    size = min(900, 220 + 18 * len(names))
    fig.update_layout(title="Confusion matrix (worst classes first)", height=size,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig
