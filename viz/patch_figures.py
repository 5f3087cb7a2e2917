"""Plotly figures for viz/patches.py and viz/residual.py.

Grids of many small maps are drawn as one mosaic trace (gaps between tiles), never one trace per tile: a single
trace is far cheaper to send and to render.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
import torch

SIMILARITY_SCALE = dict(colorscale="RdBu", reversescale=True, zmin=-1.0, zmax=1.0)


def mosaic(tiles: np.ndarray, columns: int, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """(n, h, w, ...) tiles -> one (rows*h + (rows-1)*gap, columns*w + (columns-1)*gap, ...) array, row-major,
    with ``fill`` in the gaps and in unused cells."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / columns)
    dtype = np.result_type(tiles.dtype, np.asarray(fill).dtype)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, *tiles.shape[3:]), fill,
                  dtype=dtype)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def filters_figure(tiles: np.ndarray, explained: np.ndarray, columns: int = 7) -> go.Figure:
    """The patch-embedding filters' principal components, (k, p, p, 3) uint8 tiles, as one image mosaic."""
    tiles = np.asarray(tiles)
    k = len(tiles)
    image = mosaic(tiles, min(columns, k), gap=1, fill=255).astype(np.uint8)
    total = float(np.sum(explained))
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    fig.update_layout(
        title=f"First {k} principal components of the patch-embedding filters ({total:.1%} of variance)",
        xaxis=dict(showticklabels=False, title="components, row by row"),
        yaxis=dict(showticklabels=False),
    )
    return fig


def _tile_ticks(count: int, size: int, gap: int = 1) -> dict:
    """Axis ticks at the centre of each tile, labelled by tile index."""
    return dict(tickmode="array", tickvals=[i * (size + gap) + (size - 1) / 2 for i in range(count)],
                ticktext=[str(i) for i in range(count)])


def position_similarity_figure(sim) -> go.Figure:
    """(gh, gw, gh, gw) similarities as one heatmap: tile (r, c) is position (r, c)'s similarity to all positions."""
    sim = _numpy(sim)
    gh, gw = sim.shape[:2]
    z = mosaic(sim.reshape(gh * gw, gh, gw), columns=gw, gap=1, fill=np.nan)
    fig = go.Figure(go.Heatmap(z=z, colorbar=dict(title="cosine"), hoverongaps=False,
                               hovertemplate="similarity %{z:.3f}<extra></extra>", **SIMILARITY_SCALE))
    fig.update_layout(
        title=f"Position-embedding cosine similarity ({gh}x{gw} patch grid)",
        xaxis=dict(title="input patch column", **_tile_ticks(gw, gw)),
        yaxis=dict(title="input patch row", autorange="reversed", scaleanchor="x", **_tile_ticks(gh, gh)),
    )
    return fig


def token_similarity_figure(sim_map, query_rc: tuple[int, int]) -> go.Figure:
    """A (gh, gw) similarity map with the query patch outlined."""
    sim_map = _numpy(sim_map)
    r, c = query_rc
    fig = go.Figure(go.Heatmap(z=sim_map, colorbar=dict(title="cosine"),
                               hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>", **SIMILARITY_SCALE))
    fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color="black", width=3))
    fig.update_layout(
        title=f"Cosine similarity of every patch token to patch (row {r}, col {c})",
        xaxis=dict(title="patch column", constrain="domain"),
        yaxis=dict(title="patch row", autorange="reversed", scaleanchor="x", constrain="domain"),
        height=420, margin={"l": 50, "r": 10, "t": 60, "b": 40},
    )
    return fig


def patch_pca_figure(rgb: np.ndarray) -> go.Figure:
    """(gh, gw, 3) RGB in [0, 1] from patch_pca_rgb as an image."""
    rgb = np.asarray(rgb)
    image = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    fig = go.Figure(go.Image(z=image))
    fig.update_layout(title=f"First 3 principal components of the patch tokens as RGB ({rgb.shape[0]}x{rgb.shape[1]})",
                      xaxis=dict(title="patch column"), yaxis=dict(title="patch row"))
    return fig


def residual_figure(norms: Mapping[str, np.ndarray]) -> go.Figure:
    """One line per quantity (resid_post, attn_out, mlp_out) of mean L2 norm against block index."""
    fig = go.Figure()
    for name, values in norms.items():
        values = np.asarray(values)
        fig.add_trace(go.Scatter(x=np.arange(len(values)), y=values, mode="lines+markers", name=name))
    fig.update_layout(title="Mean L2 norm of the residual stream and of each block's writes",
                      xaxis=dict(title="block index", dtick=1), yaxis=dict(title="mean L2 norm per token"))
    return fig


def attention_correlation_figure(corr: np.ndarray) -> go.Figure:
    """(L, L) Pearson correlations between layers' head-averaged attention maps."""
    corr = np.asarray(corr)
    layers = corr.shape[0]
    fig = go.Figure(go.Heatmap(z=corr, x=np.arange(layers), y=np.arange(layers), colorbar=dict(title="Pearson r"),
                               hovertemplate="block %{y} vs %{x}: %{z:.3f}<extra></extra>", **SIMILARITY_SCALE))
    fig.update_layout(title=f"Correlation of head-averaged attention maps between {layers} blocks",
                      xaxis=dict(title="block index", dtick=1, range=[-0.5, layers - 0.5], constrain="domain"),
                      yaxis=dict(title="block index", dtick=1, range=[layers - 0.5, -0.5], scaleanchor="x",
                                 constrain="domain"))
    return fig
