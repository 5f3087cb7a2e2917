"""App latency through the real HTTP API: p50 / p95 per endpoint and overall, from 1 and then 8 concurrent clients.

    python -m benchmarks.app_latency [--rounds 6] [--clients 1 8] [--device cpu] [--out DIR]

The app is started as users start it (``python app.py``, bundled models) on a free port. Each client is a
``gradio_client.Client`` (its own browser session) running a mix of requests in a loop: analyse an image in the
Attention tab, switch layer/head, rollout, analyse in the CNN tab, switch feature maps, classify zero-shot, move the
softmax sliders. One untimed round loads the models; then the run waits until the app is idle (its start-up UMAP
warm-up done) before timing. With N clients every client runs ``rounds`` rounds at once. Reported per level:
p50 / p95 seconds per endpoint and overall, requests/s, and the N-client / 1-client ratios.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.app_server import running_app, wait_until_idle
from benchmarks.report import table

Request = tuple[str, Callable[[], tuple]]


def summarise(seconds: list[float]) -> dict:
    """Count, p50 and p95 (linear interpolation between closest ranks) of latencies in seconds."""
    if not seconds:
        return {"n": 0, "p50_s": None, "p95_s": None}
    values = np.asarray(seconds, dtype=float)
    return {"n": len(values), "p50_s": float(np.percentile(values, 50)), "p95_s": float(np.percentile(values, 95))}


def request_mix(image_path: str) -> list[Request]:
    """(endpoint, arguments) in the order one user would send them; every analyse precedes its views."""
    from gradio_client import handle_file

    from models import shapes

    labels = "\n".join(shapes.class_names())
    return [
        ("/attention_analyse", lambda: ("bundled:mini-clip", handle_file(image_path), 2, "mean", 1.0)),
        ("/attention_view", lambda: (3, "head 1", 0.5)),
        ("/attention_rollout", lambda: ("max", 0.5)),
        ("/cnn_analyse", lambda: ("bundled:mini-cnn", handle_file(image_path), "")),
        ("/cnn_feature_maps", lambda: ("stages.1", "top-k by mean activation", 16, "", "per unit")),
        ("/zero_shot_classify", lambda: ("bundled:mini-clip", handle_file(image_path), labels,
                                         "default: a photo of a {}.", "", 5)),
        ("/softmax_sliders", lambda: (12.0, 10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.0, 0.3)),
    ]


def run_client(client, mix: list[Request], rounds: int, start: threading.Barrier | None = None) -> list[dict]:
    """Send the mix ``rounds`` times; one record (endpoint, seconds, error) per request."""
    if start is not None:
        start.wait()
    records = []
    for _ in range(rounds):
        for endpoint, arguments in mix:
            began = time.perf_counter()
            error = None
            try:
                client.predict(*arguments(), api_name=endpoint)
            except Exception as exc:  # a failed request is reported, not fatal
                error = f"{type(exc).__name__}: {str(exc)[:160]}"
            records.append({"endpoint": endpoint, "seconds": time.perf_counter() - began, "error": error})
    return records


def run_level(url: str, mix: list[Request], clients: int, rounds: int) -> dict:
    """``clients`` clients at once, each its own session, each sending the mix ``rounds`` times."""
    from gradio_client import Client

    sessions = [Client(url, verbose=False) for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(run_client, c, mix, rounds, barrier) for c in sessions]
        barrier.wait()
        began = time.perf_counter()
        records = [r for f in futures for r in f.result()]
        wall = time.perf_counter() - began
    ok = [r for r in records if r["error"] is None]
    endpoints = {name: summarise([r["seconds"] for r in ok if r["endpoint"] == name]) for name, _ in mix}
    for name in endpoints:
        endpoints[name]["errors"] = sum(1 for r in records if r["endpoint"] == name and r["error"])
    errors = sorted({r["error"] for r in records if r["error"]})
    return {"clients": clients, "rounds": rounds, "wall_s": wall, "requests": len(records),
            "requests_per_s": len(ok) / wall, "overall": summarise([r["seconds"] for r in ok]),
            "endpoints": endpoints, "errors": errors[:5]}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def measure(levels: list[int], rounds: int, device: str | None = None, idle_timeout: float = 90.0) -> dict:
    """Start the app, warm it up, wait for it to go idle, then time each concurrency level in turn."""
    from gradio_client import Client

    from models import shapes

    args = ["--device", device] if device else []
    with tempfile.TemporaryDirectory() as folder, running_app(*args) as (url, process):
        image_path = str(Path(folder) / "shape.png")
        shapes.make_dataset(1, seed=3)[0].image.resize((128, 128)).save(image_path)
        mix = request_mix(image_path)
        run_client(Client(url, verbose=False), mix, 1)  # untimed: loads the models
        waited = wait_until_idle(process.pid, idle_timeout)
        results = [run_level(url, mix, clients, rounds) for clients in levels]
    base = results[0]
    for level in results[1:]:
        level["ratio_to_1_client"] = {
            "overall_p50": _ratio(level["overall"]["p50_s"], base["overall"]["p50_s"]),
            "overall_p95": _ratio(level["overall"]["p95_s"], base["overall"]["p95_s"]),
            "requests_per_s": _ratio(level["requests_per_s"], base["requests_per_s"]),
            "endpoints_p50": {name: _ratio(row["p50_s"], base["endpoints"][name]["p50_s"])
                              for name, row in level["endpoints"].items()}}
    return {"idle_wait_s": waited, "levels": results}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """Overall per level, then p50 / p95 per endpoint and level."""
    levels = report["levels"]
    overall = [[lv["clients"], lv["requests"], _fmt(lv["overall"]["p50_s"]), _fmt(lv["overall"]["p95_s"]),
                _fmt(lv["requests_per_s"], ".2f"),
                _fmt(lv.get("ratio_to_1_client", {}).get("overall_p50", 1.0 if lv is levels[0] else None)),
                _fmt(lv.get("ratio_to_1_client", {}).get("overall_p95", 1.0 if lv is levels[0] else None)),
                _fmt(lv.get("ratio_to_1_client", {}).get("requests_per_s", 1.0 if lv is levels[0] else None)),
                sum(row["errors"] for row in lv["endpoints"].values())] for lv in levels]
    text = table(["clients", "requests", "p50 s", "p95 s", "requests/s", "p50 / 1 client", "p95 / 1 client",
                  "requests/s / 1 client", "errors"], overall)
    headers = ["endpoint"] + [f"{lv['clients']} client(s) p50 / p95 s" for lv in levels]
    headers += [f"p50 {lv['clients']} / 1" for lv in levels[1:]]
    rows = []
    for name in levels[0]["endpoints"]:
        row = [name] + [f"{_fmt(lv['endpoints'][name]['p50_s'])} / {_fmt(lv['endpoints'][name]['p95_s'])}"
                        for lv in levels]
        row += [_fmt(lv["ratio_to_1_client"]["endpoints_p50"][name], ".2f") for lv in levels[1:]]
        rows.append(row)
    errors = sorted({e for lv in levels for e in lv["errors"]})
    notes = "".join(f"\nError seen: {e}\n" for e in errors)
    return text + "\n" + table(headers, rows) + notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrency levels, first = base")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the request mix per client and level")
    parser.add_argument("--device", default=None)
    parser.add_argument("--idle-timeout", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=None, help="directory for app_latency.json / .md")
    args = parser.parse_args(argv)
    report = measure(args.clients, args.rounds, args.device, args.idle_timeout)
    text = markdown(report)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "app_latency.json").write_text(json.dumps(report, indent=2))
        (args.out / "app_latency.md").write_text(text)


if __name__ == "__main__":
    main()
