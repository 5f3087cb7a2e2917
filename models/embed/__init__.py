"""Batch embedding of images and texts with a CLIP model: background decoding, an on-disk cache, Parquet output,
in this process or on a Ray cluster.

Images are decoded and preprocessed by a pool of background threads while the model runs on the previous batch
(batched on the GPU when there is one), so decoding does not starve the model. Every embedding is cached on disk
keyed by the model id and the file's contents (or the text), so looking at the same data again runs no model.

Command line, resumable after an interruption (finished parts are kept, the rest is embedded on the next run):

    python -m models.embed SOURCE --model bundled:mini-clip --out DIR [--engine ray [--address auto|ray://H:P]
                           [--workers N] [--gpus-per-worker G] [--shard-size S] [--max-shards K]] [--batch-size B]

SOURCE is a folder of images (in subfolders named by label, optional; an optional ``captions.csv`` with columns
``path`` relative to FOLDER and ``caption``), a Parquet or CSV file with a ``path`` column (optional ``caption`` and
``label``; relative paths from the file's folder) or WebDataset ``.tar`` shards (a file, a folder of them or a glob;
see :mod:`models.embed.sources`). DIR receives ``metadata.json``, ``images/part-*.parquet`` (path, label, caption,
sha256, embedding), ``errors.parquet`` (path, reason: the files that could not be read, never fatal) and
``texts.parquet`` (text, kind, label, embedding); the app's Embedding space tab opens it with
:func:`load_embedding_output`. Every Parquet file also carries the run's metadata (model id, source, template,
logit scale) in its schema under the key ``clipscope`` (:mod:`models.embed.output`). ``--engine ray`` writes the
same folder from a Ray Data pipeline (:mod:`models.embed.ray_engine`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.embed.output import OUTPUT_FORMAT, OutputFolder, done_paths, embedding_column, read_vectors
from models.embed.sources import (
    CAPTIONS_FILE,
    IMAGE_SUFFIXES,
    ImageItem,
    Source,
    TarMember,
    failure_reason,
    read_captions,
    scan_folder,
    scan_source,
    scan_table,
    scan_webdataset,
    write_webdataset,
)
from models.memory import run_with_backoff

__all__ = [
    "CAPTIONS_FILE", "DEFAULT_CLASS_TEMPLATE", "ENGINES", "IMAGE_SUFFIXES", "OUTPUT_FORMAT", "EmbeddingCache",
    "EmbeddingSet", "ImageItem", "OutputFolder", "Source", "TarMember", "content_key", "decoded_batches",
    "default_workers", "done_paths", "embed_folder_to_parquet", "embed_images", "embed_set", "embed_source_to_parquet",
    "embed_texts", "embedding_column", "embedding_table", "fill_template", "load_embedding_output", "main",
    "read_captions", "scan_folder", "scan_source", "scan_table", "scan_webdataset", "text_entries", "write_webdataset",
]

DEFAULT_CLASS_TEMPLATE = "a photo of a {}."
ENGINES = ("process", "ray")

Progress = Callable[[int, int], None]  # (done, total)
ErrorSink = Callable[[int, str], None]  # (position, reason) of an image that could not be read


# ---------------------------------------------------------------------------------------------------- cache keys

def content_key(item: ImageItem) -> str:
    """sha256 of the file's (or tar member's) bytes, or of an in-memory image's mode, size and pixels."""
    digest = hashlib.sha256()
    if isinstance(item.source, Image.Image):
        image = item.source
        digest.update(f"{image.mode}:{image.size}:".encode())
        digest.update(image.tobytes())
    elif isinstance(item.source, TarMember):
        digest.update(item.source.read())
    else:
        with open(item.source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def model_key(model) -> str:
    """Directory name of a model's cache: readable slug + hash of (model id, dtype)."""
    ident = f"{model.model_id}|{str(model.dtype).replace('torch.', '')}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.model_id)[-40:]
    return f"{slug}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def default_cache_root() -> Path:
    """``$CLIPSCOPE_CACHE_DIR`` or ``~/.cache/clipscope``; embeddings live under ``embeddings/``."""
    return Path(os.environ.get("CLIPSCOPE_CACHE_DIR", Path.home() / ".cache" / "clipscope")) / "embeddings"


class EmbeddingCache:
    """On-disk embeddings of one model: ``ROOT/<model key>/shard-*.npz`` holding keys and float32 vectors.

    Shards are written whole (temporary file, then rename), so an interrupted run never leaves a broken one;
    lookups read the shards once and keep an in-memory index.
    """

    def __init__(self, model, root: str | Path | None = None):
        self.dir = Path(root or default_cache_root()) / model_key(model)
        self._index: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, np.ndarray]:
        if self._index is None:
            index: dict[str, np.ndarray] = {}
            for shard in sorted(self.dir.glob("shard-*.npz")):
                try:
                    with np.load(shard) as data:
                        index.update(zip(data["keys"].tolist(), data["vectors"], strict=True))
                except (OSError, ValueError, KeyError):  # an unreadable shard is ignored; its entries are redone
                    continue
            self._index = index
        return self._index

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``."""
        with self._lock:
            index = self._load()
            return {k: index[k] for k in keys if k in index}

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors (one shard per call)."""
        if not len(keys):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            index = self._load()
            self.dir.mkdir(parents=True, exist_ok=True)
            shard = self.dir / f"shard-{uuid.uuid4().hex}.npz"
            temporary = shard.with_suffix(".tmp.npz")
            np.savez(temporary, keys=np.asarray(list(keys)), vectors=vectors)
            os.replace(temporary, shard)
            index.update(zip(keys, vectors, strict=True))

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())


# ---------------------------------------------------------------------------------------------------- embedding

def _decode(items: Sequence[ImageItem], preprocess, pin: bool) -> tuple[list[int], torch.Tensor | None,
                                                                          list[tuple[int, Exception]]]:
    """One batch decoded, resized and cropped (uint8, normalised later where the model runs), as (offsets of the
    images kept, their pixels or None, (offset, exception) of each image that could not be read)."""
    kept, arrays, failed = [], [], []
    for offset, item in enumerate(items):
        try:   # preprocess.uint8_batch, one image at a time so that one bad file spoils only itself
            arrays.append(np.asarray(preprocess.geometry(item.open())))
            kept.append(offset)
        except Exception as exc:   # any failure to read one file (not an image, truncated, unreadable, too big)
            failed.append((offset, exc))
    if not arrays:
        return kept, None, failed
    pixels = torch.from_numpy(np.stack(arrays))
    return kept, (pixels.pin_memory() if pin else pixels), failed


def decoded_batches(items: Sequence[ImageItem], preprocess, batch_size: int, workers: int,
                    pin: bool = False, on_error: ErrorSink | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(positions, uint8 pixels) per batch (``preprocess.uint8_batch``), decoded by ``workers`` background threads
    a few batches ahead.

    An image that cannot be read raises its error, or with ``on_error`` is reported as ``on_error(position,
    reason)`` and left out of its batch (a batch of only bad images yields nothing).
    """
    def chunk(start: int) -> list[ImageItem]:
        return [items[i] for i in range(start, min(start + batch_size, len(items)))]

    def finished(start: int, result) -> Iterator[tuple[list[int], torch.Tensor]]:
        kept, pixels, failed = result
        for offset, exc in failed:
            if on_error is None:
                raise exc
            on_error(start + offset, failure_reason(exc))
        if pixels is not None:
            yield [start + offset for offset in kept], pixels

    starts = range(0, len(items), batch_size)
    if workers <= 0:
        for start in starts:
            yield from finished(start, _decode(chunk(start), preprocess, pin))
        return
    ahead = max(2, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipscope-decode") as pool:
        pending: deque = deque()
        queue = iter(starts)
        for start in queue:
            pending.append((start, pool.submit(_decode, chunk(start), preprocess, pin)))
            if len(pending) >= ahead:
                break
        while pending:
            start, future = pending.popleft()
            upcoming = next(queue, None)
            if upcoming is not None:
                pending.append((upcoming, pool.submit(_decode, chunk(upcoming), preprocess, pin)))
            yield from finished(start, future.result())


def default_workers(device: torch.device | str | None = None) -> int:
    """Background decoding threads for a model on ``device``.

    On a GPU (or MPS) decoding overlaps the forward: up to 4 threads, one core left for the main thread. On the CPU
    the forward already runs on ``torch.get_num_threads()`` cores, so decoding threads only pay off on cores left
    over; with none left they compete with the forward for the cores and the GIL (measured on 2 cores: 0.89 of
    the bare forward with one thread against 0.90 to 0.94 inline), and the images are decoded inline (0).
    """
    cores = os.cpu_count() or 2
    if device is None or torch.device(device).type != "cpu":
        return max(1, min(4, cores - 1))
    return max(0, min(4, cores - torch.get_num_threads()))


@torch.no_grad()
def embed_images(model, items: Sequence[ImageItem], *, batch_size: int = 64, workers: int | None = None,
                 cache: EmbeddingCache | None = None, on_progress: Progress | None = None,
                 on_batch: Callable[[list[int], np.ndarray], None] | None = None,
                 on_error: ErrorSink | None = None) -> np.ndarray:
    """Raw (un-normalised) image embeddings (len(items), dim) float32, in the order of ``items``.

    Cached images are not decoded and not run through the model. ``on_batch(positions, vectors)`` sees each
    batch as soon as it is embedded (cached ones in one call first); ``on_progress(done, total)`` after each batch
    (bad images count as done). An image that cannot be read raises its error (ImageInputError for a file that is
    not an image), or with ``on_error`` is reported as ``on_error(position, reason)``, its row left NaN, and the
    rest embedded (when none can be read, the array has no columns).
    """
    items = list(items)
    total = len(items)
    if total == 0:
        raise ValueError("No images to embed.")
    workers = default_workers(model.device) if workers is None else workers
    bad: set[int] = set()

    def report(position: int, reason: str) -> None:
        bad.add(position)
        on_error(position, reason)

    sink = report if on_error is not None else None
    keys = _content_keys(items, workers, sink) if cache is not None else []
    found = cache.lookup([k for k in keys if k is not None]) if cache is not None else {}
    vectors: list[np.ndarray | None] = [found.get(k) for k in keys] if cache is not None else [None] * total
    done = [i for i, v in enumerate(vectors) if v is not None]
    if done and on_batch is not None:
        on_batch(done, np.stack([vectors[i] for i in done]))
    missing = [i for i, v in enumerate(vectors) if v is None and i not in bad]
    if on_progress is not None:
        on_progress(total - len(missing), total)
    pin = model.device.type == "cuda"

    def report_missing(position: int, reason: str) -> None:
        report(missing[position], reason)

    finished, bad_before = total - len(missing), len(bad)   # cached and bad so far; batches and bad files add on

    for positions, pixels in decoded_batches([items[i] for i in missing], model.preprocess, batch_size, workers, pin,
                                             on_error=report_missing if sink else None):
        pixels = model.preprocess.normalize_batch(pixels.to(model.device, non_blocking=pin))
        batch = run_with_backoff(model.encode_image, pixels).float().cpu().numpy()
        indices = [missing[p] for p in positions]
        for index, vector in zip(indices, batch, strict=True):
            vectors[index] = vector
        if cache is not None:
            cache.store([keys[i] for i in indices], batch)
        if on_batch is not None:
            on_batch(indices, batch)
        finished += len(indices)
        if on_progress is not None:
            on_progress(finished + len(bad) - bad_before, total)
    dim = next((len(v) for v in vectors if v is not None), None)
    if dim is None:   # only with on_error: nothing could be read, so the width is unknown
        return np.zeros((total, 0), dtype=np.float32)
    return np.stack([v if v is not None else np.full(dim, np.nan, np.float32) for v in vectors]).astype(np.float32)


def _content_keys(items: Sequence[ImageItem], workers: int, on_error: ErrorSink | None) -> list[str | None]:
    """content_key of each item; a file that cannot be read raises, or with ``on_error`` is reported (key None)."""
    def key(position: int) -> str | Exception:
        try:
            return content_key(items[position])
        except OSError as exc:
            if on_error is None:
                raise
            return exc

    if workers <= 0 or len(items) < 64:
        keys = [key(i) for i in range(len(items))]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            keys = list(pool.map(key, range(len(items)), chunksize=32))
    for position, value in enumerate(keys):
        if isinstance(value, Exception):
            on_error(position, failure_reason(value))
    return [None if isinstance(value, Exception) else value for value in keys]


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256, cache: EmbeddingCache | None = None,
                ) -> np.ndarray:
    """Raw (un-normalised) text embeddings (len(texts), dim) float32; cached texts are not encoded again."""
    texts = list(texts)
    if not texts:
        raise ValueError("No texts to embed.")
    keys = [text_key(t) for t in texts]
    found = cache.lookup(keys) if cache is not None else {}
    missing = [i for i, k in enumerate(keys) if k not in found]
    vectors: dict[int, np.ndarray] = {i: found[k] for i, k in enumerate(keys) if k in found}
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        batch = model.encode_text([texts[i] for i in chunk]).float().cpu().numpy()
        vectors.update(zip(chunk, batch, strict=True))
        if cache is not None:
            cache.store([keys[i] for i in chunk], batch)
    return np.stack([vectors[i] for i in range(len(texts))]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- embedding sets

@dataclass
class EmbeddingSet:
    """Images and texts of one model in its joint space (raw embeddings; normalise before comparing).

    Texts are the images' captions (each once) followed by one prompt per class label; ``image_caption[i]`` is the
    index in ``texts`` of image i's caption (-1 if it has none) and ``class_text[label]`` that of the label's prompt.
    """

    model_id: str
    logit_scale: float
    images: list[ImageItem]
    image_embeddings: np.ndarray
    texts: list[str]
    text_kinds: list[str]               # "caption" or "class"
    text_labels: list[str | None]
    text_embeddings: np.ndarray
    image_caption: np.ndarray
    class_text: dict[str, int] = field(default_factory=dict)
    template: str = DEFAULT_CLASS_TEMPLATE

    @property
    def labels(self) -> list[str | None]:
        return [item.label for item in self.images]

    @property
    def class_names(self) -> list[str]:
        return list(self.class_text)


def text_entries(items: Sequence[ImageItem], template: str = DEFAULT_CLASS_TEMPLATE, extra_labels: Sequence[str] = ()
                 ) -> tuple[list[str], list[str], list[str | None], np.ndarray, dict[str, int]]:
    """(texts, kinds, labels, image_caption, class_text): unique captions, then one prompt per label (the images'
    labels, then ``extra_labels``)."""
    from_text: dict[str, int] = {}
    texts, kinds, labels = [], [], []
    image_caption = np.full(len(items), -1, dtype=np.int64)
    for i, item in enumerate(items):
        if item.caption:
            if item.caption not in from_text:
                from_text[item.caption] = len(texts)
                texts.append(item.caption)
                kinds.append("caption")
                labels.append(item.label)
            image_caption[i] = from_text[item.caption]
    class_text: dict[str, int] = {}
    for label in dict.fromkeys([item.label for item in items if item.label] + [x for x in extra_labels if x]):
        prompt = fill_template(template, label)
        class_text[label] = len(texts)
        texts.append(prompt)
        kinds.append("class")
        labels.append(label)
    return texts, kinds, labels, image_caption, class_text


def fill_template(template: str, label: str) -> str:
    """The prompt for ``label``: "{}" replaced, "a {}" becoming "an {}" before a vowel ("an orange circle")."""
    if label[:1].lower() in "aeiou":
        template = re.sub(r"\b([aA]) \{\}", r"\1n {}", template)
    return template.replace("{}", label)


def embed_set(model, items: Sequence[ImageItem], *, template: str = DEFAULT_CLASS_TEMPLATE,
              extra_labels: Sequence[str] = (), cache: EmbeddingCache | None = None, batch_size: int = 64,
              workers: int | None = None, on_progress: Progress | None = None) -> EmbeddingSet:
    """Embed images, their captions and one prompt per label (theirs and ``extra_labels``) into an
    :class:`EmbeddingSet`."""
    if not getattr(model, "has_text", False):
        raise ValueError(f"{model.model_id} is not CLIP (it has no text tower): the joint space needs one.")
    items = list(items)
    images = embed_images(model, items, batch_size=batch_size, workers=workers, cache=cache, on_progress=on_progress)
    texts, kinds, labels, image_caption, class_text = text_entries(items, template, extra_labels)
    if texts:
        text_vectors = embed_texts(model, texts, cache=cache)
    else:
        text_vectors = np.zeros((0, images.shape[1]), dtype=np.float32)
    return EmbeddingSet(model.model_id, model.logit_scale, items, images, texts, kinds, labels, text_vectors,
                        image_caption, class_text, template)


def embedding_table(es: EmbeddingSet, rows: Sequence[int] | None = None):
    """Every image and text of a set as one pandas table: modality, name (file or text), label, caption or prompt
    kind, and the raw embedding, one column per dimension (e0, e1, ...) so that CSV and Parquet hold the same.
    ``rows`` (joint indices: images first, then texts) keeps only those points, with a ``point`` column naming
    each one's index."""
    import pandas as pd

    dims = es.image_embeddings.shape[1] if len(es.image_embeddings) else es.text_embeddings.shape[1]
    n_images = len(es.images)
    chosen = np.arange(n_images + len(es.texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    image_rows, text_rows = chosen[chosen < n_images], chosen[chosen >= n_images] - n_images
    records = [{"modality": "image", "name": es.images[i].name, "label": es.images[i].label,
                "text": es.texts[es.image_caption[i]] if es.image_caption[i] >= 0 else None} for i in image_rows]
    records += [{"modality": "text", "name": es.texts[j], "label": es.text_labels[j], "text": es.text_kinds[j]}
                for j in text_rows]
    vectors = np.concatenate([es.image_embeddings.reshape(-1, dims)[image_rows],
                              es.text_embeddings.reshape(-1, dims)[text_rows]])
    table = pd.DataFrame(records, columns=["modality", "name", "label", "text"])
    if rows is not None:
        table.insert(0, "point", np.concatenate([image_rows, text_rows + n_images]))
    table.attrs["model"] = es.model_id
    return pd.concat([table, pd.DataFrame(vectors, columns=[f"e{i}" for i in range(dims)])], axis=1)


# ---------------------------------------------------------------------------------------------------- Parquet output

def source_metadata(model, source: Source, source_text: str | Path, template: str, engine: str) -> dict:
    """The run's metadata, written to metadata.json and into every Parquet file's schema."""
    return {"model": model.model_id, "folder": str(source.root), "source": str(source_text),
            "source_kind": source.kind, "template": template, "logit_scale": model.logit_scale,
            "images": len(source.items), "engine": engine}


def finish_output(model, output: OutputFolder, source: Source, template: str,
                  cache: EmbeddingCache | None = None) -> dict:
    """The texts of the embedded images (captions, one prompt per label) into texts.parquet, errors.parquet, and
    the metadata marked complete; returns the metadata."""
    embedded = [item for item in source.items if item.name in output.embedded]
    texts, kinds, labels, _, _ = text_entries(embedded, template)
    vectors = embed_texts(model, texts, cache=cache) if texts else None
    return output.finish(source.errors, texts, kinds, labels, vectors)


def embed_source_to_parquet(model, source: str | Path, out_dir: str | Path, *, batch_size: int = 64,
                            workers: int | None = None, cache: EmbeddingCache | None = None,
                            template: str = DEFAULT_CLASS_TEMPLATE, captions: str | Path | None = None,
                            on_progress: Progress | None = None) -> dict:
    """Embed, in this process, every image of ``source`` (a folder, a Parquet / CSV table, WebDataset shards) not yet
    in ``out_dir`` (one Parquet part per batch), then the texts.

    Returns the metadata written to ``out_dir/metadata.json``. Resumes where an interrupted run stopped; refuses
    an ``out_dir`` that holds another model's embeddings. A file that cannot be read is recorded in
    ``errors.parquet`` (path, reason) and the rest is embedded.
    """
    scanned = scan_source(source, captions)
    output = OutputFolder(out_dir, source_metadata(model, scanned, source, template, "process"))
    finished = output.done
    todo = [item for item in scanned.items if item.name not in finished]
    errors: list[tuple[str, str]] = []

    def record_error(position: int, reason: str) -> None:
        errors.append((todo[position].name, reason))

    def write_part(positions: list[int], vectors: np.ndarray) -> None:
        batch = [todo[p] for p in positions]
        output.write_part([item.name for item in batch], [item.label for item in batch],
                          [item.caption for item in batch], [content_key(item) for item in batch], vectors, errors)
        errors.clear()

    total = len(scanned.items)
    if todo:
        def progress(done: int, _: int) -> None:
            if on_progress is not None:
                on_progress(len(finished) + done, total)

        embed_images(model, todo, batch_size=batch_size, workers=workers, cache=cache, on_progress=progress,
                     on_batch=write_part, on_error=record_error)
        if errors:   # the bad files after the last good batch
            output.write_part([], [], [], [], None, errors)
    elif on_progress is not None:
        on_progress(total, total)
    return finish_output(model, output, scanned, template, cache)


embed_folder_to_parquet = embed_source_to_parquet   # the name it had when it read folders only


def load_embedding_output(out_dir: str | Path) -> EmbeddingSet:
    """Read what ``python -m models.embed`` wrote (either engine) into an :class:`EmbeddingSet` (images sorted by
    path)."""
    import pyarrow.parquet as pq

    out = Path(out_dir).expanduser()
    meta_path = out / "metadata.json"
    if not meta_path.is_file():
        raise ValueError(f"{out} is not an output of models.embed (no metadata.json).")
    metadata = json.loads(meta_path.read_text())
    parts = sorted((out / "images").glob("part-*.parquet"))
    if not parts:
        raise ValueError(f"{out} holds no embedded images yet.")
    tables = [pq.read_table(part) for part in parts]
    rows = [(path, label, caption, vector)
            for table in tables
            for path, label, caption, vector in zip(table.column("path").to_pylist(), table.column("label").to_pylist(),
                                                    table.column("caption").to_pylist(),
                                                    read_vectors(table.column("embedding")), strict=True)]
    rows.sort(key=lambda row: row[0])
    folder = Path(metadata.get("folder", ""))
    items = [ImageItem(folder / path if (folder / path).is_file() else None, label, caption, path)
             for path, label, caption, _ in rows]
    images = np.stack([row[3] for row in rows]).astype(np.float32)
    template = metadata.get("template", DEFAULT_CLASS_TEMPLATE)
    texts, kinds, labels, image_caption, class_text = text_entries(items, template)
    if (out / "texts.parquet").is_file():
        table = pq.read_table(out / "texts.parquet")
        stored = dict(zip(table.column("text").to_pylist(), read_vectors(table.column("embedding")), strict=True))
    else:
        stored = {}
    missing = [t for t in texts if t not in stored]
    if missing:
        raise ValueError(f"{out} is incomplete ({len(missing)} texts not embedded): run models.embed again to finish.")
    text_vectors = np.stack([stored[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, images.shape[1]),
                                                                                                np.float32)
    return EmbeddingSet(metadata["model"], float(metadata.get("logit_scale", 100.0)), items, images, texts, kinds,
                        labels, text_vectors, image_caption, class_text, template)


# ---------------------------------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m models.embed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a folder of images (subfolder names = labels; optional captions.csv), a "
                        "Parquet or CSV file with a 'path' column (optional 'caption', 'label'), or WebDataset "
                        ".tar shards (a .tar file, a folder of them, or a quoted glob)")
    parser.add_argument("--model", default="bundled:mini-clip", help="CLIP model id (default bundled:mini-clip)")
    parser.add_argument("--out", required=True, help="output folder (created; an interrupted run resumes there)")
    parser.add_argument("--engine", choices=ENGINES, default="process",
                        help="process: this process alone (default, no Ray needed); ray: a Ray Data pipeline, "
                        "decoding in Ray tasks and the model in a pool of actors (pip install 'clipscope[ray]')")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="process engine: decoding threads (default: cores - 1, at most 4); ray engine: model "
                        "actors (default: one per GPU group, or half the cluster's CPUs)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available; with "
                        "--engine ray: where this process embeds the texts, default cpu)")
    parser.add_argument("--address", default=None, help="ray engine: the cluster to join, 'auto' (a cluster "
                        "started with 'ray start') or ray://HOST:PORT (default: a new local Ray)")
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="ray engine: GPUs per model actor (default: 1 when the cluster has GPUs, else 0)")
    parser.add_argument("--shard-size", type=int, default=None,
                        help="ray engine: images per output part, the unit of resuming (default 1024)")
    parser.add_argument("--max-shards", type=int, default=None,
                        help="ray engine: stop after writing this many parts (a time-boxed run; rerun to go on)")
    parser.add_argument("--captions", default=None, help="captions CSV of a folder (default FOLDER/captions.csv)")
    parser.add_argument("--template", default=DEFAULT_CLASS_TEMPLATE, help='class prompt template, with "{}"')
    parser.add_argument("--cache-dir", default=None, help="embedding cache root (default ~/.cache/clipscope; "
                        "with --engine ray for the texts only: resuming comes from the output's finished parts)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    return parser.parse_args(argv)


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, before anything loads (None when nothing is)."""
    if args.batch_size < 1:
        return "--batch-size must be >= 1"
    if args.template.count("{}") != 1:
        return '--template must hold "{}" exactly once'
    if args.engine != "ray":
        given = [flag for flag, value in (("--address", args.address), ("--gpus-per-worker", args.gpus_per_worker),
                                          ("--shard-size", args.shard_size), ("--max-shards", args.max_shards))
                 if value is not None]
        if given:
            return f"{', '.join(given)} only apply with --engine ray"
    for flag, value in (("--shard-size", args.shard_size), ("--max-shards", args.max_shards),
                        ("--workers", args.workers if args.engine == "ray" else None)):
        if value is not None and value < 1:
            return f"{flag} must be >= 1"
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        return "--gpus-per-worker must be >= 0"
    return None


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from models.errors import ClipscopeModelError
    from models.registry import load_model

    args = parse_args(argv)
    problem = _usage_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        device = args.device or ("cpu" if args.engine == "ray" else None)
        model = load_model(args.model, device=device)
        if not model.has_text:
            raise ValueError(f"{args.model} is not CLIP (it has no text tower).")
        cache = None if args.no_cache else EmbeddingCache(model, Path(args.cache_dir) / "embeddings"
                                                          if args.cache_dir else None)
        with tqdm(total=None, unit="img", desc="embedding") as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            if args.engine == "ray":
                from models.embed.ray_engine import embed_source_with_ray

                metadata = embed_source_with_ray(
                    model, args.source, args.out, address=args.address, workers=args.workers,
                    gpus_per_worker=args.gpus_per_worker, batch_size=args.batch_size, shard_size=args.shard_size,
                    max_shards=args.max_shards, template=args.template, captions=args.captions, text_cache=cache,
                    on_progress=progress)
            else:
                metadata = embed_source_to_parquet(model, args.source, args.out, batch_size=args.batch_size,
                                                   workers=args.workers, cache=cache, template=args.template,
                                                   captions=args.captions, on_progress=progress)
    except (ClipscopeModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not metadata["complete"]:
        print(f"stopped after {args.max_shards} part(s) ({metadata['embedded_now']} images embedded now); run the "
              f"same command again to go on -> {args.out}")
        return 0
    errors_file = Path(args.out) / "errors.parquet"
    errors = f", {metadata['errors']} unreadable (see {errors_file})" if metadata["errors"] else ""
    print(f"{metadata['images']} images of {args.source} embedded with {args.model}{errors} -> {args.out}")
    return 0
