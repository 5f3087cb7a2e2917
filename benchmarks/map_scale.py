"""The Embedding space map at 10k, 100k and 1M points: payload bytes, time to first draw in Chromium, projection
time, neighbour query latency.

    python -m benchmarks.map_scale [--points 10000 100000 1000000] [--dims 512] [--no-browser] [--no-umap]
                                   [--out DIR]

For each size, synthetic CLIP-like embeddings (``benchmarks.projection.synthetic_embeddings``: clusters per class,
texts offset by a modality gap) are
- projected: PCA (any size) and UMAP (up to 100k on the CPU; past 20k fitted on a sample, the rest transformed),
  through ``viz.projection`` as the app runs them;
- searched: a neighbour index built (exact torch up to 100k, faiss IVF beyond) and 100 single-vector queries timed
  one by one (median and 95th percentile);
- packed: the map's binary points array and one colouring, bytes per point;
- drawn: the WebGL map component with those points in a Gradio app, opened in headless Chromium (software WebGL),
  seconds from the click to the drawn map, and to the answer of a hover.
Also ``write_synthetic_output``: a ``models.embed`` output folder of synthetic rows (what the tab's test opens).
"""
from __future__ import annotations

import argparse
import gc
import json
import socket
import time
from pathlib import Path

import numpy as np

from benchmarks.projection import synthetic_embeddings
from benchmarks.report import table

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def write_synthetic_output(out: str | Path, images: int, dims: int = 128, classes: int = 36,
                           model_id: str = "bundled:mini-clip", seed: int = 0) -> Path:
    """A ``models.embed`` output folder (metadata.json, images/part-*.parquet, texts.parquet) of ``images``
    synthetic embeddings labelled with the procedural world's class names and one class prompt per class, written
    by models.embed's own writer (``models.embed.output.OutputFolder``)."""
    from models.embed import DEFAULT_CLASS_TEMPLATE, fill_template
    from models.embed.output import OutputFolder
    from models.world.shapes import class_names

    out = Path(out)
    names = class_names()[:classes]
    vectors, texts = synthetic_embeddings(images * 10 // 9 + 2, dims=dims, classes=len(names), seed=seed)
    folder = OutputFolder(out, {"model": model_id, "folder": str(out / "no-images"), "template": DEFAULT_CLASS_TEMPLATE,
                                "logit_scale": 100.0, "images": images})
    part = 50_000
    for start in range(0, images, part):
        rows = range(start, min(images, start + part))
        folder.write_part([f"synthetic/{i:07d}.png" for i in rows], [names[i % len(names)] for i in rows],
                          [None] * len(rows), [f"{i:064x}" for i in rows], vectors[rows.start:rows.stop])
    folder.finish([], [fill_template(DEFAULT_CLASS_TEMPLATE, name) for name in names], ["class"] * len(names),
                  names, texts[:len(names)])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_draw(ndc: np.ndarray, groups: np.ndarray) -> dict:
    """Seconds from the click to the drawn WebGL map in headless Chromium, and to a hover's answer."""
    import gradio as gr
    from playwright.sync_api import sync_playwright

    from ui.webgl_map import launch_kwargs, map_value, new_token, point_map, publish_points
    from viz.map_payload import categories, pack_points

    points_url = publish_points(pack_points(ndc))
    colouring = categories([f"class {g}" for g in groups])
    token = new_token()
    with gr.Blocks() as demo:
        drawn = point_map(lambda reference: {"src": "", "text": f"point {reference.partition(':')[2]}"})
        gr.Button("draw").click(lambda: map_value(token, points_url, colouring, title="benchmark"), None, drawn)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_role("button", name="draw").click()
            start = time.perf_counter()
            page.wait_for_function("document.querySelector('[data-drawn-points]') !== null", timeout=120_000)
            first_draw = time.perf_counter() - start
            host = page.evaluate_handle("document.querySelector('[data-drawn-points]')")
            x, y = page.evaluate("(el) => ClipscopePointMap.screenPosition(el, 3)", host)
            start = time.perf_counter()
            page.mouse.move(x - 2, y)
            page.mouse.move(x, y)
            page.wait_for_function("document.querySelector('.pm-tip').dataset.answered !== undefined",
                                   timeout=60_000)
            hover = time.perf_counter() - start
            browser.close()
    finally:
        demo.close()
    return {"first_draw_s": first_draw, "hover_s": hover}


def measure(points: int, dims: int = 512, browser: bool = True, umap: bool = True) -> dict:
    """Every figure of one size (see the module's docstring); ``umap=False`` leaves UMAP out (its first fit in a
    process compiles numba code for tens of seconds)."""
    from viz.embedding_space import joint_matrix
    from viz.map_payload import categories, pack_points, screen_transform
    from viz.neighbours import NeighbourIndex
    from viz.projection import UMAP_LIMIT, pca_map, umap_map

    images, texts = synthetic_embeddings(points, dims=dims)
    groups = np.arange(len(images)) % 36
    result = {"points": points, "dims": dims}
    joint = joint_matrix(images, texts)
    start = time.perf_counter()
    coords = pca_map(joint).coords
    result["pca_s"] = time.perf_counter() - start
    if umap and points <= UMAP_LIMIT:
        start = time.perf_counter()
        scaled = umap_map(joint)
        result["umap_s"] = time.perf_counter() - start
        result["umap_note"] = scaled.note or "all points fitted"
    del joint
    gc.collect()
    start = time.perf_counter()
    index = NeighbourIndex(images)
    result["index_build_s"] = time.perf_counter() - start
    result["index"] = index.kind
    queries = np.random.default_rng(1).normal(size=(100, dims)).astype(np.float32)
    latencies = []
    for query in queries:
        start = time.perf_counter()
        index.search(query, 10)
        latencies.append(time.perf_counter() - start)
    result["query_ms_median"] = 1000 * float(np.median(latencies))
    result["query_ms_p95"] = 1000 * float(np.percentile(latencies, 95))
    del index
    gc.collect()
    ndc = screen_transform(coords)(coords)
    kinds = np.concatenate([np.zeros(len(images), np.uint8), np.full(len(texts), 2, np.uint8)])
    colouring = categories([f"class {g}" for g in np.concatenate([groups, np.arange(len(texts)) % 36])])
    result["points_bytes"] = len(pack_points(ndc, kinds))
    result["colour_bytes"] = len(colouring.to_bytes())
    result["bytes_per_point"] = (result["points_bytes"] + result["colour_bytes"]) / points
    if browser:
        result.update(browser_draw(ndc, np.concatenate([groups, np.arange(len(texts)) % 36])))
    del images, texts, coords, ndc
    gc.collect()
    return result


def rows(results: list[dict]) -> list[list[str]]:
    def seconds(r, key):
        return f"{r[key]:.2f}" if key in r else "—"
    return [[f"{r['points']:,}", f"{r['bytes_per_point']:.1f}",
             f"{(r['points_bytes'] + r['colour_bytes']) / 2**20:.1f}",
             seconds(r, "first_draw_s"), seconds(r, "hover_s"), seconds(r, "pca_s"), seconds(r, "umap_s"),
             f"{r['index_build_s']:.1f}", f"{r['query_ms_median']:.1f} / {r['query_ms_p95']:.1f}", r["index"]]
            for r in results]


HEADER = ["points", "bytes/point", "payload MB", "first draw s", "hover s", "PCA s", "UMAP s", "index build s",
          "query ms (median / p95)", "neighbour index"]


def markdown(results: list[dict]) -> str:
    notes = "; ".join(f"{r['points']:,}: {r['umap_note']}" for r in results if "umap_note" in r)
    return table(HEADER, rows(results)) + (f"\n\nUMAP: {notes}. Past 100k points the CPU map is PCA only." if notes
                                           else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--no-umap", action="store_true", help="leave UMAP out (PCA only)")
    parser.add_argument("--out", type=Path, default=None, help="write map_scale.json and map_scale.md here")
    args = parser.parse_args(argv)
    from viz.embedding_space import warm_up

    warm_up()   # numba compiles once, as the app does at start-up
    results = []
    for n in args.points:
        results.append(measure(n, args.dims, browser=not args.no_browser, umap=not args.no_umap))
        print(json.dumps(results[-1]), flush=True)
    text = markdown(results)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "map_scale.json").write_text(json.dumps(results, indent=2))
        (args.out / "map_scale.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
