"""Interactive latency of the attention and CNN views: the first request (one hooked forward) against what
follows, as ratios measured in the same run.

Attention: switching layer / head / query (no forward). CNN: switching stage, channels or colour scale (no forward),
a receptive-field click (one forward and backward; the theoretical field is traced once per model) and a Grad-CAM.

    python -m benchmarks.view_latency [--models bundled:mini-clip timm:vit_base_patch16_224/none]
                                      [--cnn-models bundled:mini-cnn torchvision:resnet50/none] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from models import load_model, shapes
from viz.attention_session import AttentionSession
from viz.cnn import stage_names
from viz.cnn_session import CNNSession


def measure(model_id: str, repeats: int) -> dict:
    model = load_model(model_id)
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


def measure_cnn(model_id: str, repeats: int) -> dict:
    """CNN tab: first request, then stage/channel/scale switches, a receptive-field click and a Grad-CAM."""
    model = load_model(model_id)
    image = shapes.make_dataset(1, seed=1)[0].image
    warm = CNNSession(model, image)  # warm-up, and the one-off receptive-field trace
    stages = stage_names(warm.tower)
    warm.field(stages[-1])
    first, switch, field, cam = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        session = CNNSession(model, image)
        first.append(time.perf_counter() - start)
        switch.append(_timed(lambda s=session: [s.feature_maps(name, 16, None, scale)
                                                for name in stages for scale in ("per unit", "global")]))
        field.append(_timed(lambda s=session: s.effective_field(stages[-2], (1, 1))))
        cam.append(_timed(lambda s=session: s.cam(0, "Grad-CAM", None)))
    first_s = statistics.median(first)
    return {"model": model_id, "first_request_s": first_s,
            "switch_over_first": statistics.median(switch) / first_s,
            "receptive_field_over_first": statistics.median(field) / first_s,
            "grad_cam_over_first": statistics.median(cam) / first_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled:mini-clip", "timm:vit_base_patch16_224/none"])
    parser.add_argument("--cnn-models", nargs="+", default=["bundled:mini-cnn", "torchvision:resnet50/none"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| model | first request s | switch layer/head/query s | switch / first |\n|---|---|---|---|")
    for model_id in args.models:
        row = measure(model_id, args.repeats)
        print(f"| {model_id} | {row['first_request_s']:.4f} | {row['switch_s']:.4f} | {row['switch_over_first']:.3f} |")
    print("\n| CNN model | first request s | switch stage/channels/scale / first | receptive field / first "
          "| Grad-CAM / first |\n|---|---|---|---|---|")
    for model_id in args.cnn_models:
        row = measure_cnn(model_id, args.repeats)
        print(f"| {model_id} | {row['first_request_s']:.4f} | {row['switch_over_first']:.3f} "
              f"| {row['receptive_field_over_first']:.3f} | {row['grad_cam_over_first']:.3f} |")


if __name__ == "__main__":
    main()
