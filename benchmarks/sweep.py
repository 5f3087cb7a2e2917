"""The head-importance sweep (viz.interventions.head_importance): batched (copies of the image in one forward, a
different head ablated in each) against one forward per head, both against one clean forward, in the same run.
Goal: the whole sweep on bundled:mini-clip within 2 s on the CPU.

    python -m benchmarks.sweep [--models bundled:mini-clip bundled:mini-vit] [--repeats 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.report import table, verdict
from models import load_model
from models.world import scenes
from viz.interventions import Scorer, head_importance, head_importance_one_at_a_time, reference_images

GOAL_S = 2.0


def _median(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model_id: str, repeats: int = 5, device: str | None = None) -> dict:
    """Median seconds of the clean forward and of the sweep (batched zero, batched mean, one head per forward)."""
    model = load_model(model_id, device=device)
    image = scenes.make_scenes(1, 515, split="any")[0].image
    reference = reference_images()
    scorer = Scorer(model)
    pixels = model.pixels([image])
    head_importance(model, image)   # warm-up: text features cached, kernels touched
    heads = sum(model.sites[s].num_heads for s in model.sites if not s.startswith("text."))
    with torch.no_grad():
        forward = _median(lambda: scorer.logits(pixels), repeats)
    batched = _median(lambda: head_importance(model, image), repeats)
    batched_mean = _median(lambda: head_importance(model, image, mode="mean", reference=reference), repeats)
    loop = _median(lambda: head_importance_one_at_a_time(model, image), max(1, repeats // 2))
    return {"model": model_id, "device": str(model.device), "heads": heads, "forward_s": forward,
            "sweep_batched_s": batched, "sweep_batched_mean_s": batched_mean, "sweep_loop_s": loop,
            "ratio_batched_to_loop": batched / loop, "ratio_batched_to_forward": batched / forward,
            "goal_s": GOAL_S, "verdict": verdict(batched, "<=", GOAL_S)}


def markdown(section: dict) -> str:
    rows = [[r["model"], r["heads"], f"{r['forward_s'] * 1e3:.1f}", f"{r['sweep_batched_s']:.3f}",
             f"{r['sweep_batched_mean_s']:.3f}", f"{r['sweep_loop_s']:.3f}", f"{r['ratio_batched_to_loop']:.2f}",
             f"{r['ratio_batched_to_forward']:.1f}", r["verdict"]] for r in section["reports"]]
    return table(["model", "heads", "clean forward (ms)", "sweep batched, zero (s)", "sweep batched, mean (s)",
                  "one head per forward (s)", "batched / loop", "batched / forward", f"≤ {GOAL_S:g} s"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["bundled:mini-clip", "bundled:mini-vit"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    print(markdown({"reports": [measure(m, args.repeats, args.device) for m in args.models]}))


if __name__ == "__main__":
    main()
