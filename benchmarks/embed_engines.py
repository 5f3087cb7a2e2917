"""Bulk embedding engines: ``models.embed --engine ray`` against the single process, images/s on the same PNG files
in one run, as a ratio; with GPU actors when ``--device cuda`` (images/s and MFU).

    python -m benchmarks.embed_engines [--model bundled:mini-clip] [--images 2048] [--batch-size 64]
                                       [--shard-size 512] [--device cpu|cuda] [--out DIR]

Both engines write a ``models.embed`` output folder of the same files (no embedding cache), one after the other,
on a local Ray started once (all of this machine's cores; its GPUs with ``--device cuda``, one model actor per GPU).
The single process gets its model loaded beforehand; the Ray actors load theirs inside the run, so "end to end"
counts Ray's start-up of the pipeline and actors. "Steady state" is images/s from the first rows that came back to
the last (start-up and the first batch left out), the same measure for both engines. On 2 CPU cores Ray can only
add overhead (processes, object store, one more copy of the pixels); the goal is a steady-state ratio >= 0.8.
MFU uses benchmarks.gpu's FLOP count and peak table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import table, verdict
from models import load_model, shapes
from models.embed import embed_source_to_parquet

SEED = 990_101    # held out: training seeds are >= shapes.TRAIN_SEED_START
GOAL_RATIO = 0.8
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class Timeline:
    """An on_progress callback keeping (seconds since start, images done) for the rates."""

    def __init__(self):
        self.start = time.perf_counter()
        self.points: list[tuple[float, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.points.append((time.perf_counter() - self.start, done))

    def steady_rate(self) -> float | None:
        """Images/s from the first rows back to the last (None with fewer than two points past zero)."""
        points = [(t, n) for t, n in self.points if n > 0]
        if len(points) < 2 or points[-1][0] <= points[0][0]:
            return None
        return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def start_ray(device: str, temp_dir: Path) -> dict:
    """A local Ray with this machine's cores (and GPUs on CUDA), workers importing this checkout, quiet; its
    session files in ``temp_dir`` (short: Ray's socket paths must stay under 108 characters)."""
    import ray

    from models.embed.ray_engine import worker_env

    os.environ.update(QUIET)
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    for attempt in range(3):   # on a loaded machine the node's agents may miss Ray's fixed start-up deadline
        try:
            ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, _temp_dir=str(temp_dir),
                     runtime_env={"env_vars": {**worker_env(), **QUIET}})
            break
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
    return {"cpus": os.cpu_count(), "gpus": gpus}


def flops_per_image(model) -> int:
    from benchmarks.gpu import count_flops

    pixels = torch.zeros(1, 3, *model.preprocess.size, device=model.device, dtype=model.dtype)
    return count_flops(model.encode_image, pixels)


def measure(model_id: str, n_images: int, batch_size: int, shard_size: int, device: str) -> dict:
    """Both engines on the same ``n_images`` PNG files; rows of images/s and ratios to the single process."""
    import ray

    from models.embed.ray_engine import embed_source_with_ray

    root = Path(tempfile.mkdtemp(prefix="clipscope-engines-"))
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-"))
    try:
        cluster = start_ray(device, ray_dir)
        shapes.export_folder(shapes.make_dataset(n_images, seed=SEED), root / "images")
        model = load_model(model_id, device=device)
        gpus = 1.0 if cluster["gpus"] else 0.0
        runs = {}
        timeline = Timeline()
        embed_source_to_parquet(model, root / "images", root / "process", batch_size=batch_size,
                                on_progress=timeline)
        runs["single process"] = (time.perf_counter() - timeline.start, timeline)
        driver = model if not gpus else load_model(model_id, device="cpu")   # the GPUs are the actors'
        timeline = Timeline()
        embed_source_with_ray(driver, root / "images", root / "ray", batch_size=batch_size, shard_size=shard_size,
                              gpus_per_worker=gpus, on_progress=timeline)
        runs["ray"] = (time.perf_counter() - timeline.start, timeline)
        flops = flops_per_image(model) if device.startswith("cuda") else None
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(ray_dir, ignore_errors=True)
    base_seconds, base_timeline = runs["single process"]
    base_steady = base_timeline.steady_rate()
    peak = None
    if flops:
        from benchmarks.gpu import peak_tflops

        peak = peak_tflops(torch.cuda.get_device_name(0))
    rows = []
    for engine, (seconds, timeline) in runs.items():
        steady = timeline.steady_rate()
        ratio = steady / base_steady if steady and base_steady else None
        row = {"engine": engine, "seconds": seconds, "images_per_s": n_images / seconds,
               "ratio_end_to_end": base_seconds / seconds, "steady_images_per_s": steady,
               "ratio_steady": ratio, "goal_min_ratio": GOAL_RATIO if engine == "ray" else None,
               "verdict": verdict(ratio, ">=", GOAL_RATIO) if engine == "ray" else None}
        if flops:
            from benchmarks.gpu import mfu

            row["mfu_steady"] = mfu(steady, flops, peak) if steady else None
        rows.append(row)
    return {"model": model_id, "device": device, "torch_threads": torch.get_num_threads(), "images": n_images,
            "batch_size": batch_size,
            "shard_size": shard_size, "cluster": cluster, "flops_per_image": flops, "peak_bf16_tflops": peak,
            "rows": rows}


def markdown(report: dict) -> str:
    gpu = report["device"].startswith("cuda")
    headers = ["engine", "end-to-end s", "images/s end to end", "/ single process", "steady images/s",
               "steady / single process", "goal", "pass/miss", *(["MFU (steady)"] if gpu else [])]
    rows = []
    for r in report["rows"]:
        steady = f"{r['steady_images_per_s']:.1f}" if r["steady_images_per_s"] else "n/a"
        ratio = f"{r['ratio_steady']:.3f}" if r["ratio_steady"] else "n/a"
        mfu_cell = [f"{r['mfu_steady']:.4%}" if r.get("mfu_steady") else "n/a"] if gpu else []
        rows.append([r["engine"], f"{r['seconds']:.2f}", f"{r['images_per_s']:.1f}", f"{r['ratio_end_to_end']:.3f}",
                     steady, ratio, f">= {r['goal_min_ratio']}" if r["goal_min_ratio"] else "", r["verdict"] or "",
                     *mfu_cell])
    cluster = report["cluster"]
    return (f"{report['images']} PNG files, {report['model']} on {report['device']}, batch {report['batch_size']}, "
            f"Ray shards of {report['shard_size']}; the single process with {report['torch_threads']} torch "
            f"thread(s); local Ray with {cluster['cpus']} CPUs and {cluster['gpus']} GPUs (one model actor per GPU, "
            "else one per two CPUs; one torch thread per CPU actor).\n\n" + table(headers, rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled:mini-clip")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=512)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for GPU actors")
    parser.add_argument("--out", type=Path, default=None, help="directory for embed_engines.json / .md")
    args = parser.parse_args(argv)
    report = measure(args.model, args.images, args.batch_size, args.shard_size, args.device)
    text = markdown(report)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "embed_engines.json").write_text(json.dumps(report, indent=2))
        (args.out / "embed_engines.md").write_text(text)


if __name__ == "__main__":
    main()
