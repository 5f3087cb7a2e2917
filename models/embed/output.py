"""The output folder of ``models.embed``, the same whichever engine writes it.

    DIR/metadata.json              model, source, template, logit scale, counts, complete
    DIR/images/part-NNNNNN.parquet path, label, caption, sha256, embedding (one part per batch or shard)
    DIR/errors/part-NNNNNN.parquet path, reason of the bad files met while writing that part's rows
    DIR/errors.parquet             every bad file (path, reason), written when the run completes
    DIR/texts.parquet              text, kind, label, embedding

Every Parquet file carries the run's metadata in its schema under the key ``clipscope``. A part is written whole or
not at all (a temporary file renamed into place), so a run killed at any moment leaves only finished parts; the
next run skips every path they hold (embedded or recorded as bad) and embeds the rest.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OUTPUT_FORMAT = 1
ERRORS_FILE = "errors.parquet"


def embedding_column(vectors: np.ndarray):
    """(n, dim) float32 vectors as an Arrow fixed-size-list column."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def read_vectors(column) -> np.ndarray:
    """An embedding column back as (n, dim) float32."""
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    size = flat.type.list_size
    return np.asarray(flat.flatten(), dtype=np.float32).reshape(-1, size)


def write_parquet(table, path: Path, metadata: dict) -> None:
    """Write whole or not at all (a temporary file renamed into place), with the run's metadata in the schema."""
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata({"clipscope": json.dumps(metadata)})
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def image_parts(out_dir: str | Path) -> list[Path]:
    return sorted((Path(out_dir) / "images").glob("part-*.parquet"))


def error_parts(out_dir: str | Path) -> list[Path]:
    return sorted((Path(out_dir) / "errors").glob("part-*.parquet"))


def done_paths(out_dir: str | Path) -> set[str]:
    """Paths already embedded in ``out_dir``'s finished parts."""
    import pyarrow.parquet as pq

    return {path for part in image_parts(out_dir)
            for path in pq.read_table(part, columns=["path"]).column("path").to_pylist()}


def read_errors(out_dir: str | Path) -> list[tuple[str, str]]:
    """(path, reason) of every bad file recorded so far (the parts of an unfinished run included), by path."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    files = error_parts(out) or ([out / ERRORS_FILE] if (out / ERRORS_FILE).is_file() else [])
    rows = {}
    for part in files:
        table = pq.read_table(part)
        rows.update(zip(table.column("path").to_pylist(), table.column("reason").to_pylist(), strict=True))
    return sorted(rows.items())


class OutputFolder:
    """One output folder being written by either engine: checks it belongs to this model, knows which paths are
    finished (embedded or recorded as bad) and numbers the parts."""

    def __init__(self, out_dir: str | Path, metadata: dict):
        self.dir = Path(out_dir).expanduser()
        self.metadata = {"format": OUTPUT_FORMAT, **metadata, "complete": False}
        meta_path = self.dir / "metadata.json"
        if meta_path.exists():
            previous = json.loads(meta_path.read_text())
            if previous.get("model") != metadata["model"]:
                raise ValueError(f"{self.dir} holds embeddings of {previous.get('model')!r}, not "
                                 f"{metadata['model']!r}: choose another --out.")
        for folder in ("images", "errors"):
            (self.dir / folder).mkdir(parents=True, exist_ok=True)
            for stale in (self.dir / folder).glob("*.tmp"):   # a part being written when the last run was killed
                stale.unlink()
        self._write_metadata()
        self.embedded = done_paths(self.dir)
        self.failed = {path for path, _ in read_errors(self.dir)}
        numbers = [int(p.stem.split("-")[1]) for p in [*image_parts(self.dir), *error_parts(self.dir)]]
        self.next_part = max(numbers, default=-1) + 1

    @property
    def done(self) -> set[str]:
        """Every path a finished part holds, embedded or recorded as bad."""
        return self.embedded | self.failed

    def _write_metadata(self) -> None:
        (self.dir / "metadata.json").write_text(json.dumps(self.metadata, indent=2))

    def write_part(self, paths: Sequence[str], labels: Sequence[str | None], captions: Sequence[str | None],
                   sha256: Sequence[str], vectors: np.ndarray | None, errors: Sequence[tuple[str, str]] = ()) -> None:
        """One part: the embedded rows (if any) and the bad files met among this part's rows (if any)."""
        import pyarrow as pa

        number = self.next_part
        self.next_part += 1
        if errors:   # first: a run killed between the two files redoes the good rows, not the bad ones
            write_parquet(errors_table(errors), self.dir / "errors" / f"part-{number:06d}.parquet", self.metadata)
            self.failed.update(path for path, _ in errors)
        if len(paths):
            table = pa.table({"path": pa.array(list(paths), type=pa.string()),
                              "label": pa.array(list(labels), type=pa.string()),
                              "caption": pa.array(list(captions), type=pa.string()),
                              "sha256": pa.array(list(sha256), type=pa.string()),
                              "embedding": embedding_column(vectors)})
            write_parquet(table, self.dir / "images" / f"part-{number:06d}.parquet", self.metadata)
            self.embedded.update(paths)

    def finish(self, scan_errors: Sequence[tuple[str, str]], texts: Sequence[str], kinds: Sequence[str],
               labels: Sequence[str | None], text_vectors: np.ndarray | None) -> dict:
        """errors.parquet (every bad file), texts.parquet, and the metadata marked complete; returns the metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        errors = dict(read_errors(self.dir))
        errors.update(scan_errors)
        write_parquet(errors_table(sorted(errors.items())), self.dir / ERRORS_FILE, self.metadata)
        if texts:
            write_parquet(pa.table({"text": list(texts), "kind": list(kinds),
                                    "label": pa.array(list(labels), type=pa.string()),
                                    "embedding": embedding_column(text_vectors)}),
                          self.dir / "texts.parquet", self.metadata)
        images = sum(pq.read_metadata(part).num_rows for part in image_parts(self.dir))
        self.metadata.update(complete=True, images=images, errors=len(errors), texts=len(texts))
        self._write_metadata()
        return self.metadata


def errors_table(errors: Sequence[tuple[str, str]]):
    """(path, reason) rows as an Arrow table."""
    import pyarrow as pa

    return pa.table({"path": pa.array([p for p, _ in errors], type=pa.string()),
                     "reason": pa.array([r for _, r in errors], type=pa.string())})
