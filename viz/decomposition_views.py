"""Views of the Decomposition tab: the image-text score split into layers, heads and patches; zero-shot accuracy of
the bundled world with early layers and MLPs mean-ablated; TextSpan texts per head (Gandelsman et al., ICLR 2024).

Every view applies to CLIP models whose image embedding decomposes (``models.adapters.decompose.can_decompose``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from models.adapters.decompose import can_decompose, decompose_image
from viz.attention_figures import overlay_figure
from viz.decomposition import (
    ablation_table,
    head_token_shares,
    label_variance_share,
    score_shares,
    text_span,
    world_set,
    world_vocabulary,
)
from viz.views import Figures, Subject, view
from viz.zero_shot import encode_texts, parse_labels

DEFAULT_PROMPT = "a red circle"
DIVERGING = "RdBu_r"
_WORLD_SETS: OrderedDict = OrderedDict()   # (model id, module id, n) -> WorldSet: image-independent, shared by users
_WORLD_LOCK = threading.Lock()
_KEPT_WORLD_SETS = 4


def decomposable(model) -> bool:
    """CLIP models whose image embedding is a sum of layer, head and token terms (class-token readout)."""
    return can_decompose(model)


def _decomposition(subject: Subject):
    image = subject.require_image()
    model = subject.model
    return subject.remember("decomposition", lambda: decompose_image(model, model.pixels([image]), tokens=True))


def _text(subject: Subject, prompt: str):
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("Type a prompt to score the image against.")
    return subject.remember(f"decomposition_text:{prompt}", lambda: encode_texts(subject.model, [prompt])[0])


def cached_world_set(model, n: int):
    """The decomposed world set of ``model`` (kept for a few models: it does not depend on the user's image)."""
    key = (model.model_id, id(model.module), int(n))
    with _WORLD_LOCK:
        if key in _WORLD_SETS:
            _WORLD_SETS.move_to_end(key)
            return _WORLD_SETS[key]
    world = world_set(model, n=int(n))
    with _WORLD_LOCK:
        _WORLD_SETS[key] = world
        while len(_WORLD_SETS) > _KEPT_WORLD_SETS:
            _WORLD_SETS.popitem(last=False)
    return world


def _heads_figure(heads: np.ndarray, title: str, colorbar: str = "share of score") -> go.Figure:
    layers, count = heads.shape
    limit = float(np.abs(heads).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=heads, x=[f"head {h}" for h in range(count)], y=[f"layer {layer}" for layer in range(layers)],
        colorscale=DIVERGING, zmin=-limit, zmax=limit, colorbar={"title": colorbar},
        text=np.round(heads, 3), texttemplate="%{text}" if heads.size <= 400 else None,
        hovertemplate="%{y}, %{x}: %{z:.4f}<extra></extra>"))
    fig.update_layout(title=title, height=max(300, 40 * layers + 120), margin={"l": 70, "r": 10, "t": 60, "b": 40})
    fig.update_yaxes(autorange="reversed")
    return fig


@view("decomposition.score", "Decomposition", decomposable, checks=({}, {"prompt": "a blue square"}))
def score_view(subject: Subject, prompt: str = DEFAULT_PROMPT) -> Figures:
    """The image-text score split into the direct contributions of each layer's heads and MLP (they add up to it)."""
    model = subject.model
    shares = score_shares(_decomposition(subject), _text(subject, prompt), model.logit_scale)
    heads = _heads_figure(shares.heads, f"Each head's share of the score for “{prompt}” "
                                        f"(heads sum to {shares.heads.sum():.3f})")
    layers = len(shares.mlps)
    names = ["embeddings"] + [f"L{i} attn" for i in range(layers)] + [f"L{i} MLP" for i in range(layers)] + [
        "norm bias"]
    values = np.concatenate([[shares.embeddings], shares.heads.sum(axis=1) + shares.attn_bias, shares.mlps,
                             [shares.norm_bias]])
    colours = ["grey"] + ["#1f77b4"] * layers + ["#ff7f0e"] * layers + ["grey"]
    bars = go.Figure(go.Bar(x=names, y=values, marker_color=colours, text=np.round(values, 3),
                            hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
    bars.update_layout(title=f"Terms of the score: sum {shares.total():.4f} = score {shares.score:.4f} "
                             f"(logit scale {model.logit_scale:.2f} × cosine)",
                       yaxis_title="share of score", height=380, margin={"l": 60, "r": 10, "t": 60, "b": 60})
    notice = (f"Score of the image against “{prompt}”: **{shares.score:.4f}** = logit scale × cosine. Its terms: "
              f"embeddings {shares.embeddings:.4f}, attention heads {shares.heads.sum():.4f}, attention biases "
              f"{shares.attn_bias.sum():.4f}, MLPs {shares.mlps.sum():.4f}, final-norm bias "
              f"{shares.norm_bias:.4f}; **sum {shares.total():.4f}**. The final norm is frozen at this image's own "
              "statistics, so the embedding is exactly the sum of these direct contributions.")
    return {"heads": heads, "layers": bars, "notice": notice}


@view("decomposition.head_patches", "Decomposition", decomposable,
      checks=({}, {"layer": -1, "head": 0, "prompt": "a blue square"}))
def head_patches_view(subject: Subject, layer: int = -1, head: int = 0, prompt: str = DEFAULT_PROMPT) -> Figures:
    """One head's share of the score per patch, over the image (its class-token row of attention times values)."""
    model = subject.model
    tower = model.image_tower
    decomposition = _decomposition(subject)
    layer = int(layer) + decomposition.num_layers if -decomposition.num_layers <= int(layer) < 0 else int(layer)
    per_token = head_token_shares(decomposition, _text(subject, prompt), model.logit_scale, layer, int(head))
    prefix = tower.num_prefix_tokens
    grid = tower.grid(model.pixels([subject.require_image()]))
    heat = per_token[prefix:].reshape(grid)
    image = tower.preprocess.unnormalize(model.pixels([subject.require_image()])[0])
    fig = overlay_figure(image, heat, f"Layer {layer}, head {head}: share of the score for “{prompt}” per patch")
    limit = float(np.abs(heat).max()) or 1.0
    fig.update_traces(selector={"type": "heatmap"}, colorscale=DIVERGING, zmin=-limit, zmax=limit,
                      colorbar={"title": "share"})
    prefix_names = ", ".join(f"{name} {value:.4f}" for name, value in zip(tower.prefix_tokens, per_token[:prefix],
                                                                          strict=True))
    notice = (f"Layer {layer}, head {head} adds **{per_token.sum():.4f}** to the score: patches "
              f"{per_token[prefix:].sum():.4f} (map), prefix tokens {prefix_names or 'none'}.")
    return {"patches": fig, "notice": notice}


@view("decomposition.ablation", "Decomposition", decomposable, checks=({"n": 8},))
def ablation_view(subject: Subject, n: int = 72) -> Figures:
    """Zero-shot accuracy of held-out scenes with the direct contributions of the early layers (and the MLPs)
    mean-ablated, against depth."""
    table = ablation_table(cached_world_set(subject.model, int(n)))
    depth = list(range(len(table.up_to)))
    fig = go.Figure([
        go.Scatter(x=depth, y=table.up_to, mode="lines+markers", name="attention of layers < d mean-ablated"),
        go.Scatter(x=depth, y=table.up_to_with_mlps, mode="lines+markers", name="… and every MLP mean-ablated"),
        go.Scatter(x=depth[1:], y=table.layer_alone, mode="markers", name="layer d-1's attention alone",
                   marker={"symbol": "x", "size": 10}),
    ])
    fig.add_hline(y=table.clean, line_dash="dot", annotation_text=f"clean {table.clean:.3f}")
    fig.add_hline(y=1 / 36, line_dash="dash", line_color="grey", annotation_text="chance (1/36)")
    fig.update_layout(title=f"Zero-shot top-1 on {table.n} held-out scenes with direct contributions mean-ablated",
                      xaxis_title="depth d", yaxis_title="top-1", yaxis_range=[0, 1.05], height=420,
                      legend={"orientation": "h", "y": -0.25})
    rows = [[d, round(float(a), 4), round(float(b), 4), round(float(c), 4)] for d, a, b, c in table.rows()]
    notice = (f"Clean top-1 **{table.clean:.3f}**; every MLP mean-ablated **{table.mlps:.3f}**. The table's rows: "
              "depth d, top-1 with the attention of layers < d mean-ablated, the same with all MLPs mean-ablated, "
              "and layer d-1's attention mean-ablated alone. `python -m viz.decomposition_views` prints it on 360 "
              "scenes.")
    return {"accuracy": fig, "table": rows, "notice": notice}


def parse_heads(text: str | Sequence[str], layers: int, heads: int) -> list[tuple[int, int]]:
    """"3.1, 2.2" -> [(3, 1), (2, 2)]; a clear error for anything else."""
    items = parse_labels(text) if isinstance(text, str) else [str(t) for t in text]
    chosen = []
    for item in items:
        layer, dot, head = item.partition(".")
        if not dot or not layer.strip().lstrip("-").isdigit() or not head.strip().isdigit():
            raise ValueError(f"Heads are written layer.head, e.g. “{layers - 1}.0”; got “{item}”.")
        layer_index, head_index = int(layer), int(head)
        if not -layers <= layer_index < layers or not 0 <= head_index < heads:
            raise ValueError(f"No head {item}: the tower has layers 0 to {layers - 1} (or -1 for the last) of "
                             f"heads 0 to {heads - 1}.")
        layer_index %= layers
        chosen.append((layer_index, head_index))
    return chosen


@view("decomposition.text_span", "Decomposition", decomposable, checks=({"n": 8, "top": 1, "steps": 2},))
def text_span_view(subject: Subject, heads: str = "", top: int = 4, steps: int = 5, vocabulary: str = "",
                   n: int = 72) -> Figures:
    """TextSpan per head: the few texts whose directions explain most of the variance of the head's direct
    contributions over held-out scenes (default: the ``top`` heads of largest variance)."""
    model = subject.model
    world = cached_world_set(model, int(n))
    dec = world.decomposition
    texts = parse_labels(vocabulary) if vocabulary.strip() else world_vocabulary()
    text_embeddings = subject.remember(f"text_span_vocabulary:{texts!r}", lambda: encode_texts(model, texts))
    variance = dec.heads.var(dim=0).sum(dim=-1).numpy()       # (layers, heads)
    chosen = parse_heads(heads, dec.num_layers, dec.num_heads) if heads.strip() else [
        tuple(int(i) for i in np.unravel_index(flat, variance.shape))
        for flat in np.argsort(variance, axis=None)[::-1][:max(1, int(top))]]
    rows = []
    for layer, head in chosen:
        outputs = dec.heads[:, layer, head]
        span = text_span(outputs, text_embeddings, texts, steps=int(steps))
        colour, shape = label_variance_share(outputs, world.colours), label_variance_share(outputs, world.shapes)
        rows += [[f"{layer}.{head}", step, text, round(gain, 4), round(total, 4), round(colour, 3), round(shape, 3)]
                 for step, text, gain, total in span.rows()]
    notice = (f"{len(texts)} candidate texts, {len(world.labels)} held-out scenes. Columns: head, step, text, the "
              "share of the head's variance that text adds, the share explained so far, and the share of the "
              "head's variance set by the object's colour and by its shape (between-group / total).")
    return {"variance": _heads_figure(variance, "Variance of each head's direct contribution over the scenes",
                                      "variance"),
            "table": rows, "notice": notice}


def main() -> None:
    """Print the mean-ablation table and the TextSpan texts of the four heads of largest variance (mini-clip)."""
    import argparse

    from models.registry import load_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default="bundled:mini-clip")
    parser.add_argument("-n", type=int, default=360)
    args = parser.parse_args()
    model = load_model(args.model)
    print(ablation_table(cached_world_set(model, args.n)).text())
    for row in text_span_view(Subject(model), n=args.n)["table"]:
        print(*row, sep=" | ")


if __name__ == "__main__":
    main()
