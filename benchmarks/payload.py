"""Bytes sent to the browser for the biggest figure of every view, built by the viz figure builders at realistic
sizes, and the total per response (one API call's figures). Goal: every response under 2 MB.

    python -m benchmarks.payload [--quick] [--device cpu] [--out DIR]

Full sizes: a ViT-B/16 CLIP with random weights at 224 px (``open_clip:ViT-B-16/none``: 14x14 patches, 12 layers,
12 heads) for the attention, patch and zero-shot views; a ResNet-50 with random weights at 224 px for the CNN
views (64 channel maps, the most the view shows); 1,000 labels for zero-shot; a 5,000-image embedding map (with
captions and class prompts, coloured by label, pair lines on) and a 1,000-class confusion matrix. ``--quick``
uses the bundled models, 36 labels, 1,000 points and 36 classes.

A byte count is that of the component's value as Gradio serialises it (orjson, UTF-8): ``{"type": "plotly",
"plot": fig.to_json()}`` for gr.Plot, the value string for the embedding map's gr.HTML. The gzip column shows what a
compressing proxy would send; Gradio itself sends the raw bytes.
"""
from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import plotly.graph_objects as go

from benchmarks.report import table, verdict

GOAL_BYTES = 2_000_000


@dataclass
class Sizes:
    """What to build: the models and the data sizes."""

    vit: str              # a CLIP with a ViT image tower: attention, patches, per-patch zero-shot
    cnn: str
    clip: str
    labels: int           # zero-shot labels
    points: int           # images on the embedding map
    eval_classes: int     # classes of the zero-shot evaluation (confusion matrix)


QUICK = Sizes("bundled:mini-clip", "bundled:mini-cnn", "bundled:mini-clip", 36, 1000, 36)
FULL = Sizes("open_clip:ViT-B-16/none", "torchvision:resnet50/none", "open_clip:ViT-B-16/none", 1000, 5000, 1000)


def value_bytes(value: object) -> int:
    """Bytes of a component value as Gradio serialises it (orjson, UTF-8)."""
    return len(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def plot_value(fig: go.Figure) -> dict:
    """What gr.Plot sends for a Plotly figure."""
    return {"type": "plotly", "plot": fig.to_json()}


def entry(view: str, figure: str, value: object) -> dict:
    """One figure's payload: raw bytes as sent, and gzip bytes for comparison."""
    if isinstance(value, go.Figure):
        value = plot_value(value)
    raw = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return {"view": view, "figure": figure, "bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 6))}


def _responses(response: str, figures: dict, names: dict[str, str]) -> list[dict]:
    """Entries for the named figures of one view's output, under the API call that sends them."""
    return [entry(response, label, figures[key]) for key, label in names.items()]


def attention_and_patches(model_id: str, device: str | None) -> list[dict]:
    """The Attention and Patches views of one image through a CLIP ViT, every figure of each response, drawn by the
    registered views the app's handlers call."""
    from models import load_model, shapes
    from viz.views import Subject, run_view

    model = load_model(model_id, device=device)
    subject = Subject(model, shapes.make_dataset(2, seed=11)[0].image.resize((256, 256)))
    session = subject.attention()
    layer, query = session.vit.num_layers - 1, session.token_of_patch(session.grid[0] // 2, session.grid[1] // 2)
    grid = run_view("patches.grid", subject)["grid"]
    view = [("query map over the image", run_view("attention.query", subject, layer=layer, query=query)["overlay"]),
            ("all heads grid", run_view("attention.heads", subject, layer=layer, query=query)["heads"]),
            ("step by step", run_view("attention.steps", subject, layer=layer, query=query)["steps"])]
    out = [entry("attention_analyse", "patch grid", grid)]
    out += [entry("attention_analyse", name, fig) for name, fig in view]
    out += [entry("attention_view", name, fig) for name, fig in view]
    out += _responses("attention_rollout", run_view("attention.rollout", subject),
                      {"rollout": "rollout over the image"})
    prompts = ["a red triangle", "an orange circle", "a blue square", "a background"]
    out += _responses("attention_zero_shot", run_view("attention.patch_zero_shot", subject, prompts=prompts),
                      {"patch_zero_shot": "best prompt per patch"})
    out += _responses("mean_attention_distance", run_view("attention.mean_distance", subject, images=2),
                      {"mean_distance": "distance per head vs depth"})
    patches = [("patch grid", grid), ("patch-embedding filters", run_view("patches.filters", subject)["filters"])]
    if "pos_embed" in session.vit.points:
        patches.append(("position-embedding similarity", run_view("patches.positions", subject)["positions"]))
    layer_views = [("token similarity",
                    run_view("patches.token_similarity", subject, layer=layer, query=query)["similarity"]),
                   ("PCA islands", run_view("patches.islands", subject, layer=layer)["islands"])]
    patches += [("residual norms", run_view("patches.residual", subject)["residual"]),
                ("attention correlation", run_view("patches.attention_correlation", subject)["correlation"])]
    out += [entry("patches_analyse", name, fig) for name, fig in patches + layer_views]
    out += [entry("patches_layer", name, fig) for name, fig in layer_views]
    return out


def cnn_views(model_id: str, device: str | None) -> list[dict]:
    """The CNN views of one image: the largest feature-map grid, filters, the biggest kernel, fields and a CAM."""
    from models import load_model, shapes
    from viz.cnn import layer_module, stage_names
    from viz.views import Subject, run_view

    model = load_model(model_id, device=device)
    subject = Subject(model, shapes.make_dataset(1, seed=12)[0].image.resize((256, 256)))
    session = subject.cnn()
    tower = session.tower
    out = [entry("cnn_analyse", "prediction", run_view("cnn.prediction", subject, k=5)["prediction"]),
           entry("cnn_analyse", "stage shapes", run_view("cnn.stages", subject)["stages"])]
    largest = max(stage_names(tower), key=lambda name: session.maps[name][0].numel())  # biggest maps (first on ties)
    out += _responses("cnn_feature_maps", run_view("cnn.feature_maps", subject, layer=largest, k=64),
                      {"feature_maps": f"64 maps of {largest}"})
    out += _responses("cnn_filters", run_view("cnn.filters", subject), {"filters": "first-layer kernels"})
    convs = [name for name in session.layers() if name.startswith("module.")]
    biggest = max(convs, key=lambda name: layer_module(tower, name).weight[0].numel())
    out += _responses("cnn_kernel", run_view("cnn.kernel", subject, layer=biggest),
                      {"kernel": f"one kernel of {biggest}"})
    out += _responses("cnn_receptive_field", run_view("cnn.receptive_field", subject),
                      {"field": "theoretical vs effective field", "layer_map": "layer map"})
    out += _responses("cnn_cam", run_view("cnn.cam", subject, target=0), {"cam": "Grad-CAM over the image"})
    return out


def zero_shot_views(model_id: str, labels: int, device: str | None) -> list[dict]:
    """Top-k bars and softmax sliders for ``labels`` labels; the similarity matrix of 16 pairs with thumbnails."""
    from models import load_model, shapes
    from viz.softmax import softmax_view
    from viz.zero_shot import ZeroShotResult, image_text_similarity
    from viz.zero_shot_figures import (
        similarity_figure,
        softmax_halves_figure,
        softmax_sliders_figure,
        top_k_figure,
    )

    rng = np.random.default_rng(0)
    names = [f"class number {i} of the label list" for i in range(labels)]
    cosine = rng.uniform(0.1, 0.35, size=labels)
    logits = 100.0 * cosine
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    result = ZeroShotResult(names, ["a photo of a {}."], cosine, logits, probabilities, 100.0)
    out = [entry("zero_shot_classify", "top-20 bars", top_k_figure(result, 20)),
           entry("zero_shot_classify", f"softmax sliders ({labels} classes)",
                 softmax_sliders_figure(softmax_view(names, logits), probabilities))]
    model = load_model(model_id, device=device)
    examples = shapes.make_dataset(16, seed=13, two_objects_prob=0.0)
    matrix, _ = image_text_similarity(model, [e.image for e in examples], [e.caption for e in examples])
    texts, image_names = [e.caption for e in examples], [f"shape {i}" for i in range(16)]
    out += [entry("similarity_matrix", "cosine matrix with thumbnails",
                  similarity_figure(matrix, texts, [e.image for e in examples], image_names)),
            entry("similarity_matrix", "softmax halves", softmax_halves_figure(matrix, texts, image_names))]
    return out


def embedding_views(points: int, eval_classes: int) -> list[dict]:
    """The embedding map (as the gr.HTML value), a hover thumbnail, the modality gap and the evaluation figures."""
    from benchmarks.projection import synthetic_embeddings
    from models import shapes
    from models.embed import EmbeddingSet, ImageItem, text_entries
    from ui.plotly_html import map_value, new_token
    from viz.embedding_figures import (
        confusion_figure,
        embedding_map_figure,
        modality_gap_figure,
        per_class_accuracy_figure,
        thumbnail_data_url,
    )
    from viz.embedding_space import Projection, evaluate_zero_shot, modality_gap, pair_similarities

    examples = shapes.make_dataset(points, seed=14)
    items = [ImageItem(e.image, e.label, e.caption, f"shapes 14#{i}") for i, e in enumerate(examples)]
    texts, kinds, text_labels, image_caption, class_text = text_entries(items)
    images, _ = synthetic_embeddings(points * 10 // 9 + 1, dims=512)
    vectors, _ = synthetic_embeddings(len(texts) * 10 // 9 + 1, dims=512, seed=1)
    es = EmbeddingSet("benchmark", 100.0, items, images[:points], texts, kinds, text_labels, vectors[:len(texts)],
                      image_caption, class_text)
    coords = np.random.default_rng(2).normal(size=(points + len(texts), 2)).astype(np.float32)
    projection = Projection(coords, points, "umap", False)
    figure = embedding_map_figure(es, projection, "label", show_lines=True)
    value = map_value(figure.to_json(), new_token())
    name = f"map of {points:,} images + {len(texts):,} texts"
    out = [entry("embedding_embed", name, value), entry("embedding_view", name, value),
           entry("embedding hover (server function)", "one thumbnail",
                 {"src": thumbnail_data_url(items[0].open(), 96), "text": f"{items[0].name} · {items[0].caption}"})]
    pairs = pair_similarities(es.image_embeddings, es.text_embeddings, es.image_caption)
    out.append(entry("embedding_embed", "modality gap histograms",
                     modality_gap_figure(pairs, modality_gap(es.image_embeddings, es.text_embeddings,
                                                             es.image_caption))))
    rng = np.random.default_rng(3)
    class_names = [f"class {i:04d}" for i in range(eval_classes)]
    labels = [class_names[i] for i in rng.integers(eval_classes, size=points)]
    evaluation = evaluate_zero_shot(es.image_embeddings, labels, class_names,
                                    rng.normal(size=(eval_classes, 512)).astype(np.float32))
    out += [entry("embedding_evaluate", f"per-class accuracy ({eval_classes} classes)",
                  per_class_accuracy_figure(evaluation)),
            entry("embedding_evaluate", f"confusion matrix ({eval_classes} classes)", confusion_figure(evaluation))]
    return out


def measure(sizes: Sizes, device: str | None = None) -> dict:
    """Every figure's payload and the total per response, with the 2 MB goal."""
    figures = (attention_and_patches(sizes.vit, device) + cnn_views(sizes.cnn, device)
               + zero_shot_views(sizes.clip, sizes.labels, device) + embedding_views(sizes.points, sizes.eval_classes))
    responses: dict[str, dict] = {}
    for row in figures:
        total = responses.setdefault(row["view"], {"view": row["view"], "figures": 0, "bytes": 0, "gzip_bytes": 0})
        total["figures"] += 1
        total["bytes"] += row["bytes"]
        total["gzip_bytes"] += row["gzip_bytes"]
    for total in responses.values():
        total["goal"] = f"< {GOAL_BYTES:,} bytes"
        total["verdict"] = verdict(total["bytes"], "<", GOAL_BYTES)
    return {"sizes": sizes.__dict__, "figures": figures, "responses": list(responses.values())}


def markdown(report: dict) -> str:
    """Per-response totals against the goal, then every figure."""
    responses = [[r["view"], r["figures"], f"{r['bytes']:,}", f"{r['gzip_bytes']:,}", r["goal"], r["verdict"]]
                 for r in sorted(report["responses"], key=lambda r: -r["bytes"])]
    figures = [[r["view"], r["figure"], f"{r['bytes']:,}", f"{r['gzip_bytes']:,}"]
               for r in sorted(report["figures"], key=lambda r: -r["bytes"])]
    return (table(["response (API call)", "figures", "bytes", "gzip bytes", "goal", "pass/miss"], responses) + "\n"
            + table(["response", "figure", "bytes", "gzip bytes"], figures))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="bundled models and small sizes")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="directory for payload.json / .md")
    args = parser.parse_args(argv)
    report = measure(QUICK if args.quick else FULL, args.device)
    text = markdown(report)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "payload.json").write_text(json.dumps(report, indent=2))
        (args.out / "payload.md").write_text(text)


if __name__ == "__main__":
    main()
