"""Batch embedding of images and texts with a CLIP model: background decoding, an on-disk cache, Parquet output.

Images are decoded and preprocessed by a pool of background threads while the model runs on the previous batch
(batched on the GPU when there is one), so decoding does not starve the model. Every embedding is cached on disk
keyed by the model id and the file's contents (or the text), so looking at the same data again runs no model.

Command line, resumable after an interruption (finished batches are kept, the rest is embedded on the next run):

    python -m models.embed FOLDER --model bundled:mini-clip --out DIR

FOLDER holds images, in subfolders named by label (optional) and with an optional ``captions.csv`` (columns
``path`` relative to FOLDER, ``caption``). DIR receives ``metadata.json``, ``images/part-*.parquet`` (path, label,
caption, sha256, embedding) and ``texts.parquet`` (text, kind, label, embedding); the app's Embedding space tab opens
it with :func:`load_embedding_output`. Every Parquet file also carries the run's metadata (model id, folder, template,
logit scale) in its schema under the key ``clipscope``.
"""
from __future__ import annotations

import argparse
import csv
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

from models.images import open_image
from models.memory import run_with_backoff

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTIONS_FILE = "captions.csv"
DEFAULT_CLASS_TEMPLATE = "a photo of a {}."
OUTPUT_FORMAT = 1

Progress = Callable[[int, int], None]  # (done, total)


# ---------------------------------------------------------------------------------------------------- inputs

@dataclass
class ImageItem:
    """One image to embed: a file or an in-memory image, with its label and caption when known."""

    source: str | Path | Image.Image | None
    label: str | None = None
    caption: str | None = None
    name: str = ""   # a short name: the path relative to its folder, or a description

    def open(self) -> Image.Image:
        """The image, decoded safely (size caps, EXIF orientation, first frame; models.images.open_image)."""
        if isinstance(self.source, Image.Image):
            return self.source
        if self.source is None:
            raise ValueError(f"Image {self.name!r} has no source to open.")
        return open_image(self.source)


def read_captions(path: str | Path) -> dict[str, dict[str, str]]:
    """A captions CSV (header with ``path`` and ``caption``; ``label`` optional) as {relative path: row}."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "caption"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a captions file needs a header with the columns 'path' and 'caption'.")
        return {Path(row["path"]).as_posix(): row for row in reader}


def scan_folder(folder: str | Path, captions: str | Path | None = None) -> list[ImageItem]:
    """Every image under ``folder`` (sorted): label = the first subfolder's name, caption from the captions file
    (``captions`` or ``FOLDER/captions.csv`` when present). Raises ValueError for a missing or image-less folder."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder.")
    if captions is None and (root / CAPTIONS_FILE).is_file():
        captions = root / CAPTIONS_FILE
    rows = read_captions(captions) if captions is not None else {}
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        relative = path.relative_to(root).as_posix()
        row = rows.get(relative, {})
        label = row.get("label") or (relative.split("/")[0] if "/" in relative else None)
        items.append(ImageItem(path, label=label, caption=row.get("caption") or None, name=relative))
    if not items:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return items


# ---------------------------------------------------------------------------------------------------- cache keys

def content_key(item: ImageItem) -> str:
    """sha256 of the file's bytes, or of an in-memory image's mode, size and pixels."""
    digest = hashlib.sha256()
    if isinstance(item.source, Image.Image):
        image = item.source
        digest.update(f"{image.mode}:{image.size}:".encode())
        digest.update(image.tobytes())
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

def _decode(items: Sequence[ImageItem], preprocess, pin: bool) -> torch.Tensor:
    """One batch decoded, resized and cropped: uint8, normalised later where the model runs."""
    pixels = preprocess.uint8_batch([item.open() for item in items])
    return pixels.pin_memory() if pin else pixels


def decoded_batches(items: Sequence[ImageItem], preprocess, batch_size: int, workers: int,
                    pin: bool = False) -> Iterator[tuple[range, torch.Tensor]]:
    """(positions, uint8 pixels) per batch (``preprocess.uint8_batch``), decoded by ``workers`` background threads
    a few batches ahead."""
    starts = range(0, len(items), batch_size)
    if workers <= 0:
        for start in starts:
            positions = range(start, min(start + batch_size, len(items)))
            yield positions, _decode([items[i] for i in positions], preprocess, pin)
        return
    ahead = max(2, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipscope-decode") as pool:
        pending: deque = deque()
        queue = iter(starts)
        for start in queue:
            positions = range(start, min(start + batch_size, len(items)))
            pending.append((positions, pool.submit(_decode, [items[i] for i in positions], preprocess, pin)))
            if len(pending) >= ahead:
                break
        while pending:
            positions, future = pending.popleft()
            start = next(queue, None)
            if start is not None:
                upcoming = range(start, min(start + batch_size, len(items)))
                pending.append((upcoming, pool.submit(_decode, [items[i] for i in upcoming], preprocess, pin)))
            yield positions, future.result()


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
                 on_batch: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
    """Raw (un-normalised) image embeddings (len(items), dim) float32, in the order of ``items``.

    Cached images are not decoded and not run through the model. ``on_batch(positions, vectors)`` sees each
    batch as soon as it is embedded (cached ones in one call first); ``on_progress(done, total)`` after each batch.
    """
    items = list(items)
    total = len(items)
    if total == 0:
        raise ValueError("No images to embed.")
    workers = default_workers(model.device) if workers is None else workers
    keys = _content_keys(items, workers) if cache is not None else []
    found = cache.lookup(keys) if cache is not None else {}
    vectors: list[np.ndarray | None] = [found.get(k) for k in keys] if cache is not None else [None] * total
    done = [i for i, v in enumerate(vectors) if v is not None]
    if done and on_batch is not None:
        on_batch(done, np.stack([vectors[i] for i in done]))
    if on_progress is not None:
        on_progress(len(done), total)
    missing = [i for i, v in enumerate(vectors) if v is None]
    pin = model.device.type == "cuda"
    finished = len(done)
    for positions, pixels in decoded_batches([items[i] for i in missing], model.preprocess, batch_size, workers, pin):
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
            on_progress(finished, total)
    return np.stack(vectors).astype(np.float32)


def _content_keys(items: Sequence[ImageItem], workers: int) -> list[str]:
    if workers <= 0 or len(items) < 64:
        return [content_key(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(content_key, items, chunksize=32))


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


def embedding_table(es: EmbeddingSet):
    """Every image and text of a set as one pandas table: modality, name (file or text), label, caption or prompt
    kind, and the raw embedding, one column per dimension (e0, e1, ...) so that CSV and Parquet hold the same."""
    import pandas as pd

    dims = es.image_embeddings.shape[1] if len(es.image_embeddings) else es.text_embeddings.shape[1]
    rows = [{"modality": "image", "name": item.name, "label": item.label,
             "text": es.texts[es.image_caption[i]] if es.image_caption[i] >= 0 else None}
            for i, item in enumerate(es.images)]
    rows += [{"modality": "text", "name": text, "label": label, "text": kind}
             for text, kind, label in zip(es.texts, es.text_kinds, es.text_labels, strict=True)]
    vectors = np.concatenate([es.image_embeddings.reshape(-1, dims), es.text_embeddings.reshape(-1, dims)])
    table = pd.DataFrame(rows)
    table.attrs["model"] = es.model_id
    return pd.concat([table, pd.DataFrame(vectors, columns=[f"e{i}" for i in range(dims)])], axis=1)


# ---------------------------------------------------------------------------------------------------- Parquet output

def _embedding_column(vectors: np.ndarray):
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _write_parquet(table, path: Path, metadata: dict) -> None:
    """Write whole or not at all (a temporary file renamed into place), with the run's metadata in the schema."""
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata({"clipscope": json.dumps(metadata)})
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def _read_vectors(column) -> np.ndarray:
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    size = flat.type.list_size
    return np.asarray(flat.flatten(), dtype=np.float32).reshape(-1, size)


def done_paths(out_dir: str | Path) -> set[str]:
    """Paths already embedded in ``out_dir``'s finished parts."""
    import pyarrow.parquet as pq

    parts = sorted((Path(out_dir) / "images").glob("part-*.parquet"))
    return {path for part in parts for path in pq.read_table(part, columns=["path"]).column("path").to_pylist()}


def embed_folder_to_parquet(model, folder: str | Path, out_dir: str | Path, *, batch_size: int = 64,
                            workers: int | None = None, cache: EmbeddingCache | None = None,
                            template: str = DEFAULT_CLASS_TEMPLATE, captions: str | Path | None = None,
                            on_progress: Progress | None = None) -> dict:
    """Embed every image of ``folder`` not yet in ``out_dir`` (one Parquet part per batch), then the texts.

    Returns the metadata written to ``out_dir/metadata.json``. Resumes where an interrupted run stopped; refuses
    an ``out_dir`` that holds another model's embeddings.
    """
    import pyarrow as pa

    folder, out = Path(folder).expanduser().resolve(), Path(out_dir).expanduser()
    items = scan_folder(folder, captions)
    (out / "images").mkdir(parents=True, exist_ok=True)
    meta_path = out / "metadata.json"
    metadata = {"format": OUTPUT_FORMAT, "model": model.model_id, "folder": str(folder), "template": template,
                "logit_scale": model.logit_scale, "images": len(items), "complete": False}
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        if previous.get("model") != model.model_id:
            raise ValueError(f"{out} holds embeddings of {previous.get('model')!r}, not {model.model_id!r}: "
                             "choose another --out.")
    meta_path.write_text(json.dumps(metadata, indent=2))
    for stale in (out / "images").glob("*.tmp"):
        stale.unlink()
    finished = done_paths(out)
    todo = [item for item in items if item.name not in finished]
    numbers = [int(p.stem.split("-")[1]) for p in (out / "images").glob("part-*.parquet")]
    next_part = [max(numbers, default=-1) + 1]

    def write_part(positions: list[int], vectors: np.ndarray) -> None:
        batch = [todo[p] for p in positions]
        table = pa.table({
            "path": [item.name for item in batch],
            "label": pa.array([item.label for item in batch], type=pa.string()),
            "caption": pa.array([item.caption for item in batch], type=pa.string()),
            "sha256": [content_key(item) for item in batch],
            "embedding": _embedding_column(vectors),
        })
        _write_parquet(table, out / "images" / f"part-{next_part[0]:06d}.parquet", metadata)
        next_part[0] += 1

    if todo:
        def progress(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(len(finished) + done, len(items))

        embed_images(model, todo, batch_size=batch_size, workers=workers, cache=cache, on_progress=progress,
                     on_batch=write_part)
    elif on_progress is not None:
        on_progress(len(items), len(items))
    texts, kinds, labels, _, _ = text_entries(items, template)
    if texts:
        vectors = embed_texts(model, texts, cache=cache)
        _write_parquet(pa.table({"text": texts, "kind": kinds, "label": pa.array(labels, type=pa.string()),
                                 "embedding": _embedding_column(vectors)}), out / "texts.parquet", metadata)
    metadata.update(complete=True, texts=len(texts))
    meta_path.write_text(json.dumps(metadata, indent=2))
    return metadata


def load_embedding_output(out_dir: str | Path) -> EmbeddingSet:
    """Read what ``python -m models.embed`` wrote into an :class:`EmbeddingSet` (images sorted by path)."""
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
                                                    _read_vectors(table.column("embedding")), strict=True)]
    rows.sort(key=lambda row: row[0])
    folder = Path(metadata.get("folder", ""))
    items = [ImageItem(folder / path if (folder / path).is_file() else None, label, caption, path)
             for path, label, caption, _ in rows]
    images = np.stack([row[3] for row in rows]).astype(np.float32)
    template = metadata.get("template", DEFAULT_CLASS_TEMPLATE)
    texts, kinds, labels, image_caption, class_text = text_entries(items, template)
    if (out / "texts.parquet").is_file():
        table = pq.read_table(out / "texts.parquet")
        stored = dict(zip(table.column("text").to_pylist(), _read_vectors(table.column("embedding")), strict=True))
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
    parser.add_argument("folder", help="folder of images (subfolder names = labels; optional captions.csv)")
    parser.add_argument("--model", default="bundled:mini-clip", help="CLIP model id (default bundled:mini-clip)")
    parser.add_argument("--out", required=True, help="output folder (created; an interrupted run resumes there)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: cores - 1, at most 4)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    parser.add_argument("--captions", default=None, help="captions CSV (default FOLDER/captions.csv when present)")
    parser.add_argument("--template", default=DEFAULT_CLASS_TEMPLATE, help='class prompt template, with "{}"')
    parser.add_argument("--cache-dir", default=None, help="embedding cache root (default ~/.cache/clipscope)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from models.errors import ClipscopeModelError
    from models.registry import load_model

    args = parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    if args.template.count("{}") != 1:
        print('error: --template must hold "{}" exactly once', file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, device=args.device)
        if not model.has_text:
            raise ValueError(f"{args.model} is not CLIP (it has no text tower).")
        cache = None if args.no_cache else EmbeddingCache(model, Path(args.cache_dir) / "embeddings"
                                                          if args.cache_dir else None)
        with tqdm(total=None, unit="img", desc="embedding") as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            metadata = embed_folder_to_parquet(model, args.folder, args.out, batch_size=args.batch_size,
                                               workers=args.workers, cache=cache, template=args.template,
                                               captions=args.captions, on_progress=progress)
    except (ClipscopeModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{metadata['images']} images of {args.folder} embedded with {args.model} -> {args.out}")
    return 0

