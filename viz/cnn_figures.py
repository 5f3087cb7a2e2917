"""Plotly figures for the CNN views (viz/cnn.py, viz/cam.py, viz/probes.py).

Grids of many channel maps are coloured here and sent as one PNG inside the figure, not as thousands of cells.
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from models.receptive_field import ReceptiveField
from viz.cam import Prediction
from viz.patch_figures import mosaic
from viz.probes import CueConflictResult, ShiftProbe

MAP_SCALE = "Viridis"
CAM_SCALE = "Jet"
MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}


def _lookup_table(scale: str) -> np.ndarray:
    """(256, 3) uint8 colours of a Plotly colour scale."""
    colours = sample_colorscale(scale, list(np.linspace(0, 1, 256)), colortype="tuple")
    return (np.asarray(colours) * (255 if max(max(c) for c in colours) <= 1 else 1)).round().astype(np.uint8)


def colourise(values: np.ndarray, scale: str = MAP_SCALE, gap_colour: int = 255) -> np.ndarray:
    """Values in [0, 1] (NaN = gap) -> (..., 3) uint8 RGB through a Plotly colour scale."""
    table = _lookup_table(scale)
    index = np.clip(np.nan_to_num(values, nan=0.0) * 255, 0, 255).round().astype(int)
    rgb = table[index]
    rgb[np.isnan(values)] = gap_colour
    return rgb


def png_source(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 array as a PNG data URI (what go.Image sends instead of every pixel as a number)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_axes(fig: go.Figure, height: int, width: int, row=None, col=None) -> None:
    fig.update_xaxes(visible=False, range=[-0.5, width - 0.5], row=row, col=col)
    fig.update_yaxes(visible=False, range=[height - 0.5, -0.5], scaleanchor="x" if row is None else None,
                     row=row, col=col)


def _pixel_upscale(rgb: np.ndarray, minimum: int = 256) -> np.ndarray:
    """Nearest-neighbour upscaling so small maps stay crisp in the browser (the PNG stays small)."""
    factor = max(1, math.ceil(minimum / max(rgb.shape[:2])))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


# -- overview ------------------------------------------------------------------------------------------------------
def stage_shapes_figure(shapes: dict[str, tuple[int, ...]]) -> go.Figure:
    """Resolution (bars) and channel count (line) of the input and every stage: the CNN pyramid at a glance."""
    names = list(shapes)
    sides = [s[1] for s in shapes.values()]
    channels = [s[0] for s in shapes.values()]
    labels = [f"{c} x {h} x {w}" for c, h, w in shapes.values()]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=names, y=sides, name="resolution (rows)", text=labels, textposition="outside",
                hovertemplate="%{x}: %{text}<extra></extra>")
    fig.add_scatter(x=names, y=channels, name="channels", mode="lines+markers", secondary_y=True)
    fig.update_yaxes(title_text="rows of the map", secondary_y=False)
    fig.update_yaxes(title_text="channels", secondary_y=True)
    fig.update_layout(title="Resolution falls and channels grow, stage by stage (channels x rows x cols)",
                      margin=MARGIN, height=360, legend={"orientation": "h", "y": -0.15})
    return fig


def prediction_figure(prediction: Prediction, title: str = "Prediction") -> go.Figure:
    """Top-k probabilities as horizontal bars, most probable on top."""
    fig = go.Figure(go.Bar(x=prediction.probabilities[::-1], y=prediction.labels[::-1], orientation="h",
                           text=[f"{p:.1%}" for p in prediction.probabilities[::-1]], textposition="auto"))
    fig.update_xaxes(range=[0, 1], title="probability", tickformat=".0%")
    fig.update_layout(title=title, margin=MARGIN, height=80 + 34 * len(prediction.labels))
    return fig


# -- feature maps and filters -------------------------------------------------------------------------------------
def _colour_bar(scale: str, title: str, value_range: tuple[float, float] | None) -> go.Scatter:
    """An invisible trace that draws only a colour bar: real values where one range holds for every tile, else
    "min" and "max" of each map."""
    low, high = value_range or (0.0, 1.0)
    bar = {"title": title} if value_range else {"title": title, "tickmode": "array", "tickvals": [0, 1],
                                                 "ticktext": ["each map's min", "each map's max"]}
    return go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False,
                      marker={"colorscale": scale, "cmin": low, "cmax": high, "color": [low], "showscale": True,
                              "colorbar": bar})


def feature_grid_figure(scaled: np.ndarray, channels: list[int], title: str, columns: int | None = None,
                        value_range: tuple[float, float] | None = None) -> go.Figure:
    """Channel maps (n, rows, cols) already scaled to [0, 1] as one coloured PNG mosaic, each tile labelled, with a
    colour bar in activation units where one ``value_range`` (min, max) holds for every tile (per layer, global),
    else from each map's own min to max."""
    n, h, w = scaled.shape
    columns = columns or math.ceil(math.sqrt(n))
    gap = max(1, h // 16)
    grid = mosaic(scaled, columns, gap=gap)
    factor = max(1, math.ceil(480 / max(grid.shape)))
    rgb = colourise(grid).repeat(factor, axis=0).repeat(factor, axis=1)
    fig = go.Figure([go.Image(source=png_source(rgb), hoverinfo="skip"), _colour_bar(MAP_SCALE, "activation",
                                                                                    value_range)])
    fig.update_layout(annotations=[  # one call: add_annotation re-validates the whole list each time
        {"x": ((i % columns) * (w + gap) + 1) * factor, "y": ((i // columns) * (h + gap) + 1) * factor,
         "text": f"ch {channel}", "showarrow": False, "xanchor": "left", "yanchor": "top",
         "font": {"size": 10, "color": "white"}, "bgcolor": "rgba(0,0,0,0.45)"} for i, channel in enumerate(channels)])
    _image_axes(fig, *rgb.shape[:2])
    fig.update_layout(title=title, margin=MARGIN, height=560)
    return fig


def rgb_filters_figure(tiles: np.ndarray, title: str) -> go.Figure:
    """First-layer kernels (n, k, k, 3) in [0, 1] as one RGB mosaic (grey = 0)."""
    n, k = tiles.shape[:2]
    columns = math.ceil(math.sqrt(n))
    grid = mosaic((tiles * 255).round().astype(np.uint8), columns, gap=1, fill=255)
    rgb = _pixel_upscale(grid.astype(np.uint8), 384)
    fig = go.Figure(go.Image(source=png_source(rgb), hoverinfo="skip"))
    _image_axes(fig, *rgb.shape[:2])
    fig.update_layout(title=title, margin=MARGIN, height=480)
    return fig


def kernel_figure(kernel: np.ndarray, title: str) -> go.Figure:
    """One output channel's kernel (in_channels, k, k) as a diverging mosaic, one tile per input channel."""
    n, k = kernel.shape[:2]
    columns = math.ceil(math.sqrt(n))
    peak = float(np.abs(kernel).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=mosaic(kernel, columns), colorscale="RdBu", reversescale=True, zmin=-peak,
                               zmax=peak, hoverongaps=False, colorbar={"title": "weight"},
                               hovertemplate="weight %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", visible=False, scaleanchor="x")
    fig.update_xaxes(visible=False)
    fig.update_layout(title=title, margin=MARGIN, height=480)
    return fig


# -- receptive field -----------------------------------------------------------------------------------------------
def receptive_field_figure(image: np.ndarray, field: ReceptiveField, unit: tuple[int, int], erf: np.ndarray,
                           title: str) -> go.Figure:
    """The input image with the unit's effective receptive field as a heat overlay and its theoretical field boxed."""
    height, width = image.shape[:2]
    heat = erf / (erf.max() or 1.0)
    fig = go.Figure([
        go.Image(z=image, hoverinfo="skip"),
        go.Heatmap(z=np.where(heat > 0, heat, np.nan), colorscale="Inferno", opacity=0.6, zmin=0, zmax=1,
                   colorbar={"title": "|grad|"}, hovertemplate="x %{x}, y %{y}<br>%{z:.3f}<extra></extra>"),
    ])
    top, left, bottom, right = field.box(*unit)
    fig.add_shape(type="rect", x0=left - 0.5, x1=right + 0.5, y0=top - 0.5, y1=bottom + 0.5,
                  line={"color": "cyan", "width": 3}, name="theoretical field")
    cy = (top + bottom) / 2
    cx = (left + right) / 2
    fig.add_scatter(x=[cx], y=[cy], mode="markers", marker={"symbol": "x", "size": 12, "color": "cyan"},
                    name=f"unit {unit}", hoverinfo="name")
    _image_axes(fig, height, width)
    fig.update_layout(title=title, margin=MARGIN, height=460, showlegend=False)
    return fig


def layer_map_figure(values: np.ndarray, unit: tuple[int, int], title: str) -> go.Figure:
    """A layer's (rows, cols) map (mean over channels) with the chosen unit outlined."""
    rows, cols = values.shape
    fig = go.Figure(go.Heatmap(z=values, colorscale=MAP_SCALE, colorbar={"title": "mean"},
                               hovertemplate="row %{y}, col %{x}<br>%{z:.3f}<extra></extra>"))
    r, c = unit
    fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5, line={"color": "cyan", "width": 3})
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=rows <= 32)
    fig.update_xaxes(showticklabels=cols <= 32)
    fig.update_layout(title=title, margin=MARGIN, height=460)
    return fig


# -- CAM -----------------------------------------------------------------------------------------------------------
def cam_figure(image: np.ndarray, cam: np.ndarray, title: str, opacity: float = 0.5) -> go.Figure:
    """A CAM (H, W) in [0, 1] over the (H, W, 3) image the model saw."""
    height, width = image.shape[:2]
    fig = go.Figure([
        go.Image(z=image, hoverinfo="skip"),
        go.Heatmap(z=cam, colorscale=CAM_SCALE, opacity=opacity, zmin=0, zmax=1, colorbar={"title": "CAM"},
                   hovertemplate="x %{x}, y %{y}<br>%{z:.3f}<extra></extra>"),
    ])
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    fig.add_scatter(x=[x], y=[y], mode="markers", marker={"symbol": "star", "size": 14, "color": "white",
                                                             "line": {"color": "black", "width": 1}},
                    name="maximum", hoverinfo="name")
    _image_axes(fig, height, width)
    fig.update_layout(title=title, margin=MARGIN, height=460, showlegend=False)
    return fig


# -- probes --------------------------------------------------------------------------------------------------------
def shift_figure(probes: list[ShiftProbe]) -> go.Figure:
    """Output similarity and feature-map change against the shift, one line per model; dotted lines mark each
    model's stride (where its grid realigns)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Output vs the unshifted image", "Feature map vs the unshifted map moved by the same amount"))
    for index, probe in enumerate(probes):
        colour = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")[index % 4]
        fig.add_scatter(x=probe.shifts, y=probe.output_similarity, mode="lines+markers", row=1, col=1,
                        name=f"{probe.model_id}: {probe.output_kind}", line={"color": colour})
        fig.add_scatter(x=probe.shifts, y=probe.feature_change, mode="lines+markers", row=1, col=2,
                        name=f"{probe.model_id}: {probe.feature_layer} (stride {probe.feature_stride} px)",
                        line={"color": colour, "dash": "dot"})
        for multiple in range(probe.feature_stride, probe.shifts[-1] + 1, probe.feature_stride):
            for col in (1, 2):
                fig.add_vline(x=multiple, line={"color": colour, "dash": "dot", "width": 1}, row=1, col=col)
    fig.update_xaxes(title_text="shift (input pixels)")
    kinds = list(dict.fromkeys(probe.output_kind for probe in probes))
    fig.update_yaxes(title_text=" / ".join(kinds), row=1, col=1)
    fig.update_yaxes(title_text="relative change", rangemode="tozero", row=1, col=2)
    fig.update_layout(title="Translation: does the model move with the image?", margin=MARGIN, height=440,
                      legend={"orientation": "h", "y": -0.25})
    return fig


def cue_conflict_figure(results: list[CueConflictResult]) -> go.Figure:
    """Share of cue-conflict images decided by the shape, the texture, or neither cue, per model."""
    models = [f"{r.model_id}<br>shape bias {r.shape_bias:.0%}" for r in results]
    fig = go.Figure()
    for cue, colour in (("shape", "#1f77b4"), ("texture", "#ff7f0e"), ("neither", "#bbbbbb")):
        values = [r.fraction(cue) for r in results]
        fig.add_bar(x=models, y=values, name=cue, marker_color=colour, text=[f"{v:.0%}" for v in values],
                    textposition="inside")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title="share of images")
    fig.update_layout(barmode="stack", margin=MARGIN, height=420,
                      title=f"Texture vs shape: which cue decides ({len(results[0].followed)} cue-conflict images)")
    return fig
