"""torchvision backend: the matrix rows' tiny builds keep their real class and resolution levels, CNN stages are the
native intermediates, ViT attention equals nn.MultiheadAttention's own weights, unsupported builders are refused by
name before anything is built."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torchvision.models.feature_extraction import create_feature_extractor

from models.backends import torchvision as tvb
from models.coverage import MATRIX, parity
from models.errors import UnknownArchitectureError
from models.registry import clear_cache, load_model

CNN_ARCHS = [r.arch for r in MATRIX if r.backend == "torchvision" and r.family == "cnn"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    yield
    clear_cache()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(arch)``: the matrix row's tiny build, saved and loaded once per arch for this module."""
    root, built = tmp_path_factory.mktemp("torchvision_tiny"), {}

    def get(arch: str):
        if arch not in built:
            torch.manual_seed(0)
            built[arch] = load_model(tvb.save_random(arch, root / arch, tiny=True), device="cpu")
        return built[arch]
    return get


def _strides(adapter) -> list[int]:
    """Input size / map size of the stem and every stage, checking the maps are channels-first squares."""
    size = adapter.preprocess.size[0]
    strides = []
    for name, (channels, height, width) in adapter.stage_shapes().items():
        assert height == width, f"{name}: {channels}x{height}x{width} is not (C, h, w) for a square input"
        strides.append(round(size / height))
    return strides


def test_every_torchvision_row_has_a_tiny_configuration_of_its_real_class():
    rows = {r.arch for r in MATRIX if r.backend == "torchvision"}
    assert len(rows) == 11 and rows <= set(tvb.TINY)
    for arch in rows:
        name = tvb.TINY[arch][0]
        assert name == arch or name == tvb.builds_class(arch), f"{arch}: tiny {name} is not its builder's class"


def _assert_native_stages(adapter) -> None:
    """Stem and stages: one per resolution level, channels-first, equal to torchvision's own feature extraction."""
    strides = _strides(adapter)
    assert strides[1:] == sorted(set(strides[1:])), f"stages must go down one resolution level each: {strides}"
    names = ["stem"] + [f"stages.{i}" for i in range(adapter.num_stages)]
    paths = tvb.module_paths(adapter.module, [adapter.points[n].module for n in names])
    assert len(set(paths)) == len(paths), paths
    pixels = torch.randn(2, 3, *adapter.preprocess.size, generator=torch.Generator().manual_seed(0))
    # one extractor per node: the graph ends there, so no later in-place op (ReLU(inplace)) rewrites the reference
    native = {path: create_feature_extractor(adapter.module, return_nodes=[path])(pixels)[path] for path in paths}
    with adapter.capture(names) as cache:
        logits = adapter.forward(pixels)
    torch.testing.assert_close(logits, adapter.module(pixels))
    for name, path in zip(names, paths, strict=True):
        torch.testing.assert_close(cache[name], native[path], rtol=0, atol=0, msg=f"{name} ({path})")


@pytest.mark.parametrize("arch", CNN_ARCHS)
def test_tiny_cnn_stages_are_the_native_intermediates_one_per_resolution_level(arch, tiny):
    adapter = tiny(arch)
    assert adapter.family == "cnn"
    assert type(adapter.module).__name__ == tvb.builds_class(arch)   # the real builder's class, small
    strides = _strides(adapter)
    # every level from the first stage down to 1/32, none skipped
    stages = strides[1:]
    assert stages[-1] == 32 and stages[0] <= 4 and stages == [stages[0] * 2 ** i for i in range(len(stages))], strides
    _assert_native_stages(adapter)


def test_a_stem_alone_at_its_resolution_is_not_also_a_stage():
    adapter = load_model("torchvision:squeezenet1_1/none", device="cpu")   # conv + ReLU(inplace), then a max pool
    assert adapter.layout.stage_paths[0] != "features.1" and adapter.points["stem"].module is adapter.module.features[1]
    _assert_native_stages(adapter)


@pytest.mark.parametrize("arch", CNN_ARCHS)
def test_tiny_keeps_the_real_models_resolution_levels(arch, tiny):
    small = tiny(arch)
    device = torch.device("cpu" if arch.startswith("regnet") else "meta")   # shapes only: no weights needed
    with device:   # (RegNet's builder computes its widths with tensors, which the meta device cannot)
        model = tvb.build(arch, {}).eval()
    common = {"model_id": f"torchvision:{arch}/none", "backend": "torchvision", "device": device,
              "dtype": torch.float32}
    real = tvb._adapter(model, [], small.preprocess, common)
    assert _strides(small) == _strides(real)
    assert small.layout.stage_paths == real.layout.stage_paths


def test_regnet_stages_are_its_trunk_blocks(tiny):
    adapter = tiny("regnet_y_400mf")
    assert adapter.layout.stage_paths == [f"trunk_output.block{i}" for i in range(1, 5)]
    assert adapter.points["stem"].module is adapter.module.stem
    assert adapter.points["logits"].module is adapter.module.fc


def test_vit_attention_equals_multihead_attentions_own_weights(tiny):
    adapter = tiny("vit_b_16")
    assert adapter.family == "vit" and type(adapter.module).__name__ == "VisionTransformer"
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    eager = tvb.eager_patterns(adapter, pixels, None)
    assert sorted(eager) == ["blocks.0.attn", "blocks.1.attn"]
    for pattern in eager.values():
        assert pattern.shape == (2, 4, 17, 17)   # per head, not averaged: 16 patches + CLS
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 17))
        assert (pattern[:, 0] - pattern[:, 1]).abs().max() > 1e-3   # heads differ
    worst, sites = parity(adapter, pixels, None, eager)
    assert sites == 2 and worst <= 1e-5
    shuffled = {name: p.flip(0) for name, p in eager.items()}   # another image's pattern must not pass
    assert parity(adapter, pixels, None, shuffled)[0] > 1e-3


def test_tiny_config_records_class_preprocess_and_names(tmp_path):
    model_id = tvb.save_random("efficientnet_v2_s", tmp_path / "e", tiny=True)
    config = json.loads((tmp_path / "e" / tvb.TORCHVISION_CONFIG).read_text())
    weights = torchvision.models.EfficientNet_V2_S_Weights.DEFAULT
    assert config["arch"] == "EfficientNet" and config["kwargs"]["num_classes"] == tvb.TINY_CLASSES
    assert config["class_names"] == weights.meta["categories"][:tvb.TINY_CLASSES]
    assert config["preprocess"]["size"] == [64, 64]
    assert tuple(config["preprocess"]["mean"]) == tuple(weights.transforms().mean)
    adapter = load_model(model_id, device="cpu")
    assert adapter.class_names == config["class_names"]
    assert adapter.module.features[0][1].eps == 1e-3   # EfficientNetV2's BatchNorm, as the real builder has it
    saved, loaded = load_file(tmp_path / "e" / "model.safetensors"), adapter.module.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    reference = tvb.build(config["arch"], config["kwargs"]).eval()   # built normally, then loaded
    reference.load_state_dict(saved)
    pixels = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(adapter.forward(pixels), reference(pixels))


def test_full_config_is_the_real_builder_with_its_weights_transforms(tmp_path):
    torch.manual_seed(0)
    model_id = tvb.save_random("regnet_y_400mf", tmp_path / "r", tiny=False)
    config = json.loads((tmp_path / "r" / tvb.TORCHVISION_CONFIG).read_text())
    assert config["arch"] == "regnet_y_400mf" and config["kwargs"] == {}
    adapter = load_model(model_id, device="cpu")
    weights = torchvision.models.RegNet_Y_400MF_Weights.DEFAULT
    assert adapter.preprocess.size == (224, 224)
    assert adapter.preprocess.resize_to == min(weights.transforms().resize_size)
    assert len(adapter.class_names) == 1000
    saved, loaded = load_file(tmp_path / "r" / "model.safetensors"), adapter.module.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    reference = torchvision.models.regnet_y_400mf().eval()   # RegNet's builder cannot run on the meta device
    reference.load_state_dict(saved)
    pixels = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(adapter.forward(pixels), reference(pixels))


@pytest.mark.parametrize(("name", "cls", "closest"), [
    ("fasterrcnn_resnet50_fpn", "FasterRCNN", "Closest supported: torchvision:resnet50,"),
    ("quantized_mobilenet_v3_large", "QuantizableMobileNetV3", "Closest supported: torchvision:mobilenet_v3_large,"),
    ("googlenet", "GoogLeNet", "Closest supported: torchvision:"),
])
def test_unsupported_builders_are_refused_by_name_before_building(name, cls, closest, monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("the model was built")
    monkeypatch.setattr(torchvision.models, "get_model", built)
    with pytest.raises(UnknownArchitectureError) as error:
        load_model(f"torchvision:{name}/none", device="cpu")
    message = str(error.value)
    assert f"torchvision:{name}/none" in message and cls in message and closest in message


def test_a_directory_naming_an_unknown_class_is_refused(tmp_path):
    (tmp_path / tvb.TORCHVISION_CONFIG).write_text(json.dumps({"arch": "GoogLeNet", "kwargs": {}}))
    with pytest.raises(UnknownArchitectureError, match="GoogLeNet.*VisionTransformer"):
        load_model(f"torchvision:{tmp_path}", device="cpu")


def test_no_tiny_configuration_is_named(tmp_path):
    with pytest.raises(UnknownArchitectureError, match="resnet18.*no tiny configuration"):
        tvb.save_random("resnet18", tmp_path, tiny=True)
