"""Every clipscope benchmark in one run: JSON plus one Markdown table per section.

    python -m benchmarks.run [--quick] [--device cpu|cuda] [--sections NAME ...] --out DIR

Sections: capture overhead, interactive latency per view, embedding throughput, UMAP / PCA projection, figure
payload sizes, app latency under 1 and 8 clients, and (with CUDA) GPU throughput and MFU. Every timing is a ratio
or a rate against a baseline measured in the same run; absolute seconds appear alongside. Goals are reported as
pass / miss, never asserted. ``--quick`` (bundled models, few repeats, small sizes) is the CI smoke test and
finishes within about 2 minutes on 2 CPU cores; the full run takes much longer on a CPU.
``DIR`` receives results.json (machine, options, every section's numbers) and results.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import (
    app_latency,
    capture_overhead,
    embed_engines,
    embedding_space,
    gpu,
    map_scale,
    payload,
    projection,
    sweep,
    view_latency,
)
from benchmarks.report import machine_info, machine_line, table, verdict

CAPTURE_GOALS = {"resid_post (all blocks)": {1: 1.10, "other": 1.05}, "attn.pattern (all layers)": 1.35}
EMBEDDING_GOAL = 0.9


@dataclass
class Plan:
    """What each section measures; ``plan()`` fills it for a quick or a full run."""

    quick: bool
    device: str
    capture_models: list[str]
    capture_dtypes: list[str]
    capture_repeats: int
    view_models: list[str]
    cnn_models: list[str]
    view_repeats: int
    embed_models: list[str]
    embed_images: int
    embed_repeats: int
    projection_points: list[int]
    payload_sizes: payload.Sizes
    app_rounds: int
    app_idle_timeout: float
    gpu_repeats: int
    capture_batches: list[int] = field(default_factory=lambda: [1, 32])
    embed_batch: int = 64
    engine_images: int = 2048      # embed_engines: the Ray engine against the single process
    engine_batch: int = 64
    engine_shard: int = 512
    app_levels: list[int] = field(default_factory=lambda: [1, 8])
    sweep_models: list[str] = field(default_factory=lambda: ["bundled:mini-clip"])
    map_points: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    map_browser: bool = True
    map_umap: bool = True


def plan(quick: bool, device: str) -> Plan:
    """The quick (CI smoke) or full settings for ``device``."""
    bundled = ["bundled:mini-clip", "bundled:mini-vit"]
    gpu_run = device.startswith("cuda")
    dtypes = ["float32", "bf16", "fp16"] if gpu_run else ["float32"]
    if quick:  # half precision on the CPU too, so CI runs the capture path a GPU run relies on
        return Plan(quick=True, device=device, capture_models=bundled, capture_dtypes=["float32", "bf16", "fp16"],
                    capture_repeats=1,
                    view_models=["bundled:mini-clip"], cnn_models=["bundled:mini-cnn"], view_repeats=2,
                    embed_models=["bundled:mini-clip"], embed_images=64, embed_repeats=1, projection_points=[1000],
                    payload_sizes=payload.QUICK, app_rounds=1, app_idle_timeout=0.0, gpu_repeats=3,
                    map_points=[5_000], map_browser=False, map_umap=False)
    return Plan(quick=False, device=device,
                capture_models=["torchvision:vit_b_16/none", "timm:vit_base_patch16_224/none", *bundled],
                capture_dtypes=dtypes, capture_repeats=7,
                view_models=["bundled:mini-clip", "timm:vit_base_patch16_224/none"],
                cnn_models=["bundled:mini-cnn", "torchvision:resnet50/none"], view_repeats=5,
                embed_models=["bundled:mini-clip", *(["open_clip:ViT-B-16/none"] if gpu_run else [])],
                embed_images=1024, embed_repeats=5, projection_points=[1000, 5000, 20000],
                payload_sizes=payload.FULL, app_rounds=6, app_idle_timeout=90.0, gpu_repeats=10)


# ---------------------------------------------------------------------------------------------------- sections

def capture_section(p: Plan) -> dict:
    reports = [capture_overhead.measure(m, p.capture_batches, p.capture_repeats, p.device, dtype)
               for dtype in p.capture_dtypes for m in p.capture_models]
    for report in reports:
        for batch, variants in report["results"].items():
            for name, row in variants.items():
                goal = CAPTURE_GOALS.get(name)
                if isinstance(goal, dict):
                    goal = goal.get(batch, goal["other"])
                row["goal_max_ratio"] = goal
                row["verdict"] = verdict(row["ratio_to_bare"], "<=", goal) if goal else None
    command = (f"python -m benchmarks.capture_overhead --models {' '.join(p.capture_models)} --batches "
               f"{' '.join(map(str, p.capture_batches))} --repeats {p.capture_repeats} --device {p.device}"
               + (" --dtype D" if len(p.capture_dtypes) > 1 else ""))
    return {"command": command, "reports": reports}


def capture_markdown(section: dict) -> str:
    rows = []
    for report in section["reports"]:
        for batch, variants in report["results"].items():
            bare = variants["bare"]["median_s"]
            cells = [report["model"], report["dtype"].replace("torch.", ""), batch, f"{bare:.4f}"]
            for name in ("resid_post (all blocks)", "attn.pattern (all layers)"):
                row = variants[name]
                cells += [f"{row['ratio_to_bare']:.3f}", f"{row['ratio_of_min']:.3f}",
                          f"<= {row['goal_max_ratio']:.2f}", row["verdict"]]
            rows.append(cells)
    return ("Ratios of medians (the verdict) and of the fastest runs (robust to other jobs on a shared machine).\n\n"
            + table(["model", "dtype", "batch", "bare forward s (median)", "resid_post / bare", "fastest-run ratio",
                     "goal", "pass/miss", "attn.pattern / bare (fused forward)", "fastest-run ratio", "goal",
                     "pass/miss"], rows))


def views_section(p: Plan) -> dict:
    attention = [view_latency.measure_views(m, p.view_repeats, p.device) for m in p.view_models]
    cnn = [view_latency.measure_cnn(m, p.view_repeats, p.device) for m in p.cnn_models]
    command = (f"python -m benchmarks.view_latency --models {' '.join(p.view_models)} --cnn-models "
               f"{' '.join(p.cnn_models)} --repeats {p.view_repeats} --device {p.device}")
    return {"command": command, "attention": attention, "cnn": cnn}


def views_markdown(section: dict) -> str:
    rows = []
    for report in section["attention"]:
        rows.append([report["model"], "first request: the one hooked forward", f"{report['first_request_s']:.4f}",
                     "1.000"])
        rows += [[report["model"], v["view"], f"{v['median_s']:.4f}", f"{v['ratio_to_first']:.3f}"]
                 for v in report["views"]]
    cnn = [[r["model"], f"{r['first_request_s']:.4f}", f"{r['switch_over_first']:.3f}",
            f"{r['feature_figure_over_first']:.3f}", f"{r['receptive_field_over_first']:.3f}",
            f"{r['grad_cam_over_first']:.3f}"] for r in section["cnn"]]
    return (table(["model", "view (no new forward; figure built and serialised)", "median s", "/ first request"],
                  rows) + "\n"
            + table(["CNN model", "first request s", "switch stage/channels/scale (maps only) / first",
                     "last stage's 16 maps as the view's figure / first", "receptive-field click / first",
                     "Grad-CAM / first"], cnn))


def embedding_section(p: Plan) -> dict:
    from models import load_model

    reports = []
    for model_id in p.embed_models:
        model = load_model(model_id, device=p.device)
        report = embedding_space.measure_throughput(model, p.embed_images, p.embed_batch, p.embed_repeats)
        for row in report["rows"]:   # the goal is for what users get: embed_images with its default decoding
            row["goal_min_ratio"] = EMBEDDING_GOAL if row["default"] else None
            row["verdict"] = verdict(row["throughput_ratio_to_bare"], ">=", EMBEDDING_GOAL) if row["default"] else None
        reports.append({"model": model_id, **report})
    command = (f"python -m benchmarks.embedding_space --model MODEL --throughput-images {p.embed_images} "
               f"--batch-size {p.embed_batch} --repeats {p.embed_repeats} --device {p.device}")
    return {"command": command, "repeats": p.embed_repeats, "reports": reports}


def embedding_markdown(section: dict) -> str:
    rows = []
    for report in section["reports"]:
        for r in report["rows"]:
            goal = f">= {r['goal_min_ratio']}" if r["goal_min_ratio"] else ""
            rows.append([report["model"], r["variant"], f"{r['median_s']:.3f}",
                         f"{r['images_per_s']:.1f}", f"{r['throughput_ratio_to_bare']:.3f}",
                         f"{r['throughput_ratio_of_min']:.3f}", goal, r["verdict"] or ""])
    first = section["reports"][0]
    return (f"{first['images']} PNG files, batch {first['batch_size']}, median of {section['repeats']} interleaved "
            "runs (the verdict) and ratio of the fastest runs.\n\n"
            + table(["model", "variant", "median s", "images/s", "throughput / bare forward", "fastest-run ratio",
                     "goal", "pass/miss"], rows))


def engines_section(p: Plan) -> dict:
    images, batch, shard = (64, 16, 32) if p.quick else (p.engine_images, p.engine_batch, p.engine_shard)
    report = embed_engines.measure("bundled:mini-clip", images, batch, shard, p.device)
    command = (f"python -m benchmarks.embed_engines --images {images} --batch-size {batch} --shard-size {shard} "
               f"--device {p.device}")
    return {"command": command, **report}


def projection_section(p: Plan) -> dict:
    after = not p.quick  # one more fresh process per point count: left out of the quick run
    results = [projection.measure(n, after_warm_up=after) for n in p.projection_points]
    command = (f"python -m benchmarks.projection --points {' '.join(map(str, p.projection_points))}"
               + (" --after-warm-up" if after else ""))
    return {"command": command, "results": results, "rows": projection.rows(results)}


def map_scale_section(p: Plan) -> dict:
    results = [map_scale.measure(n, browser=p.map_browser, umap=p.map_umap) for n in p.map_points]
    command = (f"python -m benchmarks.map_scale --points {' '.join(map(str, p.map_points))}"
               + ("" if p.map_browser else " --no-browser") + ("" if p.map_umap else " --no-umap"))
    return {"command": command, "results": results}


def payload_section(p: Plan) -> dict:
    report = payload.measure(p.payload_sizes, p.device)
    return {"command": f"python -m benchmarks.payload{' --quick' if p.quick else ''} --device {p.device}", **report}


def app_section(p: Plan) -> dict:
    report = app_latency.measure(p.app_levels, p.app_rounds, p.device, p.app_idle_timeout)
    command = (f"python -m benchmarks.app_latency --clients {' '.join(map(str, p.app_levels))} --rounds "
               f"{p.app_rounds} --idle-timeout {p.app_idle_timeout:g} --device {p.device}")
    return {"command": command, **report}


def gpu_section(p: Plan) -> dict:
    compiled = not p.quick
    report = gpu.measure(gpu.MODELS, ["bf16", "fp16"], 256, p.gpu_repeats, compile_model=compiled)
    command = f"python -m benchmarks.gpu --repeats {p.gpu_repeats}{' --compile' if compiled else ''}"
    return {"command": command, **report}


def sweep_section(p: Plan) -> dict:
    repeats = 2 if p.quick else 5
    reports = [sweep.measure(model_id, repeats, p.device) for model_id in p.sweep_models]
    return {"command": f"python -m benchmarks.sweep --models {' '.join(p.sweep_models)} --repeats {repeats} "
                       f"--device {p.device}", "reports": reports}


Section = tuple[str, str, Callable[[Plan], dict], Callable[[dict], str]]
SECTIONS: list[Section] = [
    ("capture_overhead", "Hook overhead: capture vs the bare forward", capture_section, capture_markdown),
    ("view_latency", "Interactive latency per view: first request, then switches with no new forward",
     views_section, views_markdown),
    ("embedding_throughput", "Embedding throughput end to end (decoding included) vs the bare batched forward",
     embedding_section, embedding_markdown),
    ("embed_engines", "Bulk embedding engines: Ray Data vs the single process, images/s on the same files",
     engines_section, embed_engines.markdown),
    ("projection", "UMAP and PCA to 2-D: cold (fresh process) and warm", projection_section,
     lambda s: projection.markdown(s["results"])),
    ("map_scale", "The WebGL map at scale: bytes per point, first draw, projection, neighbour queries",
     map_scale_section, lambda s: map_scale.markdown(s["results"])),
    ("payload", "Figure payloads: bytes sent to the browser", payload_section, payload.markdown),
    ("app_latency", "App latency through the HTTP API: 1 and 8 concurrent clients", app_section,
     app_latency.markdown),
    ("gpu", "GPU: bulk-embedding images/s and MFU at batch 256", gpu_section, gpu.markdown),
    ("head_sweep", "Head-importance sweep: batched vs one head per forward (goal: mini-clip within 2 s)",
     sweep_section, sweep.markdown),
]


def run(p: Plan, names: list[str]) -> dict:
    """Every chosen section in turn; a failing section is recorded (with its traceback) and the rest still run."""
    results = {}
    for name, title, measure, _ in SECTIONS:
        if name not in names:
            continue
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            results[name] = {"title": title, **measure(p)}
        except Exception:
            results[name] = {"title": title, "error": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - start
        print(f"[benchmarks] {name} done in {results[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return results


def markdown(report: dict) -> str:
    """results.md: the machine, then one titled table per section with the command that measured it."""
    options = report["options"]
    lines = ["# clipscope benchmark results", "",
             f"Measured with `{options['command']}` on: {machine_line(report['machine'])}", "",
             "Every timing is a ratio or a rate against a baseline measured in the same run; goals are reported, "
             "never asserted.", ""]
    for name, title, _, to_markdown in SECTIONS:
        if name not in report["sections"]:
            continue
        section = report["sections"][name]
        lines += [f"## {title}", ""]
        if "error" in section:
            lines += ["Failed:", "", "```", section["error"].rstrip(), "```", ""]
            continue
        lines += [f"Measured with `{section['command']}` ({section['seconds']:.0f} s in this run).", "",
                  to_markdown(section)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke test: bundled models, small sizes")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--sections", nargs="+", default=[s[0] for s in SECTIONS], choices=[s[0] for s in SECTIONS])
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    command = " ".join(["python -m benchmarks.run", *(["--quick"] if args.quick else []), "--device", device,
                        *(["--sections", *args.sections] if len(args.sections) < len(SECTIONS) else []),
                        "--out", str(args.out)])
    machine = machine_info(device)  # load average before this run adds its own
    start = time.perf_counter()
    sections = run(plan(args.quick, device), args.sections)
    machine["load_average_after"] = machine_info(device)["load_average"]
    report = {"machine": machine,
              "options": {"quick": args.quick, "device": device, "sections": args.sections, "command": command},
              "seconds": time.perf_counter() - start, "sections": sections}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "results.md").write_text(markdown(report))
    print(markdown(report))
    failed = [name for name, section in sections.items() if "error" in section]
    if failed:
        print(f"[benchmarks] failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
