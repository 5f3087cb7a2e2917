"""Shared fixtures: tiny models in every backend's real format, built once per test session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402

TINY_BUILDERS = {
    "open_clip_vit": tiny_models.open_clip_vit,
    "open_clip_resnet": tiny_models.open_clip_resnet,
    "hf_clip": tiny_models.hf_clip,
    "hf_vit": lambda p: tiny_models.hf_vit(p, "vit"),
    "hf_deit": lambda p: tiny_models.hf_vit(p, "deit"),
    "hf_dinov2_reg": lambda p: tiny_models.hf_vit(p, "dinov2_reg"),
    "hf_resnet": lambda p: tiny_models.hf_cnn(p, "resnet"),
    "hf_convnext": lambda p: tiny_models.hf_cnn(p, "convnext"),
    "timm_vit": lambda p: tiny_models.timm_model(p, "vit"),
    "timm_vit_reg": lambda p: tiny_models.timm_model(p, "vit_reg"),
    "timm_deit_distilled": lambda p: tiny_models.timm_model(p, "deit_distilled"),
    "timm_resnet": lambda p: tiny_models.timm_model(p, "resnet"),
    "torchvision_resnet": lambda p: tiny_models.torchvision_model(p, "resnet"),
    "torchvision_vit": lambda p: tiny_models.torchvision_model(p, "vit"),
    "torchvision_convnext": lambda p: tiny_models.torchvision_model(p, "convnext"),
}

# the id each tiny model is loaded by: the backend-prefixed form where one exists, else the bare directory
ID_FORMS = {
    "open_clip_vit": "open_clip:local-dir:{path}",
    "open_clip_resnet": "{path}",
    "hf_clip": "hf:{path}",
    "hf_vit": "hf:{path}",
    "hf_deit": "{path}",
    "hf_dinov2_reg": "hf:{path}",
    "hf_resnet": "hf:{path}",
    "hf_convnext": "{path}",
    "timm_vit": "timm:local-dir:{path}",
    "timm_vit_reg": "{path}",
    "timm_deit_distilled": "timm:local-dir:{path}",
    "timm_resnet": "timm:local-dir:{path}",
    "torchvision_resnet": "torchvision:{path}",
    "torchvision_vit": "{path}",
    "torchvision_convnext": "{path}",
}


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every tiny model written to disk once."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {name: build(root / name) for name, build in TINY_BUILDERS.items()}


@pytest.fixture(scope="session")
def tiny_ids(tiny_dirs) -> dict[str, str]:
    """load_model ids for the tiny models."""
    return {name: ID_FORMS[name].format(path=path) for name, path in tiny_dirs.items()}
