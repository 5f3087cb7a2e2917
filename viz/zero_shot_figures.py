"""Plotly figures for zero-shot classification, the similarity matrix and the softmax sliders."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from viz.embedding_figures import thumbnail_data_url
from viz.softmax import SoftmaxView
from viz.zero_shot import SimilarityMatrix, ZeroShotResult

DIAGONAL = "#00e5ff"


def top_k_figure(result: ZeroShotResult, k: int = 5) -> go.Figure:
    """The k most probable labels as horizontal bars (best on top), probability and cosine on each bar."""
    top = result.top(k)
    labels = [label for label, _ in top][::-1]
    probabilities = [p for _, p in top][::-1]
    cosine = [float(result.cosine[result.labels.index(label)]) for label in labels]
    fig = go.Figure(go.Bar(x=probabilities, y=labels, orientation="h", marker_color="#636efa",
                           text=[f"{p:.1%}" for p in probabilities], textposition="auto", customdata=cosine,
                           hovertemplate="%{y}<br>p = %{x:.4f}<br>cosine %{customdata:.4f}<extra></extra>"))
    templates = result.templates[0] if len(result.templates) == 1 else f"ensemble of {len(result.templates)} templates"
    how = ("; sigmoid per label (SigLIP): probabilities need not sum to 1" if result.probability == "sigmoid"
           else "")
    fig.update_layout(title=f"Top {len(top)} of {len(result.labels)} labels ({templates}; "
                            f"logit scale {result.logit_scale:.1f}{how})",
                      xaxis={"title": "probability", "range": [0, 1]}, height=120 + 40 * len(top),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40})
    return fig


def _diagonal_shapes(rows: int, cols: int, xref: str = "x", yref: str = "y") -> list[dict]:
    return [{"type": "rect", "xref": xref, "yref": yref, "x0": i - 0.5, "x1": i + 0.5, "y0": i - 0.5,
             "y1": i + 0.5, "line": {"color": DIAGONAL, "width": 3}} for i in range(min(rows, cols))]


def _short(texts: Sequence[str], width: int = 32) -> list[str]:
    return [t if len(t) <= width else t[:width - 1] + "…" for t in texts]


def similarity_figure(matrix: SimilarityMatrix, texts: Sequence[str], images: Sequence[Image.Image] = (),
                      image_names: Sequence[str] | None = None) -> go.Figure:
    """Cosine similarity of every image (rows) with every text (columns), values written in the cells, the
    matching pairs on the diagonal outlined (as in CLIP's training picture); small image thumbnails on the left."""
    rows, cols = matrix.cosine.shape
    names = list(image_names) if image_names is not None else [f"image {i}" for i in range(rows)]
    fig = go.Figure(go.Heatmap(z=matrix.cosine, x=list(range(cols)), y=list(range(rows)), colorscale="Viridis",
                               texttemplate="%{z:.2f}", colorbar={"title": "cosine"},
                               customdata=np.array([[names[r] for _ in range(cols)] for r in range(rows)],
                                                   dtype=object),
                               hovertemplate="%{customdata}<br>text %{x}<br>cosine %{z:.4f}<extra></extra>"))
    for shape in _diagonal_shapes(rows, cols):
        fig.add_shape(**shape)
    tick_labels = _short(texts)
    fig.update_xaxes(tickmode="array", tickvals=list(range(cols)), ticktext=tick_labels, tickangle=-35, side="top")
    fig.update_yaxes(tickmode="array", tickvals=list(range(rows)), ticktext=names, autorange="reversed")
    if images and len(images) == rows and rows <= 16:
        for r, image in enumerate(images):
            fig.add_layout_image(source=thumbnail_data_url(image, 48), xref="paper", yref="y", x=-0.01, y=r,
                                 sizex=0.9, sizey=0.9, xanchor="right", yanchor="middle", layer="above")
        fig.update_yaxes(showticklabels=False)
        left = 90
    else:
        left = 10
    fig.update_layout(title="Cosine similarity: images × texts (matching pairs on the diagonal)",
                      height=max(360, 110 + 48 * rows), margin={"l": left, "r": 10, "t": 150, "b": 10})
    return fig


def softmax_halves_figure(matrix: SimilarityMatrix, texts: Sequence[str],
                          image_names: Sequence[str] | None = None) -> go.Figure:
    """softmax(scale * cosine) over each row (image -> text) and over each column (text -> image): the two halves
    of CLIP's symmetric contrastive loss."""
    rows, cols = matrix.cosine.shape
    names = list(image_names) if image_names is not None else [f"image {i}" for i in range(rows)]
    loss = matrix.contrastive_loss()
    heads, details = ("image → text", "text → image"), ("softmax over each row", "softmax over each column")
    if matrix.probability == "sigmoid":
        heads, details = ("sigmoid per pair (SigLIP)", "the same pairs, read by text"), ("need not sum to 1", "")
    if loss is not None:
        details = tuple(f"{d}, loss {v:.3f}" if d else f"loss {v:.3f}" for d, v in zip(details, loss, strict=False))
    # two lines each, the detail smaller: side-by-side titles must not run into each other
    titles = tuple(f"{h}<br><sup>{d}</sup>" if d else h for h, d in zip(heads, details, strict=True))
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    for col, (values, name) in enumerate(((matrix.image_to_text, "row softmax"),
                                          (matrix.text_to_image, "column softmax")), start=1):
        fig.add_trace(go.Heatmap(z=values, x=list(range(cols)), y=list(range(rows)), zmin=0, zmax=1,
                                 colorscale="Magma", texttemplate="%{z:.2f}", name=name, showscale=col == 2,
                                 hovertemplate="image %{y}, text %{x}<br>p = %{z:.4f}<extra></extra>"), 1, col)
        for shape in _diagonal_shapes(rows, cols, xref=f"x{'' if col == 1 else col}",
                                      yref=f"y{'' if col == 1 else col}"):
            fig.add_shape(**shape)
        fig.update_xaxes(tickmode="array", tickvals=list(range(cols)), ticktext=_short(texts, 18), tickangle=-35,
                         row=1, col=col)
        fig.update_yaxes(tickmode="array", tickvals=list(range(rows)), ticktext=names, autorange="reversed",
                         row=1, col=col)
    after = ("sigmoid of each pair, with its bias" if matrix.probability == "sigmoid" else "softmax along each axis")
    fig.update_layout(title=f"After the logit scale ({matrix.logit_scale:.1f}) and {after}",
                      height=max(380, 160 + 40 * rows), margin={"l": 10, "r": 10, "t": 110, "b": 10})
    return fig


def softmax_sliders_figure(view: SoftmaxView, model_probabilities: Sequence[float] | None = None,
                           moved: int | None = None) -> go.Figure:
    """Every class's probability under the sliders' logits and temperature, with the model's own probabilities
    for comparison; the entropy in the title. Bars keep the model's order (most probable first) while sliders
    move, so a bar never jumps from under the pointer."""
    reference_order = model_probabilities if model_probabilities is not None else view.probabilities
    order = np.argsort(-np.asarray(reference_order, dtype=float), kind="stable")
    labels = [view.labels[i] for i in order]
    colours = ["#ef553b" if moved is not None and i == moved else "#636efa" for i in order]
    fig = go.Figure(go.Bar(x=labels, y=view.probabilities[order], name="with the sliders", marker_color=colours,
                           text=[f"{p:.1%}" for p in view.probabilities[order]], textposition="outside",
                           hovertemplate="%{x}<br>p = %{y:.4f}<extra></extra>"))
    if model_probabilities is not None:
        reference = np.asarray(model_probabilities, dtype=float)[order]
        fig.add_trace(go.Scatter(x=labels, y=reference, mode="markers", name="model (T = 1)",
                                 marker={"symbol": "line-ew-open", "size": 22, "color": "black"}))
    how = ("Sigmoid per label (SigLIP): probabilities need not sum to 1;" if view.probability == "sigmoid"
           else "Softmax")
    fig.update_layout(title=f"{how} at T = {view.temperature:.3g}: entropy {view.entropy:.3f} nats "
                            f"(flat {view.max_entropy:.3f}), sum {view.probabilities.sum():.4f}",
                      yaxis={"title": "probability", "range": [0, 1.1]}, height=380, barmode="overlay",
                      margin={"l": 40, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": 1.08})
    return fig
