"""Model ids: parsing, local-format detection and the errors a user sees for bad ids."""
from __future__ import annotations

import time

import pytest

from models import ModelIdError, ModelUnavailableOfflineError, UnknownArchitectureError, load_model, parse_model_id


@pytest.mark.parametrize("raw, backend, name", [
    ("bundled:mini-clip", "bundled", "mini-clip"),
    ("open_clip:ViT-B-32/openai", "open_clip", "ViT-B-32/openai"),
    ("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip",
     "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("hf:openai/clip-vit-base-patch32", "hf", "openai/clip-vit-base-patch32"),
    ("timm:vit_small_patch16_224", "timm", "vit_small_patch16_224"),
    ("torchvision:resnet50/IMAGENET1K_V2", "torchvision", "resnet50/IMAGENET1K_V2"),
])
def test_ids_carry_their_backend(raw, backend, name):
    parsed = parse_model_id(raw)
    assert (parsed.backend, parsed.name, parsed.raw) == (backend, name, raw)


def test_local_directories_are_detected_by_format(tiny_dirs):
    expected = {"open_clip_vit": "open_clip", "hf_clip": "hf", "hf_resnet": "hf", "timm_vit": "timm",
                "torchvision_resnet": "torchvision"}
    for name, backend in expected.items():
        parsed = parse_model_id(str(tiny_dirs[name]))
        assert parsed.backend == backend
        assert parsed.is_local


@pytest.mark.parametrize("raw, fragment", [
    ("", "empty"),
    ("foo:bar", "unknown backend 'foo'"),
    ("no-such-thing", "not an existing local path"),
    ("bundled:does-not-exist", "no bundled model of that name"),
    ("hf:", "nothing follows"),
])
def test_bad_ids_raise_model_id_error_naming_the_id(raw, fragment):
    with pytest.raises(ModelIdError) as info:
        load_model(raw)
    assert fragment in str(info.value)


def test_a_directory_without_a_known_config_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ModelIdError, match="holds no open_clip_config.json"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("raw, fragment", [
    ("open_clip:ViT-B-99/openai", "open_clip does not know 'ViT-B-99'"),
    ("open_clip:ViT-B-32/not-a-tag", "no weights 'not-a-tag'"),
    ("timm:vit_gigantic_nonsense_224", "timm does not know"),
    ("torchvision:resnet51", "torchvision does not know 'resnet51'"),
    ("torchvision:resnet18/NOPE", "no weights 'NOPE'"),
])
def test_unknown_architectures_are_named(raw, fragment):
    with pytest.raises(UnknownArchitectureError) as info:
        load_model(raw)
    assert fragment in str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("raw", [
    "hf:openai/clip-vit-base-patch32",
    "open_clip:ViT-B-32/openai",
    "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "torchvision:resnet18/IMAGENET1K_V1",
])
def test_real_ids_fail_fast_and_clearly_when_offline(raw, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSCOPE_OFFLINE", "1")          # as if the network were gone
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))      # and nothing cached
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(ModelUnavailableOfflineError) as info:
        load_model(raw)
    message = str(info.value)
    assert raw in message
    assert "cannot be" in message and ("directory" in message or "copy" in message)
    print(f"{raw}: refused in {time.monotonic() - started:.2f}s")
