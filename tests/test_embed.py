"""Batch embedding: folders, background decoding, the on-disk cache (a hit runs no model), and the
``python -m models.embed`` command killed half way and resumed without duplicated or lost rows."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models import load_model, shapes
from models.embed import (
    EmbeddingCache,
    ImageItem,
    decoded_batches,
    embed_folder_to_parquet,
    embed_images,
    embed_texts,
    load_embedding_output,
    main,
    scan_folder,
    scan_webdataset,
    write_webdataset,
)
from models.images import ImageInputError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """60 held-out procedural images exported as label/NNNNN.png with captions.csv."""
    root = tmp_path_factory.mktemp("shapes") / "set"
    shapes.export_folder(shapes.make_dataset(60, seed=882_001), root)
    return root


class ForwardCounter:
    """Counts forward calls of the image tower by a hook on its native module."""

    def __init__(self, model):
        self.calls = 0
        self.images = 0
        self.handle = model.visual.module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.images += args[0].shape[0]

    def close(self):
        self.handle.remove()


def test_scan_folder_reads_labels_from_subfolders_and_captions_from_the_csv(folder, tmp_path):
    items = scan_folder(folder)
    assert len(items) == 60 and all(item.label and item.caption for item in items)
    with open(folder / "captions.csv", newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    for item in items:
        assert item.name.split("/")[0] == item.label == rows[item.name]["label"]
        assert item.caption == rows[item.name]["caption"]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "bad.csv").write_text("file,text\na.png,x\n")
    with pytest.raises(ValueError, match="'path' and 'caption'"):
        scan_folder(folder, captions=tmp_path / "bad.csv")


def test_background_decoding_keeps_the_order_and_the_pixels(clip, folder):
    items = scan_folder(folder)[:23]
    serial = list(decoded_batches(items, clip.preprocess, batch_size=8, workers=0))
    threaded = list(decoded_batches(items, clip.preprocess, batch_size=8, workers=2))
    assert [list(p) for p, _ in threaded] == [list(range(0, 8)), list(range(8, 16)), list(range(16, 23))]
    for (_, a), (_, b) in zip(serial, threaded, strict=True):
        torch.testing.assert_close(a, b)
    uint8 = torch.cat([b for _, b in threaded])
    assert uint8.dtype == torch.uint8 and uint8.shape == (23, *clip.preprocess.size, 3)
    torch.testing.assert_close(clip.preprocess.normalize_batch(uint8), clip.preprocess([item.open() for item in items]))


def test_cache_hit_runs_no_model_and_gives_the_same_embeddings(clip, folder, tmp_path):
    items = scan_folder(folder)
    counter = ForwardCounter(clip)
    try:
        first = embed_images(clip, items, batch_size=16, cache=EmbeddingCache(clip, tmp_path / "cache"))
        assert counter.calls == 4 and counter.images == 60
        progress = []
        again = embed_images(clip, items, batch_size=16, cache=EmbeddingCache(clip, tmp_path / "cache"),
                             on_progress=lambda done, total: progress.append((done, total)))
        assert counter.calls == 4                       # a fresh cache object reads the disk: no forward
        assert progress == [(60, 60)]
        np.testing.assert_array_equal(first, again)
        with torch.no_grad():
            direct = clip.encode_image(clip.pixels([item.open() for item in items[:5]])).numpy()
        np.testing.assert_allclose(first[:5], direct, atol=1e-5)
        # the key is the file's contents: a changed file is embedded again, an identical copy is not
        changed = tmp_path / "changed.png"
        shapes.make_dataset(1, seed=882_002)[0].image.save(changed)
        copy = tmp_path / "copy.png"
        copy.write_bytes(Path(items[0].source).read_bytes())
        extra = embed_images(clip, [ImageItem(changed), ImageItem(copy)],
                             cache=EmbeddingCache(clip, tmp_path / "cache"))
        assert counter.calls == 6 and counter.images == 60 + 5 + 1   # the direct check above ran 5 images
        np.testing.assert_array_equal(extra[1], first[0])
    finally:
        counter.close()


def test_text_cache_and_in_memory_images(clip, tmp_path, monkeypatch):
    cache = EmbeddingCache(clip, tmp_path / "cache")
    texts = ["a red circle", "a blue star", "a red circle"]
    first = embed_texts(clip, texts, cache=cache)
    calls = []
    original = clip.encode_text
    monkeypatch.setattr(clip, "encode_text", lambda t: calls.append(list(t)) or original(t))
    again = embed_texts(clip, texts + ["a green cross"], cache=EmbeddingCache(clip, tmp_path / "cache"))
    assert calls == [["a green cross"]]
    np.testing.assert_array_equal(again[:3], first)
    images = [e.image for e in shapes.make_dataset(5, seed=882_003)]
    counter = ForwardCounter(clip)
    try:
        embed_images(clip, [ImageItem(image) for image in images], cache=cache)
        embed_images(clip, [ImageItem(image.copy()) for image in images], cache=cache)
        assert counter.calls == 1   # same pixels, same key
    finally:
        counter.close()


def _parts(out: Path) -> list[Path]:
    return sorted((out / "images").glob("part-*.parquet"))


def test_command_line_resumes_after_being_killed_half_way(clip, tmp_path):
    source = tmp_path / "shapes"
    examples = shapes.make_dataset(240, seed=882_004)
    shapes.export_folder(examples, source)
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = [sys.executable, "-m", "models.embed", str(source), "--model", "bundled:mini-clip", "--out", str(out),
               "--batch-size", "8", "--workers", "1", "--device", "cpu", "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_parts(out)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    written = sum(pq.read_metadata(p).num_rows for p in _parts(out))
    assert 8 * 3 <= written < 240 and not (out / "texts.parquet").exists()
    assert not json.loads((out / "metadata.json").read_text())["complete"]

    assert main(command[3:]) == 0   # the same command again (in this process, to save a second start-up)
    paths = [path for part in _parts(out) for path in pq.read_table(part).column("path").to_pylist()]
    expected = sorted(item.name for item in scan_folder(source))
    assert len(paths) == len(set(paths)) == 240                # nothing duplicated
    assert sorted(paths) == expected                           # nothing lost
    assert json.loads((out / "metadata.json").read_text())["complete"]
    for part in (_parts(out)[0], out / "texts.parquet"):
        assert json.loads(pq.read_schema(part).metadata[b"clipscope"])["model"] == "bundled:mini-clip"

    loaded = load_embedding_output(out)
    assert [item.name for item in loaded.images] == expected
    assert [item.label for item in loaded.images] == [name.split("/")[0] for name in expected]
    assert loaded.model_id == "bundled:mini-clip" and loaded.image_embeddings.shape == (240, 128)
    assert loaded.text_kinds.count("class") == len({e.label for e in examples})
    with torch.no_grad():
        direct = clip.encode_image(clip.pixels([loaded.images[i].open() for i in (0, 119, 239)])).numpy()
    np.testing.assert_allclose(loaded.image_embeddings[[0, 119, 239]], direct, atol=1e-4)


def test_an_output_folder_of_another_model_is_refused(clip, folder, tmp_path):
    out = tmp_path / "out"
    embed_folder_to_parquet(clip, folder, out, batch_size=32)
    metadata = json.loads((out / "metadata.json").read_text())
    metadata["model"] = "open_clip:ViT-B-32/openai"
    (out / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="holds embeddings of 'open_clip:ViT-B-32/openai'"):
        embed_folder_to_parquet(clip, folder, out)
    with pytest.raises(ValueError, match="not an output of models.embed"):
        load_embedding_output(tmp_path)


def test_decoding_threads_go_where_cores_are_free(monkeypatch):
    """A GPU forward leaves the CPU to decoding threads; a CPU forward that uses every core gets none beside it."""
    import models.embed as embed

    monkeypatch.setattr(embed.os, "cpu_count", lambda: 16)
    assert embed.default_workers("cuda") == 4 and embed.default_workers(torch.device("cuda", 1)) == 4
    monkeypatch.setattr(embed.torch, "get_num_threads", lambda: 16)
    assert embed.default_workers("cpu") == 0
    monkeypatch.setattr(embed.torch, "get_num_threads", lambda: 14)
    assert embed.default_workers("cpu") == 2
    monkeypatch.setattr(embed.os, "cpu_count", lambda: 2)
    assert embed.default_workers("cuda") == 1


def test_one_bad_file_is_recorded_in_errors_parquet_and_the_rest_is_embedded(folder, tmp_path, capsys):
    """The issue's failure: one non-image file among good ones used to end the run with no output."""
    source = tmp_path / "mixed"
    shutil.copytree(folder, source)
    (source / "broken.png").write_bytes(b"not an image at all")
    os.chmod(source / "broken.png", 0o644)
    out = tmp_path / "out"
    assert main([str(source), "--out", str(out), "--device", "cpu", "--no-cache", "--batch-size", "16"]) == 0
    assert "60 images" in capsys.readouterr().out
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [row["path"] for row in errors] == ["broken.png"]
    assert "Cannot read broken.png as an image" in errors[0]["reason"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["complete"] and metadata["images"] == 60 and metadata["errors"] == 1
    assert len(load_embedding_output(out).images) == 60


def test_webdataset_shards_are_grouped_by_key_and_broken_samples_are_errors(folder, tmp_path):
    items = scan_folder(folder)[:6]
    shard = write_webdataset(items, tmp_path / "a.tar")
    with tarfile.open(tmp_path / "b.tar", "w") as archive:   # a sample without an image, one labelled by .cls
        for name, payload in (("lonely.txt", b"no picture here"), ("x/y.cls", b"seven"),
                              ("x/y.png", Path(items[0].source).read_bytes()), ("x/y.txt", b" a caption ")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    scanned, errors = scan_webdataset(tmp_path)
    assert [item.name for item in scanned] == sorted([item.name for item in items] + ["x/y.png"])
    by_name = {item.name: item for item in scanned}
    for item in items:
        assert (by_name[item.name].label, by_name[item.name].caption) == (item.label, item.caption)
        assert by_name[item.name].open().tobytes() == item.open().tobytes()
    assert (by_name["x/y.png"].label, by_name["x/y.png"].caption) == ("seven", "a caption")
    assert errors == [("b.tar/lonely", "sample holds no image (txt)")]
    whole, _ = scan_webdataset(shard)
    last = max(whole, key=lambda item: item.source.offset).source
    truncated = tmp_path / "cut" / "c.tar"
    truncated.parent.mkdir()
    truncated.write_bytes(shard.read_bytes()[:last.offset + last.size // 2])   # cut inside the last image
    cut_items, _ = scan_webdataset(truncated)
    for item in cut_items:
        if item.source.offset == last.offset:
            with pytest.raises(ImageInputError, match="c.tar is truncated"):
                item.open()
        else:
            assert item.open().tobytes() == by_name[item.name].open().tobytes()
    assert len(cut_items) >= len(items) - 1


def test_ray_only_options_need_the_ray_engine_and_the_app_does_not_import_ray(folder, tmp_path, capsys):
    assert main([str(folder), "--out", str(tmp_path / "o"), "--max-shards", "1"]) == 2
    assert "only apply with --engine ray" in capsys.readouterr().err
    code = "import sys, models.embed, app; assert 'ray' not in sys.modules, 'ray imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
