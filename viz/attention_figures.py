"""Plotly figures for the attention views. Each builder takes arrays from viz.attention / AttentionSession."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from viz.attention import DISTANCE_CONVENTIONS
from viz.attention_session import AttentionSteps
from viz.patch_figures import mosaic

HEAT = "Inferno"


def _np(values) -> np.ndarray:
    return values.detach().float().cpu().numpy() if torch.is_tensor(values) else np.asarray(values, dtype=float)


def overlay_figure(image: np.ndarray, heat, title: str, query_cell: tuple[int, int] | None = None,
                   opacity: float = 0.55) -> go.Figure:
    """A (rows, cols) map stretched over the (H, W, 3) image the model saw; the query patch outlined."""
    heat = _np(heat)
    height, width = image.shape[:2]
    rows, cols = heat.shape
    fig = go.Figure([
        go.Image(z=image, hoverinfo="skip"),
        go.Heatmap(z=heat, x0=width / cols / 2, dx=width / cols, y0=height / rows / 2, dy=height / rows,
                   colorscale=HEAT, opacity=opacity, colorbar={"title": "weight"},
                   hovertemplate="row %{customdata[0]}, col %{customdata[1]}<br>%{z:.4f}<extra></extra>",
                   customdata=np.dstack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"))),
    ])
    if query_cell is not None:
        r, c = query_cell
        fig.add_shape(type="rect", x0=c * width / cols, x1=(c + 1) * width / cols, y0=r * height / rows,
                      y1=(r + 1) * height / rows, line={"color": "cyan", "width": 3})
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=420)
    fig.update_xaxes(visible=False, range=[0, width])
    fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    return fig


def head_grid_figure(maps, title: str) -> go.Figure:
    """All heads' (rows, cols) maps as one mosaic heatmap, one cell block per head, labelled."""
    maps = _np(maps)
    n, h, w = maps.shape
    columns = math.ceil(math.sqrt(n))
    fig = go.Figure(go.Heatmap(z=mosaic(maps, columns), colorscale=HEAT, hoverongaps=False,
                               colorbar={"title": "weight"}))
    fig.update_layout(annotations=[  # one call: add_annotation re-validates the whole list each time
        {"x": (i % columns) * (w + 1) + (w - 1) / 2, "y": (i // columns) * (h + 1) - 0.9, "text": f"head {i}",
         "showarrow": False, "font": {"size": 11}} for i in range(n)])
    fig.update_yaxes(autorange="reversed", visible=False, scaleanchor="x")
    fig.update_xaxes(visible=False)
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 50, "b": 10}, height=460)
    return fig


def steps_figure(steps: AttentionSteps, token_labels: Sequence[str]) -> go.Figure:
    """Scores q.k * scale / T and the softmax weights for one query, token by token."""
    scaled = _np(steps.raw_scores) * steps.scale / steps.temperature
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.12,
                        subplot_titles=(f"scores q·k × {steps.scale:.4f} / T (T = {steps.temperature:g})",
                                        f"softmax weights (entropy {steps.entropy:.3f} nats, "
                                        f"uniform {math.log(len(scaled)):.3f})",
                                        "output = weights · V (one value per head dimension)"))
    fig.add_trace(go.Bar(x=list(token_labels), y=scaled, name="scaled score", marker_color="#636efa"), 1, 1)
    fig.add_trace(go.Bar(x=list(token_labels), y=_np(steps.weights), name="weight", marker_color="#ef553b"), 2, 1)
    fig.add_trace(go.Bar(y=_np(steps.output), name="output", marker_color="#00cc96"), 3, 1)
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="head dimension", row=3, col=1)
    fig.update_layout(showlegend=False, height=620, margin={"l": 40, "r": 10, "t": 50, "b": 40})
    return fig


def mean_distance_figure(distances, prefix_attention: str = "distance_zero") -> go.Figure:
    """Mean attention distance of every head against depth (one point per head), titled with the convention the
    distances were computed under (``prefix_attention`` of :func:`viz.attention.mean_attention_distance`)."""
    distances = _np(distances)
    layers, heads = distances.shape
    x = np.repeat(np.arange(layers), heads)
    fig = go.Figure(go.Scatter(x=x, y=distances.reshape(-1), mode="markers",
                               customdata=np.tile(np.arange(heads), layers),
                               hovertemplate="layer %{x}, head %{customdata}<br>%{y:.1f} px<extra></extra>"))
    fig.update_layout(title=f"Mean attention distance per head<br><sup>{DISTANCE_CONVENTIONS[prefix_attention]}</sup>",
                      xaxis_title="layer (depth)", yaxis_title="mean attention distance (pixels)", height=400)
    fig.update_xaxes(range=[-0.5, layers - 0.5], dtick=1)
    return fig


def patch_grid_figure(image: np.ndarray, grid: tuple[int, int], patch_size: tuple[int, int],
                      prefix_tokens: Sequence[str]) -> go.Figure:
    """The input as the model sees it with the patch grid and token indices (prefix tokens come first)."""
    height, width = image.shape[:2]
    fig = go.Figure(go.Image(z=image))
    line = {"color": "white", "width": 1}
    shapes = [{"type": "line", "x0": 0, "x1": width, "y0": r * height / grid[0], "y1": r * height / grid[0],
               "line": line} for r in range(1, grid[0])]
    shapes += [{"type": "line", "y0": 0, "y1": height, "x0": c * width / grid[1], "x1": c * width / grid[1],
                "line": line} for c in range(1, grid[1])]
    labels = []
    if grid[0] * grid[1] <= 400:
        labels = [{"x": (c + 0.5) * width / grid[1], "y": (r + 0.5) * height / grid[0], "showarrow": False,
                   "text": str(len(prefix_tokens) + r * grid[1] + c), "font": {"size": 9, "color": "white"}}
                  for r in range(grid[0]) for c in range(grid[1])]
    fig.update_layout(shapes=shapes, annotations=labels)  # one call each: add_* re-validates the list every time
    fig.update_layout(title=f"{grid[0]}x{grid[1]} patches of {patch_size[0]}x{patch_size[1]} px "
                            f"+ prefix tokens {', '.join(prefix_tokens) or 'none'} = "
                            f"{grid[0] * grid[1] + len(prefix_tokens)} tokens", height=420,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def patch_zero_shot_figure(image: np.ndarray, similarities, prompts: Sequence[str]) -> go.Figure:
    """Which prompt each patch matches best, over the image; hover shows the cosine."""
    sims = _np(similarities)
    best = sims.argmax(-1)
    height, width = image.shape[:2]
    rows, cols = best.shape
    labels = np.asarray(prompts, dtype=object)[best]
    fig = go.Figure([
        go.Image(z=image, hoverinfo="skip"),
        go.Heatmap(z=best, x0=width / cols / 2, dx=width / cols, y0=height / rows / 2, dy=height / rows,
                   opacity=0.5, colorscale="Turbo", zmin=0, zmax=max(len(prompts) - 1, 1), showscale=False,
                   customdata=np.dstack([labels, sims.max(-1).round(3)]),
                   hovertemplate="%{customdata[0]}<br>cosine %{customdata[1]}<extra></extra>"),
    ])
    fig.update_layout(title="Best-matching prompt per patch", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(visible=False, range=[0, width])
    fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    return fig


def token_relevance_figure(tokens: Sequence[str], scores) -> go.Figure:
    """Relevance of each prompt token (start and end tokens included) as bars."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Bar(x=labels, y=_np(scores), marker_color="#00cc96"))
    fig.update_layout(title="Relevance of each prompt token for the image-text similarity", height=320,
                      yaxis_title="relevance", margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig
