"""The Ray Data engine of ``models.embed`` (``--engine ray``): the same output folder as the single process, from a
pipeline that spreads over a cluster.

    rows (this process) -> decode_rows (Ray tasks: read, sha256, decode, resize, crop; uint8)
                        -> ImageEmbedder (an actor pool: one model per actor, num_gpus each where there are GPUs)
                        -> shards written here, one Parquet part each, as soon as all their rows are back

The rows still to do (every path of the source not in a finished part of the output folder) are cut into shards of
``shard_size`` images; a shard is written whole or not at all, so a run killed at any moment resumes at the first
unfinished shard's images. A file that cannot be read becomes a row of ``errors.parquet`` (path, reason), never an
error of the run. This process loads the model once too: for its preprocessing settings and the text embeddings.

Workers import ``models`` from this checkout: the runtime environment of every task and actor puts its root on
``PYTHONPATH`` (on a cluster, the checkout must be at the same path on every node, or clipscope installed there) and
carries the offline switches (``HF_HUB_OFFLINE``, ``CLIPSCOPE_OFFLINE``, ...) of this process.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.embed.output import OutputFolder
from models.embed.sources import ImageItem, TarMember, failure_reason

DEFAULT_SHARD_SIZE = 1024
# A decoding task asks for half a CPU: it is lighter than a forward, and resources that differ from the actors' keep
# Ray from fusing decoding into the model actors, so decoding (tasks) and the forward (actors) overlap.
DECODE_CPUS = 0.5
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CLIPSCOPE_OFFLINE", "HF_HOME", "TORCH_HOME",
              "CLIPSCOPE_CACHE_DIR")
REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env() -> dict[str, str]:
    """Environment variables for every Ray task and actor: the checkout on PYTHONPATH, the offline switches."""
    paths = [str(REPO_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    env.update({key: os.environ[key] for key in PASSED_ENV if key in os.environ})
    return env


def op_runtime_env() -> dict | None:
    """The runtime environment for the pipeline's tasks and actors: None when the job's own (set by whoever called
    ray.init) already carries :func:`worker_env`, so its prestarted workers serve; else the job's plus ours."""
    import ray

    job = ray.get_runtime_context().runtime_env or {}
    job_vars = dict(job.get("env_vars") or {})
    ours = worker_env()
    on_path = str(REPO_ROOT) in job_vars.get("PYTHONPATH", "").split(os.pathsep)
    if on_path and all(job_vars.get(key) == value for key, value in ours.items() if key != "PYTHONPATH"):
        return None
    return {**job, "env_vars": {**job_vars, **ours}}


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` ("auto", "ray://HOST:PORT") or start a local one; nothing if Ray is up."""
    import ray

    if ray.is_initialized():
        return
    options = {"runtime_env": {"env_vars": worker_env()}, "logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False
    ray.init(address=address, **options)


def pool_size(workers: int | None, gpus_per_worker: float | None) -> tuple[int, float]:
    """(model actors, GPUs per actor) for the connected cluster: one actor per GPU (or group of
    ``gpus_per_worker``) when it has GPUs, else one per two CPUs (the other half decodes)."""
    import ray

    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    per_worker = (1.0 if gpus else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if per_worker > gpus:
        raise ValueError(f"--gpus-per-worker {per_worker:g}, but the Ray cluster has {gpus:g} GPU(s).")
    if workers is None:
        workers = int(gpus // per_worker) if per_worker else int(resources.get("CPU", 2) // 2)
    return max(1, workers), per_worker


def row_dicts(items: Sequence[ImageItem], shard_size: int) -> list[dict]:
    """The rows to embed: index (in the run's list), shard (index // shard_size), name, file, and offset and size
    for a tar member (-1 for a whole file)."""
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item.source, (str, Path, TarMember)):
            raise ValueError(f"The Ray engine reads files; {item.name!r} is not one.")
        member = item.source if isinstance(item.source, TarMember) else None
        rows.append({"index": index, "shard": index // shard_size, "name": item.name,
                     "file": member.shard if member else str(item.source),
                     "offset": member.offset if member else -1, "size": member.size if member else -1})
    return rows


def _item(name: str, file: str, offset: int, size: int) -> ImageItem:
    return ImageItem(TarMember(file, int(offset), int(size)) if offset >= 0 else Path(file), name=name)


def decode_rows(batch: dict[str, np.ndarray], preprocess) -> dict[str, np.ndarray]:
    """A Ray task: each row's file read, hashed (sha256, as ``content_key``), decoded as ``ImageItem.open`` does and
    resized / cropped as ``preprocess.uint8_batch`` does. A row that fails keeps zero pixels and its reason."""
    from models.embed import content_key

    count = len(batch["name"])
    height, width = preprocess.size
    pixels = np.zeros((count, height, width, 3), dtype=np.uint8)
    sha256, reasons = [""] * count, [""] * count
    for row in range(count):
        item = _item(batch["name"][row], batch["file"][row], batch["offset"][row], batch["size"][row])
        try:
            pixels[row] = np.asarray(preprocess.geometry(item.open()))
            sha256[row] = content_key(item)
        except Exception as exc:   # any failure to read one file (not an image, truncated, unreadable, too big)
            reasons[row] = failure_reason(exc)
    return {"index": batch["index"], "shard": batch["shard"], "sha256": np.asarray(sha256, dtype=object),
            "reason": np.asarray(reasons, dtype=object), "pixels": pixels}


class ImageEmbedder:
    """A Ray actor holding one model (loaded here by its id with models.load_model): uint8 pixels in, raw image
    embeddings out (zeros for the rows that could not be read)."""

    def __init__(self, model_id: str, device: str, dtype: str | None = None):
        import torch

        from models.registry import load_model

        self.torch = torch
        self.model = load_model(model_id, device=device, dtype=dtype)
        height, width = self.model.preprocess.size
        self.dim = self._embed(np.zeros((1, height, width, 3), dtype=np.uint8)).shape[1]

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        from models.memory import run_with_backoff

        model, torch = self.model, self.torch
        with torch.no_grad():
            uint8 = torch.from_numpy(np.ascontiguousarray(pixels)).to(model.device)
            return run_with_backoff(model.encode_image, model.preprocess.normalize_batch(uint8)).float().cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = np.asarray([reason == "" for reason in batch["reason"]], dtype=bool)
        embedding = np.zeros((len(good), self.dim), dtype=np.float32)
        if good.any():
            embedding[good] = self._embed(batch["pixels"][good])
        return {"index": batch["index"], "shard": batch["shard"], "sha256": batch["sha256"],
                "reason": batch["reason"], "embedding": embedding}


def embed_source_with_ray(model, source: str | Path, out_dir: str | Path, *, address: str | None = None,
                          workers: int | None = None, gpus_per_worker: float | None = None, batch_size: int = 64,
                          shard_size: int | None = None, max_shards: int | None = None, dtype: str | None = None,
                          template: str | None = None, captions: str | Path | None = None, text_cache=None,
                          on_progress=None) -> dict:
    """Embed every image of ``source`` not yet in ``out_dir`` on Ray, then the texts here; returns the metadata.

    ``model`` (loaded in this process) gives the model id the actors load, the preprocessing and the texts.
    ``max_shards`` stops after writing that many shards (metadata ``complete`` stays false; the same call again
    goes on). The returned metadata adds ``embedded_now``: the images embedded by this call.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray Data ({exc}): pip install 'clipscope[ray]' "
                         "(or 'ray[data]>=2.40').") from None

    from models.embed import DEFAULT_CLASS_TEMPLATE, finish_output, scan_source, source_metadata

    template = template or DEFAULT_CLASS_TEMPLATE
    shard_size = shard_size or DEFAULT_SHARD_SIZE
    scanned = scan_source(source, captions)
    output = OutputFolder(out_dir, source_metadata(model, scanned, source, template, "ray"))
    finished = output.done
    todo = [item for item in scanned.items if item.name not in finished]
    total, embedded_now, written, shards = len(scanned.items), 0, 0, []
    if on_progress is not None:
        on_progress(total - len(todo), total)
    if todo:
        connect(address)
        actors, gpus = pool_size(workers, gpus_per_worker)
        shards = [todo[start:start + shard_size] for start in range(0, len(todo), shard_size)]
        rows = row_dicts(todo, shard_size)
        context = ray.data.DataContext.get_current()
        bars, context.enable_progress_bars = context.enable_progress_bars, False   # one bar: the caller's
        env = op_runtime_env()
        # from_items builds the blocks here (about one batch each, so the decoding spreads over tasks); from_arrow
        # would start one Ray task per block just to read its metadata
        dataset = (ray.data.from_items(rows, override_num_blocks=-(-len(rows) // batch_size))
                   .map_batches(decode_rows, fn_kwargs={"preprocess": model.preprocess}, batch_size=None,
                                batch_format="numpy", num_cpus=DECODE_CPUS, runtime_env=env)
                   .map_batches(ImageEmbedder, fn_constructor_kwargs={"model_id": model.model_id,
                                                                      "device": "cuda" if gpus else "cpu",
                                                                      "dtype": dtype},
                                batch_size=batch_size, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, num_gpus=gpus,
                                runtime_env=env))
        pending: dict[int, list[dict]] = {}
        arrived: dict[int, int] = {}
        seen = 0
        try:   # a break leaves the loop's iterator, whose finally shuts the pipeline (its actors, tasks) down
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                seen += len(batch["index"])
                for shard in np.unique(batch["shard"]).tolist():   # Ray may bundle two shards' rows in one batch
                    in_shard = batch["shard"] == shard
                    pending.setdefault(shard, []).append({key: value[in_shard] for key, value in batch.items()})
                    arrived[shard] = arrived.get(shard, 0) + int(in_shard.sum())
                    if arrived[shard] == len(shards[shard]):
                        embedded_now += _write_shard(output, todo, pending.pop(shard))
                        written += 1
                if on_progress is not None:
                    on_progress(total - len(todo) + seen, total)
                if max_shards is not None and written >= max_shards:
                    break
        finally:
            context.enable_progress_bars = bars
    if written < len(shards):   # stopped by max_shards: the output stays incomplete
        return {**output.metadata, "embedded_now": embedded_now}
    return {**finish_output(model, output, scanned, template, text_cache), "embedded_now": embedded_now}


def _write_shard(output: OutputFolder, todo: Sequence[ImageItem], batches: list[dict]) -> int:
    """One shard's rows (in the run's order) as one part; returns how many were embedded."""
    index = np.concatenate([b["index"] for b in batches])
    order = np.argsort(index, kind="stable")
    index = index[order]
    sha256 = np.concatenate([b["sha256"] for b in batches])[order]
    reasons = np.concatenate([b["reason"] for b in batches])[order]
    vectors = np.concatenate([b["embedding"] for b in batches])[order]
    good = np.asarray([reason == "" for reason in reasons], dtype=bool)
    items = [todo[i] for i in index]
    kept = [item for item, ok in zip(items, good, strict=True) if ok]
    errors = [(item.name, str(reason)) for item, reason, ok in zip(items, reasons, good, strict=True) if not ok]
    output.write_part([item.name for item in kept], [item.label for item in kept], [item.caption for item in kept],
                      [str(s) for s in sha256[good]], vectors[good], errors)
    return len(kept)
