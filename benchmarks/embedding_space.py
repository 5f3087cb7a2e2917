"""The embedding explorer's costs: UMAP of 2,000 image + 200 text embeddings cold and warm, and embedding
throughput end to end (files decoded as ``models.embed`` decodes them) as a ratio to the bare batched forward.

    python -m benchmarks.embedding_space [--model bundled:mini-clip] [--images 2000] [--texts 200]
                                         [--throughput-images 1024] [--batch-size 64] [--repeats 3] [--out DIR]

UMAP "cold" is the first fit in a fresh Python process (numba compiles then); "warm" is a second fit of the same
points in that process. An app process pays the compilation once at start-up (``viz.embedding_space.warm_up``, two
tiny fits), after which a request costs a warm fit, and a repeated view costs a cache look-up. The embeddings are
the model's own, of held-out procedural images and captions.

Throughput: the bare forward runs on pixels decoded and preprocessed beforehand; the end-to-end run reads PNG files
from disk, decodes and preprocesses them as ``models.embed.embed_images`` does by default (background threads on a
GPU, inline on a CPU whose cores torch already uses), with no embedding cache. The other choice (inline on a GPU,
background threads on the CPU) is timed beside it. Variants are interleaved and
the median of ``--repeats`` is reported, with the ratio of the fastest runs beside it.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import projection
from models import load_model, shapes
from models.embed import ImageItem, default_workers, embed_images, embed_texts, scan_folder

SEED = 990_001  # held out: training seeds are >= shapes.TRAIN_SEED_START


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def joint_embeddings(model, n_images: int, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Image embeddings of ``n_images`` procedural images and text embeddings of ``n_texts`` distinct captions."""
    examples = shapes.make_dataset(n_images, seed=SEED)
    images = embed_images(model, [ImageItem(e.image) for e in examples])
    captions = list(dict.fromkeys(e.caption for e in examples))[:n_texts]
    return images, embed_texts(model, captions)


def measure_umap(model, n_images: int, n_texts: int) -> dict:
    """benchmarks.projection's cold / warm / after-warm-up timings, on the model's own embeddings."""
    return projection.measure_points(*joint_embeddings(model, n_images, n_texts), after_warm_up=True)


def measure_throughput(model, n_images: int, batch_size: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        shapes.export_folder(shapes.make_dataset(n_images, seed=SEED + 1), folder)
        items = scan_folder(folder)
        pixels = model.preprocess([item.open() for item in items])

        @torch.no_grad()
        def bare() -> None:
            for start in range(0, len(pixels), batch_size):
                model.encode_image(pixels[start:start + batch_size].to(model.device, model.dtype))
            _sync(model.device)

        def end_to_end(workers: int):
            def run() -> None:
                embed_images(model, items, batch_size=batch_size, workers=workers)
                _sync(model.device)
            return run

        workers = default_workers(model.device)
        threads = workers or default_workers("cuda")   # the background variant, where the default decodes inline
        default = (f"end to end, as embed_images does by default: {workers} decoding thread(s)" if workers
                   else "end to end, as embed_images does by default: decoding inline")
        other = "end to end, decoding inline" if workers else f"end to end, {threads} background decoding thread(s)"
        variants = {"bare forward": bare, default: end_to_end(workers), other: end_to_end(0 if workers else threads)}
        bare()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    return {"images": n_images, "batch_size": batch_size, "workers": workers,
            "rows": [{"variant": name, "default": name == default, "median_s": seconds,
                      "images_per_s": n_images / seconds,
                      "throughput_ratio_to_bare": medians["bare forward"] / seconds, "min_s": fastest[name],
                      "throughput_ratio_of_min": fastest["bare forward"] / fastest[name]}
                     for name, seconds in medians.items()]}


def markdown(report: dict) -> str:
    umap, throughput = report["umap"], report["throughput"]
    lines = [f"Embedding explorer, {report['model']} on {report['device']} ({report['threads']} torch threads, "
             f"{report['machine']})", "",
             f"UMAP (cosine, PCA to 50 first) of {umap['images']} image + {umap['texts']} text embeddings",
             "", "| step | seconds |", "|---|---|",
             f"| cold: first fit in a fresh process (numba compiles) | {umap['umap_cold_s']:.2f} |",
             f"| warm: second fit, same process | {umap['umap_warm_s']:.2f} |",
             f"| app start-up warm-up (two tiny fits, once per process) | {umap['app_warm_up_s']:.2f} |",
             f"| first fit after the warm-up | {umap['umap_after_app_warm_up_s']:.2f} |",
             f"| same view again (projection cache) | {umap['cached_lookup_s']:.4f} |", "",
             f"Embedding throughput, {throughput['images']} PNG files, batch {throughput['batch_size']}, "
             f"median of {report['repeats']}", "",
             "| variant | median s | images/s | throughput / bare forward | fastest-run ratio |",
             "|---|---|---|---|---|"]
    lines += [f"| {row['variant']} | {row['median_s']:.3f} | {row['images_per_s']:.1f} | "
              f"{row['throughput_ratio_to_bare']:.3f} | {row['throughput_ratio_of_min']:.3f} |"
              for row in throughput["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled:mini-clip")
    parser.add_argument("--device", default=None)
    parser.add_argument("--images", type=int, default=2000, help="image embeddings in the UMAP")
    parser.add_argument("--texts", type=int, default=200, help="text embeddings in the UMAP")
    parser.add_argument("--throughput-images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="directory for embedding_space.json / .md")
    args = parser.parse_args(argv)
    model = load_model(args.model, device=args.device)
    report = {"model": args.model, "device": str(model.device), "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
              "repeats": args.repeats,
              "umap": measure_umap(model, args.images, args.texts),
              "throughput": measure_throughput(model, args.throughput_images, args.batch_size, args.repeats)}
    table = markdown(report)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "embedding_space.json").write_text(json.dumps(report, indent=2))
        (args.out / "embedding_space.md").write_text(table)


if __name__ == "__main__":
    main()
