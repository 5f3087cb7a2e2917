"""Interactive latency of the attention views: the first request (one hooked forward) against switching
layer / head / query afterwards (no forward), as a ratio measured in the same run.

    python -m benchmarks.view_latency [--models bundled:mini-clip timm:vit_base_patch16_224/none] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from models import load_model, shapes
from viz.attention_session import AttentionSession


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled:mini-clip", "timm:vit_base_patch16_224/none"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| model | first request s | switch layer/head/query s | switch / first |\n|---|---|---|---|")
    for model_id in args.models:
        row = measure(model_id, args.repeats)
        print(f"| {model_id} | {row['first_request_s']:.4f} | {row['switch_s']:.4f} | {row['switch_over_first']:.3f} |")


if __name__ == "__main__":
    main()
