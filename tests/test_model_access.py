"""Locked-down sharing: a shared app loads only its listed models and folders, and every refusal reads the same, so
a visitor can neither fill the disk with downloads nor learn which server paths exist. Also: a folder of pickled
weights is refused for that reason, without unpickling anything."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from app_server import running_app
from gradio_client import Client

from app import model_access, parse_args
from models import ModelNotAllowedError, PickledWeightsError, load_model
from models.access import REFUSAL, ModelAccess, lock_implied


def test_lock_is_implied_by_sharing_and_by_listening_beyond_loopback():
    assert not lock_implied("127.0.0.1", share=False) and not lock_implied("localhost", share=False)
    assert lock_implied("127.0.0.1", share=True) and lock_implied("0.0.0.0", share=False)
    assert not model_access(parse_args([])).locked
    assert model_access(parse_args(["--host", "0.0.0.0"])).locked
    assert model_access(parse_args(["--share"])).locked
    assert model_access(parse_args(["--lock-models"])).locked
    assert not model_access(parse_args(["--host", "0.0.0.0", "--no-lock-models"])).locked


def test_a_locked_list_allows_the_catalog_the_launchers_ids_and_allowed_folders_only(tmp_path):
    allowed = tmp_path / "models"
    (allowed / "vit").mkdir(parents=True)
    outside = tmp_path / "private"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    access = ModelAccess.locked_to(["hf:my/extra-model"], [allowed])
    for ok in ("bundled:mini-clip", "open_clip:ViT-B-32/openai", " hf:my/extra-model ", f"hf:{allowed / 'vit'}",
               str(allowed / "vit"), f"timm:local-dir:{allowed / 'vit'}", str(allowed / "not-there-yet")):
        assert access.allows(ok), ok
    for refused in ("/etc/passwd", "hf:someone/huge-repo", "timm:vit_huge_patch14_224", str(outside),
                    f"{allowed}/../private", str(allowed / "escape"), f"hf:{allowed}/../private", "", "models/vit",
                    "open_clip:local-dir:/etc"):
        assert not access.allows(refused), refused
        with pytest.raises(ModelNotAllowedError) as info:
            access.check(refused)
        assert str(info.value) == REFUSAL   # the same sentence whether the path exists or not
    assert ModelAccess().allows("/etc/passwd")   # an unlocked (local) app trusts its own user


class Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("tiny, weights, pickled_name", [
    ("hf_vit", "model.safetensors", "pytorch_model.bin"),
    ("timm_vit", "model.safetensors", "pytorch_model.bin"),
    ("open_clip_vit", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
])
def test_a_folder_of_pickled_weights_is_refused_as_such_without_unpickling(tmp_path, tiny_dirs, tiny, weights,
                                                                            pickled_name):
    folder = tmp_path / tiny
    folder.mkdir()
    for item in tiny_dirs[tiny].iterdir():
        if item.is_file() and item.name != weights:
            (folder / item.name).write_bytes(item.read_bytes())
    marker = tmp_path / "unpickled"
    with open(folder / pickled_name, "wb") as handle:
        pickle.dump({"weight": Payload(str(marker))}, handle)
    with pytest.raises(PickledWeightsError, match="pickled weights are refused; use safetensors"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()


def test_a_folder_with_safetensors_beside_a_pickle_loads_the_safetensors(tmp_path, tiny_dirs):
    folder = tmp_path / "vit"
    folder.mkdir()
    for item in tiny_dirs["hf_vit"].iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    torch.save({"unused": torch.zeros(1)}, folder / "training_state.pt")
    assert load_model(f"hf:{folder}", device="cpu").num_parameters > 0


@pytest.fixture(scope="module")
def locked_app(tiny_dirs, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed_models")
    vit = allowed / "vit"
    vit.mkdir()
    for item in tiny_dirs["hf_vit"].iterdir():
        if item.is_file():
            (vit / item.name).write_bytes(item.read_bytes())
    pickled = allowed / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_dirs["hf_vit"] / "config.json").read_text())
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with running_app("--lock-models", "--allow-model-dir", str(allowed)) as url:
        yield url, vit


def test_a_locked_app_refuses_unlisted_ids_through_the_api_with_one_message(locked_app, tiny_dirs):
    url, _ = locked_app
    client = Client(url, verbose=False)
    for refused in ("/etc/passwd", "/etc", "/no/such/folder", "hf:someone/huge-repo", str(tiny_dirs["hf_vit"]),
                    f"hf:{tiny_dirs['hf_vit']}", "open_clip:ViT-bigG-14/laion2b_s39b_b160k-not-listed"):
        with pytest.raises(Exception) as info:
            client.predict(refused, api_name="/describe_model")
        assert REFUSAL in str(info.value), refused   # nothing about the path: not whether it exists, nor its contents
        assert "passwd" not in str(info.value) and "architecture" not in str(info.value)


def test_a_locked_app_loads_listed_models_and_allowed_folders(locked_app):
    url, vit = locked_app
    client = Client(url, verbose=False)
    facts, *_ = client.predict("bundled:mini-vit", api_name="/describe_model")
    assert dict((row[0], row[1]) for row in facts["data"])["family"] == "vit"
    facts, *_ = client.predict(f"hf:{vit}", api_name="/describe_model")
    assert dict((row[0], row[1]) for row in facts["data"])["patch grid"] == "4x4"
    assert os.path.isdir(vit)


def test_the_pickle_refusal_reaches_the_page_as_its_reason(locked_app):
    url, vit = locked_app
    with pytest.raises(Exception, match="pickled weights are refused; use safetensors"):
        Client(url, verbose=False).predict(f"hf:{vit.parent / 'pickled'}", api_name="/describe_model")


def test_pickers_mark_the_models_that_need_a_download(tiny_ids):
    from models.catalog import usable_offline
    from ui.model_access import DOWNLOAD_MARK, labelled_choices
    labels = dict((value, label) for label, value in labelled_choices(
        ["bundled:mini-clip", "open_clip:ViT-B-32/openai", tiny_ids["hf_vit"]]))
    assert labels["bundled:mini-clip"] == "bundled:mini-clip" and labels[tiny_ids["hf_vit"]] == tiny_ids["hf_vit"]
    assert labels["open_clip:ViT-B-32/openai"].endswith(DOWNLOAD_MARK) != usable_offline("open_clip:ViT-B-32/openai")


def test_every_tab_loads_models_through_the_access_check():
    """A tab that imported models.load_model directly would bypass --lock-models."""
    from pathlib import Path

    ui = Path(__file__).resolve().parent.parent / "ui"
    bypassing = [p.name for p in ui.glob("*.py") if p.name != "model_access.py"
                 and ("from models import load_model" in p.read_text() or "models.load_model" in p.read_text()
                      or "from models.registry import" in p.read_text())]
    assert bypassing == []
