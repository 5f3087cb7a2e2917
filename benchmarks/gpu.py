"""Bulk-embedding throughput on a GPU: images/s of the forward at batch 256 in bf16 / fp16 for ViT-B/16 and
ViT-L/14 with random weights, and model FLOP utilisation (MFU) against the GPU's dense bf16 peak.

    python -m benchmarks.gpu [--models ID ...] [--dtypes bf16 fp16] [--batch 256] [--repeats 10] [--compile]
                             [--out DIR]

FLOPs per image are counted once with ``torch.utils.flop_counter.FlopCounterMode`` on a batch-1 forward (matrix
multiplications and attention; a multiply-add is 2 FLOPs). MFU = images/s x FLOPs per image / peak, where the peak
is the dense (no sparsity) bf16 tensor-core figure of the GPU from ``PEAK_BF16_TFLOPS``; an unknown GPU gets its
name printed and no MFU. Without a CUDA device the whole section is skipped with one line saying so.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch

from benchmarks.report import table, verdict

GOAL_MFU = 0.35
MODELS = ["timm:vit_base_patch16_224/none", "timm:vit_large_patch14_224/none"]

# Dense bf16 tensor-core peaks in TFLOPS (vendor datasheets, no sparsity), matched in order against the device name.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"GH200", 989.0),
    (r"H200", 989.0),
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100|H800", 989.0),
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its CUDA name, or None when it is not in the table."""
    for pattern, peak in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return peak
    return None


def mfu(images_per_s: float, flops_per_image: float, peak_tflops_value: float | None) -> float | None:
    """Achieved FLOP/s as a fraction of the peak (None without a known peak)."""
    if not peak_tflops_value:
        return None
    return images_per_s * flops_per_image / (peak_tflops_value * 1e12)


def count_flops(run, pixels: torch.Tensor) -> int:
    """FLOPs of one call ``run(pixels)`` as torch's flop counter counts them.

    nn.MultiheadAttention's fused inference fast path (torchvision, open_clip) is invisible to the counter, so it
    is switched off while counting: the same matrix products then run as linear layers and SDPA, which it counts.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            run(pixels)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_model(model_id: str, dtype: str, batch: int, repeats: int, device: str = "cuda",
                  compile_model: bool = False) -> dict:
    """Images/s of the batched forward (median of ``repeats``) and FLOPs per image for one model and dtype."""
    from models import load_model

    model = load_model(model_id, device=device, dtype=dtype)
    vit = model.image_tower
    run = model.run_image
    pixels = torch.randn(batch, 3, *vit.preprocess.size, device=model.device, dtype=model.dtype)
    flops = count_flops(run, pixels[:1])
    if compile_model:
        run = torch.compile(run)
    with torch.no_grad():
        for _ in range(3):  # warm-up (and compilation)
            run(pixels)
        _sync(model.device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(pixels)
            _sync(model.device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"model": model_id, "dtype": dtype, "batch": batch, "compiled": compile_model, "median_s": seconds,
            "images_per_s": batch / seconds, "flops_per_image": flops, "parameters": model.num_parameters}


def measure(models: list[str], dtypes: list[str], batch: int, repeats: int, compile_model: bool = False) -> dict:
    """Every model x dtype (and compiled, if asked) on the first CUDA device, or a skip note without one."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the GPU section (images/s and MFU at batch 256) was not measured"}
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name)
    rows = []
    for model_id in models:
        for dtype in dtypes:
            for compiled in ([False, True] if compile_model else [False]):
                try:
                    row = measure_model(model_id, dtype, batch, repeats, "cuda", compiled)
                except Exception as exc:  # e.g. out of memory or a compile failure: reported, not fatal
                    row = {"model": model_id, "dtype": dtype, "batch": batch, "compiled": compiled,
                           "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                else:
                    row["mfu"] = mfu(row["images_per_s"], row["flops_per_image"], peak)
                    row["verdict"] = verdict(row["mfu"], ">=", GOAL_MFU)
                rows.append(row)
                torch.cuda.empty_cache()
    note = None if peak else f"unknown GPU {name!r}: no peak in PEAK_BF16_TFLOPS, so no MFU"
    return {"gpu": name, "peak_bf16_tflops": peak, "note": note, "rows": rows}


def markdown(report: dict) -> str:
    """The throughput / MFU table, or the skip line."""
    if "skipped" in report:
        return f"Skipped: {report['skipped']}.\n"
    head = (f"GPU: {report['gpu']}, dense bf16 peak "
            f"{report['peak_bf16_tflops'] or 'unknown'} TFLOPS{'; ' + report['note'] if report['note'] else ''}\n\n")
    body = []
    for r in report["rows"]:
        if "error" in r:
            body.append([r["model"], r["dtype"], "yes" if r["compiled"] else "no", r["batch"], "-", "-", "-",
                         f">= {GOAL_MFU:.0%}", f"error: {r['error']}"])
            continue
        mfu_text = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        body.append([r["model"], r["dtype"], "yes" if r["compiled"] else "no", r["batch"], f"{r['images_per_s']:,.0f}",
                     f"{r['flops_per_image'] / 1e9:.1f}", mfu_text, f">= {GOAL_MFU:.0%}", r["verdict"]])
    return head + table(["model", "dtype", "torch.compile", "batch", "images/s", "GFLOPs / image", "MFU", "goal",
                         "pass/miss"], body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--out", type=Path, default=None, help="directory for gpu.json / .md")
    args = parser.parse_args(argv)
    report = measure(args.models, args.dtypes, args.batch, args.repeats, args.compile)
    text = markdown(report)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=2))
        (args.out / "gpu.md").write_text(text)


if __name__ == "__main__":
    main()
