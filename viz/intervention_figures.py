"""Plotly figures of interventions: clean against ablated or patched probabilities, the head-importance map, and
the prediction along the depth as each layer is patched."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.interventions import Comparison, HeadImportance, PatchSweep

CLEAN, CHANGED, SOURCE = "#636efa", "#ef553b", "#00cc96"


def comparison_figure(comparison: Comparison, k: int = 5, source: np.ndarray | None = None) -> go.Figure:
    """Horizontal bars per label (the top k of either forward, most probable clean on top): clean, changed and
    (patching) the source image's own probabilities; hover gives the logits and the change."""
    shown = comparison.shown(int(k))[::-1]
    labels = [comparison.labels[i] for i in shown]
    fig = go.Figure()
    bars = [("clean", comparison.clean_probabilities, comparison.clean, CLEAN),
            (comparison.changed_name, comparison.changed_probabilities, comparison.changed, CHANGED)]
    if source is not None:
        bars.append(("source image", source, None, SOURCE))
    for name, probabilities, logits, colour in bars:
        values = [float(probabilities[i]) for i in shown]
        custom = [[float(logits[i]) if logits is not None else np.nan, float(comparison.delta[i])] for i in shown]
        fig.add_trace(go.Bar(x=values, y=labels, orientation="h", name=name, marker_color=colour,
                             text=[f"{v:.1%}" for v in values], textposition="auto", customdata=custom,
                             hovertemplate="%{y}<br>p = %{x:.4f}<br>logit %{customdata[0]:.3f}<br>"
                                           "Δp (changed − clean) %{customdata[1]:+.4f}<extra>" + name + "</extra>"))
    fig.update_layout(title=f"Prediction: clean vs {comparison.what}", barmode="group",
                      xaxis={"title": "probability", "range": [0, 1]}, height=160 + 30 * len(shown) * len(bars),
                      margin={"l": 10, "r": 10, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.15})
    return fig


def _layer_label(site: str) -> str:
    """"layer 3" for blocks.3.attn, "stage 1 block 0" for stages.1.blocks.0.attn, "pool" for pool.attn."""
    parts = site.split(".")
    if parts[0] == "blocks":
        return f"layer {parts[1]}"
    if parts[0] == "stages":
        return f"stage {parts[1]} block {parts[3]}"
    return parts[0]


def head_importance_figure(importance: HeadImportance) -> go.Figure:
    """Layer x head heatmap of the target logit's drop when that head alone is ablated (red: the head helps the
    target, blue: removing it raises the target), symmetric colour range around zero."""
    rows = [_layer_label(site) for site in importance.sites]
    limit = float(np.nanmax(np.abs(importance.drop))) if np.isfinite(importance.drop).any() else 1.0
    heads = list(range(importance.drop.shape[1]))
    fig = go.Figure(go.Heatmap(z=importance.drop, x=heads, y=rows, colorscale="RdBu_r", zmid=0.0,
                               zmin=-limit or -1.0, zmax=limit or 1.0, colorbar={"title": "logit drop"},
                               texttemplate="%{z:.2f}" if importance.drop.size <= 400 else None,
                               hovertemplate="%{y}, head %{x}<br>logit drop %{z:.4f}<extra></extra>"))
    fig.update_layout(title=f"Head importance: drop of the “{importance.target_label}” logit "
                            f"(clean {importance.clean_logit:.2f}) when each head is {importance.mode}-ablated alone",
                      xaxis={"title": "head", "tickmode": "array", "tickvals": heads, "side": "bottom"},
                      yaxis={"title": "layer", "autorange": "reversed"},
                      height=160 + 32 * len(rows), margin={"l": 10, "r": 10, "t": 60, "b": 40})
    return fig


def patch_sweep_figure(sweep: PatchSweep) -> go.Figure:
    """Probability of the image's own class and of the source's class when each layer's residual stream is
    patched from the source, against depth."""
    layers = [int(point.split(".")[1]) for point in sweep.points]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=layers, y=sweep.own, mode="lines+markers", name=f"image's class: {sweep.own_label}",
                             line={"color": CLEAN}))
    fig.add_trace(go.Scatter(x=layers, y=sweep.source, mode="lines+markers",
                             name=f"source's class: {sweep.source_label}", line={"color": SOURCE}))
    fig.update_layout(title=f"Patching each layer's resid_post ({sweep.tokens}) from the source image",
                      xaxis={"title": "layer patched", "tickmode": "array", "tickvals": layers},
                      yaxis={"title": "probability", "range": [0, 1]}, height=360,
                      margin={"l": 10, "r": 10, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return fig
