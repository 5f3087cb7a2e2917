"""``python -m models.embed --engine ray`` on a local two-CPU Ray started once for the module: the same rows and
embeddings as the single process, resuming after a stop half way (finished shards untouched, only the missing ones
computed, a part being written when the run died ignored), bad files recorded in errors.parquet in both engines,
and WebDataset shards giving the folder's embeddings."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models import load_model, shapes
from models.embed import (
    embed_source_to_parquet,
    load_embedding_output,
    main,
    scan_folder,
    write_webdataset,
)

ROOT = Path(__file__).resolve().parent.parent
QUIET_OFFLINE = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
                 "CLIPSCOPE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
BAD = {"broken.png": "Cannot read broken.png as an image", "truncated.png": "Cannot read truncated.png as an image"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray with 2 CPUs, quiet, offline, its workers importing this checkout; shut down after the module."""
    import ray

    saved = {key: os.environ.get(key) for key in QUIET_OFFLINE}
    os.environ.update(QUIET_OFFLINE)
    for attempt in range(3):   # on a loaded machine the node's agents may miss Ray's fixed start-up deadline
        try:
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                     _temp_dir=str(tmp_path_factory.mktemp("ray")),
                     runtime_env={"env_vars": {**QUIET_OFFLINE, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
            break
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """24 procedural images as label/NNNNN.png with captions.csv, a file that is not an image and a truncated PNG."""
    root = tmp_path_factory.mktemp("shapes") / "set"
    shapes.export_folder(shapes.make_dataset(24, seed=882_101), root)
    (root / "broken.png").write_bytes(b"this is not a PNG file")
    good = next(root.rglob("00000.png")).read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """The single-process engine's output of the folder."""
    out = tmp_path_factory.mktemp("process") / "out"
    embed_source_to_parquet(load_model("bundled:mini-clip", device="cpu"), folder, out, batch_size=8)
    return out


def _parts(out: Path) -> list[Path]:
    return sorted((out / "images").glob("part-*.parquet"))


def _errors(out: Path) -> dict[str, str]:
    table = pq.read_table(out / "errors.parquet")
    return dict(zip(table.column("path").to_pylist(), table.column("reason").to_pylist(), strict=True))


def assert_same_output(out: Path, reference: Path, atol: float = 1e-5) -> None:
    """Same rows (path, label, caption), embeddings within ``atol`` (float32), texts, errors and Parquet layout."""
    a, b = load_embedding_output(out), load_embedding_output(reference)
    assert [(i.name, i.label, i.caption) for i in a.images] == [(i.name, i.label, i.caption) for i in b.images]
    assert np.abs(a.image_embeddings - b.image_embeddings).max() <= atol
    assert a.texts == b.texts and np.abs(a.text_embeddings - b.text_embeddings).max() <= atol
    errors = _errors(out)
    assert set(errors) == set(_errors(reference)) == set(BAD)
    assert all(BAD[path] in reason for path, reason in errors.items())
    assert pq.read_schema(_parts(out)[0]).remove_metadata() == pq.read_schema(_parts(reference)[0]).remove_metadata()
    assert b"clipscope" in pq.read_schema(_parts(out)[0]).metadata


def test_single_process_records_bad_files_and_embeds_the_rest(folder, reference):
    errors = _errors(reference)
    assert set(errors) == set(BAD)
    assert all(BAD[path] in reason for path, reason in errors.items())
    loaded = load_embedding_output(reference)
    assert len(loaded.images) == 24 and np.isfinite(loaded.image_embeddings).all()
    assert not {item.name for item in loaded.images} & set(BAD)


def test_ray_engine_resumes_after_a_stop_half_way_and_matches_the_single_process(ray_cluster, folder, reference,
                                                                                   tmp_path):
    out = tmp_path / "ray"
    command = [str(folder), "--model", "bundled:mini-clip", "--out", str(out), "--engine", "ray", "--device", "cpu",
               "--batch-size", "4", "--shard-size", "8", "--no-cache"]
    assert main([*command, "--max-shards", "1"]) == 0
    metadata = pq.read_schema(_parts(out)[0]).metadata if _parts(out) else None
    assert metadata is not None and not (out / "texts.parquet").exists()
    first = {part: (part.stat().st_mtime_ns, part.read_bytes()) for part in _parts(out)}
    first_rows = sum(pq.read_metadata(part).num_rows for part in first)
    first_errors = sum(pq.read_metadata(p).num_rows for p in (out / "errors").glob("part-*.parquet"))
    assert len(first) == 1 and first_rows + first_errors == 8      # one shard of 8 rows, nothing more
    (out / "images" / "part-000099.parquet.tmp").write_bytes(b"half a part: the run died while writing it")

    assert main(command) == 0
    assert not list((out / "images").glob("*.tmp"))
    for part, (mtime, data) in first.items():                      # the finished shard was not redone
        assert part.stat().st_mtime_ns == mtime and part.read_bytes() == data
    paths = [path for part in _parts(out) for path in pq.read_table(part).column("path").to_pylist()]
    assert len(paths) == len(set(paths)) == 24                     # nothing duplicated, nothing lost
    new_rows = sum(pq.read_metadata(part).num_rows for part in _parts(out) if part not in first)
    assert new_rows == 24 - first_rows                             # only the missing shards were computed
    assert_same_output(out, reference)


def test_table_and_webdataset_sources_give_the_folder_s_embeddings(ray_cluster, folder, reference, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    clip = load_model("bundled:mini-clip", device="cpu")
    items = scan_folder(folder)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_webdataset(items[:13], shards / "train-000000.tar")
    write_webdataset(items[13:], shards / "train-000001.tar")
    table = pq.read_table(reference / "images").select(["path", "label", "caption"])
    rows = table.to_pylist() + [{"path": name, "label": None, "caption": None} for name in BAD]
    listing = pa.Table.from_pylist(rows)
    pq.write_table(listing, folder / "listing.parquet")
    pacsv.write_csv(listing, folder / "listing.csv")

    for name, source in (("csv", folder / "listing.csv"), ("parquet", folder / "listing.parquet"),
                         ("tar", shards)):
        out = tmp_path / name
        embed_source_to_parquet(clip, source, out, batch_size=8)
        assert_same_output(out, reference)
    out = tmp_path / "tar-ray"
    assert main([str(shards / "*.tar"), "--out", str(out), "--engine", "ray", "--device", "cpu", "--batch-size", "8",
                 "--no-cache"]) == 0
    assert_same_output(out, reference)


def test_ray_engine_resumes_after_its_process_is_killed_half_way(ray_cluster, tmp_path):
    """A real kill: ``python -m models.embed --engine ray`` in its own process, joined to this module's cluster,
    gets SIGKILL once its first shard is on disk; the rerun keeps the finished shards and computes only the rest,
    and the result equals the single-process engine's."""
    import signal
    import subprocess
    import sys
    import time

    images = tmp_path / "set"
    shapes.export_folder(shapes.make_dataset(96, seed=882_202), images)
    (images / "broken.png").write_bytes(b"this is not a PNG file")   # bad files are still recorded across a kill
    good = next(images.rglob("00000.png")).read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 2])
    reference = tmp_path / "process"
    embed_source_to_parquet(load_model("bundled:mini-clip", device="cpu"), images, reference, batch_size=8)
    out = tmp_path / "ray"
    command = [str(images), "--model", "bundled:mini-clip", "--out", str(out), "--engine", "ray", "--device", "cpu",
               "--batch-size", "4", "--shard-size", "4", "--no-cache"]
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, **QUIET_OFFLINE, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "models.embed", *command, "--address", address], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _parts(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    before = {part: part.read_bytes() for part in _parts(out)}
    assert 1 <= len(before) < 24, f"{len(before)} of 24+ shards when killed: not half way"
    assert not (out / "texts.parquet").exists()                    # the run never reached its end

    assert main(command) == 0
    for part, data in before.items():                              # the finished shards were kept as they were
        assert part.read_bytes() == data
    paths = [path for part in _parts(out) for path in pq.read_table(part).column("path").to_pylist()]
    assert len(paths) == len(set(paths)) == 96                     # nothing duplicated, nothing lost
    assert_same_output(out, reference)
