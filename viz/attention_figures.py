"""Plotly figures for the attention views. Each builder takes arrays from viz.attention / AttentionSession."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.colors as px_colors
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from viz.attention import DISTANCE_CONVENTIONS, fuse_heads
from viz.attention_session import AttentionSteps
from viz.patch_figures import mosaic
from viz.softmax import entropy

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


def overview_figure(maps, title: str) -> go.Figure:
    """Every layer x head map of one query at once (rows: layers, columns: heads; bertviz's "model view" on the
    image), each map divided by its own maximum so that a head that looks at one patch and one that spreads out are
    both visible; the hover gives the raw weight."""
    maps = _np(maps)
    layers, heads, h, w = maps.shape
    tiles = maps.reshape(layers * heads, h, w)
    peaks = tiles.reshape(len(tiles), -1).max(axis=1).clip(min=1e-12)[:, None, None]
    raw = mosaic(tiles, heads)
    fig = go.Figure(go.Heatmap(z=mosaic(tiles / peaks, heads), customdata=raw, colorscale=HEAT, hoverongaps=False,
                               zmin=0, zmax=1, colorbar={"title": "share of<br>the map's max"},
                               hovertemplate="weight %{customdata:.3f}<extra></extra>"))
    fig.update_xaxes(tickvals=[c * (w + 1) + (w - 1) / 2 for c in range(heads)],
                     ticktext=[f"head {c}" for c in range(heads)], side="top", showgrid=False, zeroline=False)
    fig.update_yaxes(tickvals=[r * (h + 1) + (h - 1) / 2 for r in range(layers)],
                     ticktext=[f"layer {r}" for r in range(layers)], autorange="reversed", scaleanchor="x",
                     showgrid=False, zeroline=False)
    fig.update_layout(title=title, margin={"l": 60, "r": 10, "t": 80, "b": 10},
                      height=min(1400, max(360, 60 + layers * 70)))
    return fig


def head_phrase(head: int | str, heads: int) -> str:
    """"head 2" for one head, "mean of 4 heads" for a fusion: what a figure title says it shows."""
    return f"head {head}" if isinstance(head, int) else f"{head} of {heads} heads"


def steps_figure(steps: Sequence[AttentionSteps], token_labels: Sequence[str], layer: int, head: int | str,
                 query_label: str, prefix_tokens: int = 1) -> go.Figure:
    """Scores q·k × scale / T, the softmax weights and the output for one query at one layer, token by token.

    ``steps`` holds one head's computation (``head`` its index), or for ``head`` = "mean" / "max" / "min" every
    head's: the figure then draws each head's scores, the fused weight row (the row the overlay shows) and every
    head's output one after another.
    Keys are numbered on the x axis (prefix tokens first, in another colour); the hover names each token.
    """
    steps = list(steps)
    fusion = head if isinstance(head, str) else None
    heads = len(steps)
    first = steps[0]
    scaled = np.stack([_np(s.raw_scores) * s.scale / s.temperature for s in steps])
    weights = np.stack([_np(s.weights) for s in steps])
    tokens = scaled.shape[1]
    keys = np.arange(tokens)
    names = np.asarray(list(token_labels), dtype=object)
    colours = ["#ab63fa" if t < prefix_tokens else None for t in keys]
    if fusion is None:
        shown_weights = weights[0]
    else:
        shown_weights = _np(fuse_heads(torch.as_tensor(weights)[None, :, None, :], fusion))[0, 0]
    spread = (f"entropy {entropy(shown_weights):.3f} nats (uniform {math.log(tokens):.3f})"
              if fusion in (None, "mean") else f"sum {shown_weights.sum():.3f}: not a distribution")
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.16, subplot_titles=(
        f"scores q·k × {first.scale:.4f} / T, T = {first.temperature:g}"
        + ("" if fusion is None else f" ({heads} heads)"),
        f"softmax{'' if fusion is None else f' ({fusion} of heads)'}: {spread}",
        "output = weights · V" + (" (per head dimension)" if fusion is None
                                  else f", heads concatenated ({heads} × {first.output.shape[-1]})")))
    hover = "key %{x}: %{customdata}<br>%{y:.4f}<extra>%{fullData.name}</extra>"
    if fusion is None:
        fig.add_trace(go.Bar(x=keys, y=scaled[0], name="scaled score", customdata=names, hovertemplate=hover,
                             marker_color=[c or "#636efa" for c in colours]), 1, 1)
    else:
        for h in range(heads):
            fig.add_trace(go.Scatter(x=keys, y=scaled[h], mode="lines+markers", name=f"head {h}",
                                     marker={"size": 4}, customdata=names, hovertemplate=hover), 1, 1)
    fig.add_trace(go.Bar(x=keys, y=shown_weights, name="weight", customdata=names, hovertemplate=hover,
                         marker_color=[c or "#ef553b" for c in colours], showlegend=False), 2, 1)
    output = np.concatenate([_np(s.output) for s in steps])
    fig.add_trace(go.Bar(y=output, name="output", marker_color="#00cc96", showlegend=False,
                         hovertemplate="dimension %{x}<br>%{y:.4f}<extra></extra>"), 3, 1)
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    prefix = {0: "", 1: "0: prefix (purple), then "}.get(prefix_tokens,
                                                          f"0–{prefix_tokens - 1}: prefix (purple), then ")
    for row in (1, 2):
        fig.update_xaxes(title_text=f"key ({prefix}patches)", title_standoff=2, range=[-0.5, tokens - 0.5],
                         row=row, col=1)
    fig.update_xaxes(title_text="head dimension" if fusion is None else "dimension (heads one after another)",
                     row=3, col=1)
    fig.update_layout(title=f"Step by step: layer {layer}, {head_phrase(head, heads)}, query {query_label}",
                      showlegend=fusion is not None, legend={"orientation": "h", "y": 1.1, "x": 1,
                                                             "xanchor": "right", "yanchor": "bottom"},
                      height=760, margin={"l": 40, "r": 10, "t": 90, "b": 40})
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


def _discrete_scale(count: int, palette: Sequence[str]) -> list[list]:
    """A colour scale with one flat band per category 0..count-1 (so a colour bar reads as a legend)."""
    scale = []
    for i in range(count):
        colour = palette[i % len(palette)]
        scale += [[i / count, colour], [(i + 1) / count, colour]]
    return scale


def patch_zero_shot_figure(image: np.ndarray, similarities, prompts: Sequence[str]) -> go.Figure:
    """Which prompt each patch matches best, over the image, one colour per prompt named in the colour bar; hover
    shows the best prompt, its cosine and the runner-up's."""
    sims = _np(similarities).astype(float)
    best = sims.argmax(-1)
    height, width = image.shape[:2]
    rows, cols = best.shape
    count = len(prompts)
    ranked = np.sort(sims, axis=-1)
    second = ranked[..., -2] if count > 1 else np.full(best.shape, np.nan)
    names = np.asarray(prompts, dtype=object)[best]
    shares = [f"{p} ({(best == i).mean():.0%} of patches)" for i, p in enumerate(prompts)]
    fig = go.Figure([
        go.Image(z=image, hoverinfo="skip"),
        go.Heatmap(z=best, x0=width / cols / 2, dx=width / cols, y0=height / rows / 2, dy=height / rows,
                   opacity=0.5, colorscale=_discrete_scale(count, px_colors.qualitative.Plotly), zmin=-0.5,
                   zmax=count - 0.5, customdata=np.dstack([names, sims.max(-1), second]),
                   colorbar={"title": "best prompt", "tickmode": "array", "tickvals": list(range(count)),
                             "ticktext": shares, "len": min(1.0, 0.12 + 0.1 * count)},
                   hovertemplate="%{customdata[0]}<br>cosine %{customdata[1]:.3f} (next best %{customdata[2]:.3f})"
                                 "<extra></extra>"),
    ])
    fig.update_layout(title="Best-matching prompt per patch (colour = prompt; hover: cosine)", height=420,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(visible=False, range=[0, width])
    fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    return fig


def token_relevance_figure(tokens: Sequence[str], scores, special: Sequence[bool] | None = None) -> go.Figure:
    """Relevance of each prompt token. The start / end / pooled tokens usually hold nearly all of it (the text
    embedding is read there), so they are drawn apart, each labelled with its share, and the content tokens get
    their own axis, their shares of the content relevance on the bars."""
    scores = _np(scores).astype(float)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    special = list(special) if special is not None else [_is_special(t) for t in tokens]
    total = float(np.abs(scores).sum()) or 1.0
    content = [i for i, s in enumerate(special) if not s]
    apart = [i for i, s in enumerate(special) if s]
    content_total = float(np.abs(scores[content]).sum()) or 1.0
    fig = make_subplots(rows=1, cols=2, column_widths=[0.75, 0.25], horizontal_spacing=0.1, subplot_titles=(
        f"content tokens ({sum(abs(scores[i]) for i in content) / total:.0%} of the relevance)",
        f"start / end tokens ({sum(abs(scores[i]) for i in apart) / total:.0%})"))
    fig.add_trace(go.Bar(x=[labels[i] for i in content], y=scores[content], marker_color="#00cc96", name="content",
                         text=[f"{abs(scores[i]) / content_total:.0%}" for i in content], textposition="outside",
                         hovertemplate="%{x}<br>relevance %{y:.4f}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=[labels[i] for i in apart], y=scores[apart], marker_color="#bbbbbb", name="start / end",
                         text=[f"{abs(scores[i]) / total:.0%}" for i in apart], textposition="outside",
                         hovertemplate="%{x}<br>relevance %{y:.4f}<extra></extra>"), 1, 2)
    fig.update_yaxes(title_text="relevance", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(title="Relevance of each prompt token for the image-text similarity", height=340,
                      showlegend=False, margin={"l": 40, "r": 10, "t": 70, "b": 40})
    return fig


def _is_special(token: str) -> bool:
    """Start, end, padding, class and pooled tokens as the towers spell them: "<start_of_text>", "</s>", "[CLS]",
    "<cls>", "... (pooled)"."""
    token = token.strip()
    return token.endswith("(pooled)") or (len(token) > 2 and ((token[0], token[-1]) in (("<", ">"), ("[", "]"))))
