"""Interactive latency of the attention and CNN views: the first request (one hooked forward) against what
follows, as ratios measured in the same run.

Attention: switching layer / head / query (no forward). CNN: switching stage, channels or colour scale (no forward),
one stage's 16 maps built into the view's figure and serialised, a receptive-field click (one forward and backward;
the theoretical field is traced once per model) and a Grad-CAM.
Per view (``measure_views``): what one switch costs the server, the view's tensors read from the session plus its
Plotly figure built and serialised as Gradio sends it, as a ratio to the first request.

    python -m benchmarks.view_latency [--models bundled:mini-clip timm:vit_base_patch16_224/none]
                                      [--cnn-models bundled:mini-cnn torchvision:resnet50/none] [--repeats 5]
                                      [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from models import load_model, shapes
from viz.attention_session import AttentionSession
from viz.cnn import stage_names
from viz.cnn_figures import feature_grid_figure
from viz.cnn_session import CNNSession
from viz.views import Subject, run_view


def measure(model_id: str, repeats: int, device: str | None = None) -> dict:
    """First request (the hooked forward) against switching layer / head / query (session reads only)."""
    model = load_model(model_id, device=device)
    image = shapes.make_dataset(1, seed=1)[0].image
    AttentionSession(model, image)  # warm-up
    first, switch = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        session = AttentionSession(model, image)
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        layer, query = session.vit.num_layers - 1, session.token_of_patch(1, 1)
        session.query_map(layer, 0, query)
        session.all_heads(layer, query)
        session.steps(layer, 0, query, 0.5)
        session.rollout_map("max", 0.5)
        switch.append(time.perf_counter() - start)
    first_s, switch_s = statistics.median(first), statistics.median(switch)
    return {"model": model_id, "first_request_s": first_s, "switch_s": switch_s,
            "switch_over_first": switch_s / first_s}


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _attention_views(subject: Subject) -> dict[str, Callable[[], object]]:
    """Each switchable view as the app serves it: the registered view run on the stored subject, its figure
    serialised."""
    session = subject.attention()
    layer, query = session.vit.num_layers - 1, session.token_of_patch(1, 1)
    head = f"head {1 % session.vit.num_heads}"

    def figure(name: str, key: str, **params) -> Callable[[], str]:
        return lambda: run_view(name, subject, **params)[key].to_json()

    overlay = figure("attention.query", "overlay", layer=layer, head=head, query=query)
    heads = figure("attention.heads", "heads", layer=layer, query=query)
    steps = figure("attention.steps", "steps", layer=layer, head=head, query=query, temperature=0.5)
    similarity = figure("patches.token_similarity", "similarity", layer=layer, query=query)
    islands = figure("patches.islands", "islands", layer=layer)
    return {"attention: query map over the image": overlay, "attention: all heads grid": heads,
            "attention: step by step (one row)": steps,
            "attention: rollout": figure("attention.rollout", "rollout", fusion="max", discard=0.5),
            "attention: layer/head/query switch (map + heads + steps, as the app redraws)":
                lambda: (overlay(), heads(), steps()),
            "patches: layer switch (token similarity + PCA islands)": lambda: (similarity(), islands()),
            "patch grid figure (sent with every Attention / Patches analyse)": figure("patches.grid", "grid")}


def measure_views(model_id: str, repeats: int, device: str | None = None) -> dict:
    """Median seconds of each attention / patches view (figure included) and its ratio to the first request."""
    model = load_model(model_id, device=device)
    image = shapes.make_dataset(1, seed=1)[0].image
    subject = Subject(model, image)  # warm-up
    views = _attention_views(subject)
    for view in views.values():
        view()
    first, times = [], {name: [] for name in views}
    for _ in range(repeats):
        first.append(_timed(lambda: Subject(model, image).attention()))
        for name, view in views.items():
            times[name].append(_timed(view))
    first_s = statistics.median(first)
    rows = [{"view": name, "median_s": statistics.median(values),
             "ratio_to_first": statistics.median(values) / first_s} for name, values in times.items()]
    return {"model": model_id, "first_request_s": first_s, "views": rows}


def measure_cnn(model_id: str, repeats: int, device: str | None = None) -> dict:
    """CNN tab: first request, then stage/channel/scale switches, a receptive-field click and a Grad-CAM."""
    model = load_model(model_id, device=device)
    image = shapes.make_dataset(1, seed=1)[0].image
    warm = CNNSession(model, image)  # warm-up, and the one-off receptive-field trace
    stages = stage_names(warm.tower)
    warm.field(stages[-1])
    first, switch, figure, field, cam = [], [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        session = CNNSession(model, image)
        first.append(time.perf_counter() - start)
        switch.append(_timed(lambda s=session: [s.feature_maps(name, 16, None, scale)
                                                for name in stages for scale in ("per unit", "global")]))
        figure.append(_timed(lambda s=session: feature_grid_figure(*s.feature_maps(stages[-1], 16), "maps").to_json()))
        field.append(_timed(lambda s=session: s.effective_field(stages[-2], (1, 1))))
        cam.append(_timed(lambda s=session: s.cam(0, "Grad-CAM", None)))
    first_s = statistics.median(first)
    return {"model": model_id, "first_request_s": first_s,
            "switch_over_first": statistics.median(switch) / first_s,
            "feature_figure_over_first": statistics.median(figure) / first_s,
            "receptive_field_over_first": statistics.median(field) / first_s,
            "grad_cam_over_first": statistics.median(cam) / first_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled:mini-clip", "timm:vit_base_patch16_224/none"])
    parser.add_argument("--cnn-models", nargs="+", default=["bundled:mini-cnn", "torchvision:resnet50/none"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    print("| model | first request s | switch layer/head/query s | switch / first |\n|---|---|---|---|")
    for model_id in args.models:
        row = measure(model_id, args.repeats, args.device)
        print(f"| {model_id} | {row['first_request_s']:.4f} | {row['switch_s']:.4f} | {row['switch_over_first']:.3f} |")
    print("\n| model | view (figure built and serialised) | median s | view / first request |\n|---|---|---|---|")
    for model_id in args.models:
        report = measure_views(model_id, args.repeats, args.device)
        for row in report["views"]:
            print(f"| {model_id} | {row['view']} | {row['median_s']:.4f} | {row['ratio_to_first']:.3f} |")
    print("\n| CNN model | first request s | switch stage/channels/scale / first | 16 maps as a figure / first "
          "| receptive field / first | Grad-CAM / first |\n|---|---|---|---|---|---|")
    for model_id in args.cnn_models:
        row = measure_cnn(model_id, args.repeats, args.device)
        print(f"| {model_id} | {row['first_request_s']:.4f} | {row['switch_over_first']:.3f} "
              f"| {row['feature_figure_over_first']:.3f} | {row['receptive_field_over_first']:.3f} "
              f"| {row['grad_cam_over_first']:.3f} |")


if __name__ == "__main__":
    main()
