"""UMAP and PCA to 2-D (the embedding explorer's maps) for 1k / 5k / 20k points, cold and warm.

    python -m benchmarks.projection [--points 1000 5000 20000] [--dims 512] [--out DIR]

Each point count runs in a fresh Python process, so that its first UMAP fit is truly cold (numba compiles UMAP's
and, from 4,096 points on, pynndescent's code then); a second fit of the same points in that process is warm. PCA
is timed the same way, before UMAP (whose own PCA to 50 dimensions would otherwise warm it). The points are
synthetic CLIP-like embeddings: ``dims``-dimensional clusters (one per class) for images, a shifted copy for texts
(the modality gap), 10% texts, L2-normalised by ``viz.embedding_space.joint_matrix`` as the app does. Reported:
seconds, points/s, cold/warm and UMAP/PCA ratios.
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
    """In a fresh process: cold and warm PCA fits, then cold and warm UMAP fits, of the saved points."""
    start = time.perf_counter()
    import umap  # noqa: F401  (imported here so that the import is timed apart from the fits)

    from viz.embedding_space import joint_matrix, pca_2d, umap_2d
    import_s = time.perf_counter() - start
    data = np.load(path)
    points = joint_matrix(data["images"], data["texts"])
    times = {"import_s": import_s}
    for name, fit in (("pca", pca_2d), ("umap", umap_2d)):
        for state in ("cold", "warm"):
            start = time.perf_counter()
            fit(points)
            times[f"{name}_{state}_s"] = time.perf_counter() - start
    print(json.dumps(times))


def measure(n_points: int, dims: int = 512) -> dict:
    """Cold and warm UMAP and PCA seconds for ``n_points`` points, each count in its own fresh process."""
    images, texts = synthetic_embeddings(n_points, dims)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "points.npz"
        np.savez(path, images=images, texts=texts)
        result = subprocess.run([sys.executable, "-m", "benchmarks.projection", "--child", str(path)], cwd=ROOT,
                                capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(points=n_points, dims=dims)
    return row


def rows(results: list[dict]) -> list[dict]:
    """One row per (method, state, points): seconds, points/s and the ratios against the same run's baselines."""
    out = []
    for r in results:
        for method in ("umap", "pca"):
            for state in ("cold", "warm"):
                seconds = r[f"{method}_{state}_s"]
                out.append({"method": method.upper(), "state": state, "points": r["points"], "seconds": seconds,
                            "points_per_s": r["points"] / seconds,
                            "ratio_to_warm": seconds / r[f"{method}_warm_s"],
                            "ratio_to_pca_same_state": seconds / r[f"pca_{state}_s"]})
    return out


def markdown(results: list[dict]) -> str:
    """The projection table: seconds, rate, cold/warm and UMAP/PCA."""
    body = [[row["method"], row["state"], f"{row['points']:,}", f"{row['seconds']:.3f}",
             f"{row['points_per_s']:,.0f}", f"{row['ratio_to_warm']:.2f}", f"{row['ratio_to_pca_same_state']:.1f}"]
            for row in rows(results)]
    return table(["method", "state", "points", "seconds", "points/s", "/ warm", "/ PCA (same state)"], body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="directory for projection.json / .md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    results = [measure(n, args.dims) for n in args.points]
    text = markdown(results)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "projection.json").write_text(json.dumps(results, indent=2))
        (args.out / "projection.md").write_text(text)


if __name__ == "__main__":
    main()
