"""UMAP and PCA to 2-D (the embedding explorer's maps) for 1k / 5k / 20k points, cold and warm.

    python -m benchmarks.projection [--points 1000 5000 20000] [--dims 512] [--after-warm-up] [--out DIR]

Each point count runs in a fresh Python process, so that its first UMAP fit is truly cold (numba compiles UMAP's
and, from 4,096 points on, pynndescent's code then); a second fit of the same points in that process, through the
app's projection cache as a map request runs it, is warm, and a third request is answered by that cache. PCA
is timed the same way, before UMAP (whose own PCA to 50 dimensions would otherwise warm it). The points are
synthetic CLIP-like embeddings: ``dims``-dimensional clusters (one per class) for images, a shifted copy for texts
(the modality gap), 10% texts, L2-normalised by ``viz.embedding_space.joint_matrix`` as the app does. Reported:
seconds, points/s, cold/warm and UMAP/PCA ratios. With ``--after-warm-up`` a further fresh process runs the app's
start-up warm-up (``viz.embedding_space.warm_up``: two tiny fits, exact and approximate neighbours) and then the
first real fit: what the first map request costs in an app process.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import table

ROOT = Path(__file__).resolve().parent.parent


def synthetic_embeddings(n_points: int, dims: int = 512, classes: int = 36, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(images, texts): 90% / 10% of ``n_points`` clustered vectors, texts offset from images by a common gap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)).astype(np.float32)
    gap = rng.normal(size=dims).astype(np.float32) * 0.8
    n_texts = n_points // 10
    n_images = n_points - n_texts
    images = centres[rng.integers(classes, size=n_images)] + 0.6 * rng.normal(size=(n_images, dims))
    texts = centres[rng.integers(classes, size=n_texts)] + gap + 0.3 * rng.normal(size=(n_texts, dims))
    return images.astype(np.float32), texts.astype(np.float32)


def child(path: str) -> None:
    """In a fresh process: for PCA, then UMAP, a cold fit of the saved points and a warm one through the app's
    projection cache (``viz.embedding_space.ProjectionCache``, as a map request runs it); then the same UMAP view
    asked again, which the cache answers."""
    start = time.perf_counter()
    import umap  # noqa: F401  (imported here so that the import is timed apart from the fits)

    from viz.embedding_space import ProjectionCache, joint_matrix, pca_2d, umap_2d
    import_s = time.perf_counter() - start
    data = np.load(path)
    images, texts = data["images"], data["texts"]
    cache = ProjectionCache()
    times = {"import_s": import_s}
    for name, fit in (("pca", pca_2d), ("umap", umap_2d)):
        start = time.perf_counter()
        fit(joint_matrix(images, texts))
        times[f"{name}_cold_s"] = time.perf_counter() - start
        start = time.perf_counter()
        cache.get(images, texts, name)
        times[f"{name}_warm_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cache.get(images, texts, "umap")
    times["cached_lookup_s"] = time.perf_counter() - start
    print(json.dumps(times))


def warm_up_child(path: str) -> None:
    """In a fresh process: the app's start-up warm-up, then the first fit of the saved points."""
    from viz.embedding_space import joint_matrix, umap_2d, warm_up

    data = np.load(path)
    points = joint_matrix(data["images"], data["texts"])
    start = time.perf_counter()
    warm_up()
    warm_up_s = time.perf_counter() - start
    start = time.perf_counter()
    umap_2d(points)
    print(json.dumps({"app_warm_up_s": warm_up_s, "umap_after_app_warm_up_s": time.perf_counter() - start}))


def _run_child(flag: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.projection", flag, str(path)], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_points(images: np.ndarray, texts: np.ndarray, after_warm_up: bool = False) -> dict:
    """Cold and warm PCA and UMAP seconds (and the cached look-up) for these embeddings, in a fresh process; with
    ``after_warm_up``, the first UMAP fit after the app's warm-up in another."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "points.npz"
        np.savez(path, images=images, texts=texts)
        row = _run_child("--child", path)
        if after_warm_up:
            row.update(_run_child("--warm-up-child", path))
    row.update(points=len(images) + len(texts), images=len(images), texts=len(texts))
    return row


def measure(n_points: int, dims: int = 512, after_warm_up: bool = False) -> dict:
    """:func:`measure_points` of ``n_points`` synthetic CLIP-like embeddings."""
    return {**measure_points(*synthetic_embeddings(n_points, dims), after_warm_up), "dims": dims}


STATES = {"cold": "cold", "warm": "warm", "after_app_warm_up": "first fit after the app's warm-up"}


def rows(results: list[dict]) -> list[dict]:
    """One row per (method, state, points): seconds, points/s and the ratios against the same run's baselines."""
    out = []
    for r in results:
        for method in ("umap", "pca"):
            for state in ("cold", "warm", "after_app_warm_up"):
                if f"{method}_{state}_s" not in r:
                    continue
                seconds = r[f"{method}_{state}_s"]
                out.append({"method": method.upper(), "state": STATES[state], "points": r["points"],
                            "seconds": seconds, "points_per_s": r["points"] / seconds,
                            "ratio_to_warm": seconds / r[f"{method}_warm_s"],
                            "ratio_to_pca_warm": seconds / r["pca_warm_s"]})
    return out


def markdown(results: list[dict]) -> str:
    """The projection table: seconds, rate, cold/warm and UMAP/PCA."""
    body = [[row["method"], row["state"], f"{row['points']:,}", f"{row['seconds']:.3f}",
             f"{row['points_per_s']:,.0f}", f"{row['ratio_to_warm']:.2f}", f"{row['ratio_to_pca_warm']:.1f}"]
            for row in rows(results)]
    return table(["method", "state", "points", "seconds", "points/s", "/ warm (same method)", "/ PCA warm"], body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="directory for projection.json / .md")
    parser.add_argument("--after-warm-up", action="store_true", help="also time the first fit after the app's warm-up")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm-up-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    if args.warm_up_child:
        return warm_up_child(args.warm_up_child)
    results = [measure(n, args.dims, args.after_warm_up) for n in args.points]
    text = markdown(results)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "projection.json").write_text(json.dumps(results, indent=2))
        (args.out / "projection.md").write_text(text)


if __name__ == "__main__":
    main()
