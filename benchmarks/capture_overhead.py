"""Capture overhead as a ratio to the bare forward, measured in one run.

    python -m benchmarks.capture_overhead [--models ID ...] [--batches 1 32] [--repeats 5] [--device cpu]
                                          [--dtype bf16] [--out DIR]

Three variants per batch size, interleaved so drift hits all alike: the bare forward (fused attention kernel),
the forward with every block's resid_post captured, and the forward with every layer's attention pattern
captured and read. Reported: median seconds and ratio to bare, and the ratio of the fastest runs (robust to other
jobs on a shared machine, which only ever add time). The default models are ViT-B/16 with random weights
in two backends: torchvision (nn.MultiheadAttention: Q and K must be recomputed from the block input) and timm
(separate qkv module: the capture reuses the Q and K the model computed).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from models import load_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model_id: str, batches: list[int], repeats: int, device: str | None, dtype: str | None = None) -> dict:
    """Median seconds of the bare forward and of the two captures, and their ratios to bare, per batch size."""
    model = load_model(model_id, device=device, dtype=dtype)
    vit = model.image_tower
    run = model.run_image

    def bare(pixels):
        run(pixels)

    def residual(pixels):
        with model.capture("blocks.*.resid_post"):
            run(pixels)

    def attention(pixels):
        with model.capture("blocks.*.attn.pattern") as cache:
            run(pixels)
            for name in cache.keys():
                cache[name]

    variants = {"bare": bare, "resid_post (all blocks)": residual, "attn.pattern (all layers)": attention}
    results = {}
    for batch in batches:
        pixels = torch.randn(batch, 3, *vit.preprocess.size, device=model.device, dtype=model.dtype)
        for fn in variants.values():  # warm-up
            fn(pixels)
        times = {name: [] for name in variants}
        for _ in range(repeats):
            for name, fn in variants.items():
                _sync(model.device)
                start = time.perf_counter()
                fn(pixels)
                _sync(model.device)
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        fastest = {name: min(values) for name, values in times.items()}
        results[batch] = {name: {"median_s": medians[name], "ratio_to_bare": medians[name] / medians["bare"],
                                 "min_s": fastest[name], "ratio_of_min": fastest[name] / fastest["bare"]}
                          for name in variants}
    return {"model": model_id, "device": str(model.device), "dtype": str(model.dtype), "repeats": repeats,
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if model.device.type == "cuda" else None, "results": results}


def markdown(report: dict) -> str:
    lines = [f"Capture overhead, {report['model']} on {report['device']} ({report['dtype']}, "
             f"{report['threads']} threads, {report['gpu'] or report['machine']}), median of {report['repeats']}",
             "", "| batch | variant | median s | ratio to bare | fastest-run ratio |", "|---|---|---|---|---|"]
    for batch, variants in report["results"].items():
        for name, row in variants.items():
            lines.append(f"| {batch} | {name} | {row['median_s']:.4f} | {row['ratio_to_bare']:.3f} "
                         f"| {row['ratio_of_min']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["torchvision:vit_b_16/none", "timm:vit_base_patch16_224/none"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="float32 (default), or bf16 / fp16 on a GPU")
    parser.add_argument("--out", type=Path, default=None, help="directory for capture_overhead.json / .md")
    args = parser.parse_args(argv)
    reports = [measure(model_id, args.batches, args.repeats, args.device, args.dtype) for model_id in args.models]
    tables = "\n".join(markdown(report) for report in reports)
    print(tables)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "capture_overhead.json").write_text(json.dumps(reports, indent=2))
        (args.out / "capture_overhead.md").write_text(tables)


if __name__ == "__main__":
    main()
