"""What ``models.embed`` reads: a folder of images, a Parquet or CSV table with a ``path`` column, or WebDataset
``.tar`` shards, each turned into the same list of :class:`ImageItem` (name, label, caption, where the bytes are).

Both engines (the single process and Ray) read every source kind through :func:`scan_source`, so the same source
gives the same rows whichever engine embeds it. Nothing is decoded here: a bad file is found (and recorded, never
fatal) when it is decoded.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from models.images import ImageInputError, open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTIONS_FILE = "captions.csv"
TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class TarMember:
    """One file inside a tar shard, read by its byte offset (no need to walk the archive again)."""

    shard: str
    offset: int
    size: int

    def read(self) -> bytes:
        """The member's bytes; ImageInputError when the shard ends before them (a truncated shard)."""
        with open(self.shard, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise ImageInputError(f"{Path(self.shard).name} is truncated: {len(data)} of {self.size} bytes left.")
        return data


@dataclass
class ImageItem:
    """One image to embed: a file, a tar member or an in-memory image, with its label and caption when known."""

    source: str | Path | TarMember | Image.Image | None
    label: str | None = None
    caption: str | None = None
    name: str = ""   # the row's path: relative to its folder or table, or the member's name in its shard

    def open(self) -> Image.Image:
        """The image, decoded safely (size caps, EXIF orientation, first frame; models.images.open_image)."""
        if isinstance(self.source, Image.Image):
            return self.source
        if self.source is None:
            raise ValueError(f"Image {self.name!r} has no source to open.")
        if isinstance(self.source, TarMember):
            return decode_bytes(self.source.read(), self.name)
        return open_image(self.source)


def decode_bytes(data: bytes, name: str) -> Image.Image:
    """An image from its file's bytes (open_image), its errors naming ``name`` rather than "the upload"."""
    try:
        return open_image(data)
    except ImageInputError as exc:
        raise ImageInputError(str(exc).replace("the upload", name)) from None


def failure_reason(exc: BaseException) -> str:
    """What errors.parquet says about a file that could not be read: our own message, or the error's kind and text."""
    if isinstance(exc, ImageInputError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Source:
    """A scanned source: its items (sorted by name), what it was, and the samples found broken while scanning."""

    items: list[ImageItem]
    kind: str                      # "folder", "table" or "webdataset"
    root: Path                     # where relative paths resolve (a folder's root, a table's or a shard's folder)
    errors: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)


# ---------------------------------------------------------------------------------------------------- folders

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
        label = row.get("label") or _folder_label(relative)
        items.append(ImageItem(path, label=label, caption=row.get("caption") or None, name=relative))
    if not items:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return items


def _folder_label(relative: str) -> str | None:
    """The label of a relative path: its first folder's name, None at the top level."""
    return relative.split("/")[0] if "/" in relative else None


# ---------------------------------------------------------------------------------------------------- tables

def scan_table(path: str | Path) -> list[ImageItem]:
    """The rows of a Parquet or CSV file with a ``path`` column (``caption`` and ``label`` optional), in file order.

    Relative paths resolve against the table's folder; a missing file is found when it is decoded (and recorded);
    a path listed twice is embedded once (its first row).
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table_path = Path(path).expanduser()
    if not table_path.is_file():
        raise ValueError(f"{table_path} is not a file.")
    try:
        if table_path.suffix.lower() == ".parquet":
            table = pq.read_table(table_path)
        else:   # every column read as text: a path or label like "007" stays as written
            table = pacsv.read_csv(table_path, convert_options=pacsv.ConvertOptions(
                column_types={name: "string" for name in ("path", "caption", "label")}))
    except Exception as exc:   # pyarrow raises its own error kinds for a malformed file
        raise ValueError(f"{table_path} cannot be read as a {table_path.suffix[1:]} table: {exc}") from None
    if "path" not in table.column_names:
        raise ValueError(f"{table_path} has no 'path' column (columns: {', '.join(table.column_names)}).")
    root = table_path.parent
    column = {name: table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
              for name in ("path", "caption", "label")}
    items: dict[str, ImageItem] = {}
    for path_text, caption, label in zip(column["path"], column["caption"], column["label"], strict=True):
        if not path_text:
            continue
        name = PurePosixPath(str(path_text).replace("\\", "/")).as_posix()
        items.setdefault(name, ImageItem(root / name, label=_text(label), caption=_text(caption), name=name))
    if not items:
        raise ValueError(f"{table_path} lists no images.")
    return list(items.values())


def _text(value) -> str | None:
    return None if value is None or str(value) == "" else str(value)


# ---------------------------------------------------------------------------------------------------- WebDataset

def shard_paths(source: str | Path) -> list[Path]:
    """The ``.tar`` shards of a source: one file, every ``*.tar`` in a folder, or a glob pattern (sorted)."""
    text = str(Path(source).expanduser()) if not glob.has_magic(str(source)) else str(source)
    if glob.has_magic(text):
        return sorted(Path(p) for p in glob.glob(text) if p.endswith(".tar"))
    path = Path(text)
    if path.is_dir():
        return sorted(path.glob("*.tar"))
    return [path] if path.is_file() and path.suffix == ".tar" else []


def _split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a WebDataset member: the key ends at the first dot of the file's base name."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def scan_webdataset(source: str | Path) -> tuple[list[ImageItem], list[tuple[str, str]]]:
    """Samples of WebDataset shards read with the stdlib ``tarfile``: members grouped by key, one image each
    (png, jpg, ... as the key's extension), caption from ``.txt`` or ``.json`` (``caption``/``text``), label from
    ``.cls`` or ``.json`` (``label``) or else the key's first folder.

    Returns (items, errors): a sample without an image, an unreadable ``.json`` or a broken shard is an error
    (path, reason), and the rest is kept.
    """
    shards = shard_paths(source)
    if not shards:
        raise ValueError(f"{source} holds no WebDataset shards (.tar files).")
    items: list[ImageItem] = []
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    for shard in shards:
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        texts: dict[tuple[str, str], bytes] = {}
        try:
            with tarfile.open(shard, "r:") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    key, extension = _split_member(member.name)
                    samples.setdefault(key, {})[extension] = member
                    if extension in ("txt", "json", "cls"):
                        texts[key, extension] = archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:   # keep the samples read before the damage
            errors.append((shard.name, f"broken shard after {len(samples)} samples: {type(exc).__name__}: {exc}"))
        for key, members in samples.items():
            image_ext = next((e for e in members if f".{e.rsplit('.', 1)[-1]}" in IMAGE_SUFFIXES), None)
            if image_ext is None:
                errors.append((f"{shard.name}/{key}", "sample holds no image (" + ", ".join(members) + ")"))
                continue
            member = members[image_ext]
            name = member.name
            if name in seen:
                errors.append((f"{shard.name}/{name}", "duplicate key: the same member is in an earlier shard"))
                continue
            try:
                info = json.loads(texts[key, "json"]) if (key, "json") in texts else {}
                if not isinstance(info, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                errors.append((name, f"unreadable {key}.json: {exc}"))
                continue
            caption = _decoded(texts.get((key, "txt"))) or _text(info.get("caption") or info.get("text"))
            label = _text(info.get("label")) or _decoded(texts.get((key, "cls"))) or _folder_label(key)
            seen.add(name)
            items.append(ImageItem(TarMember(str(shard), member.offset_data, member.size), label=label,
                                   caption=caption, name=name))
    if not items and not errors:
        raise ValueError(f"{source} holds no images in its shards.")
    return sorted(items, key=lambda item: item.name), errors


def _decoded(data: bytes | None) -> str | None:
    return _text(data.decode("utf-8", errors="replace").strip()) if data is not None else None


def write_webdataset(items: list[ImageItem], path: str | Path) -> Path:
    """One tar shard of ``items``: ``KEY.EXT`` image bytes, ``KEY.txt`` caption and ``KEY.json`` label (KEY = the
    item's name without its extension), the layout :func:`scan_webdataset` reads. For tests and conversions."""
    path = Path(path)
    with tarfile.open(path, "w") as archive:
        for item in items:
            key, extension = _split_member(item.name)
            data = item.source.read() if isinstance(item.source, TarMember) else Path(item.source).read_bytes()
            files = {f"{key}.{extension}": data}
            if item.caption:
                files[f"{key}.txt"] = item.caption.encode("utf-8")
            if item.label:
                files[f"{key}.json"] = json.dumps({"label": item.label}).encode("utf-8")
            for name, payload in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return path


# ---------------------------------------------------------------------------------------------------- any source

def source_kind(source: str | Path) -> str:
    """"table" (a .parquet / .csv file), "webdataset" (a .tar, a folder of them, a glob) or "folder"."""
    text = str(source)
    if glob.has_magic(text) or text.endswith(".tar"):
        return "webdataset"
    path = Path(text).expanduser()
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "table"
    if path.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")) \
            and any(path.glob("*.tar")):
        return "webdataset"
    return "folder"


def scan_source(source: str | Path, captions: str | Path | None = None) -> Source:
    """Any source as a :class:`Source` (items sorted by name). ``captions`` applies to a folder only."""
    kind = source_kind(source)
    if kind == "table":
        path = Path(source).expanduser().resolve()
        return Source(sorted(scan_table(path), key=lambda item: item.name), kind, path.parent)
    if kind == "webdataset":
        items, errors = scan_webdataset(source)
        shards = shard_paths(source)
        return Source(items, kind, shards[0].resolve().parent, errors)
    root = Path(source).expanduser().resolve()
    return Source(scan_folder(root, captions), kind, root)
