"""torchvision: ``torchvision:NAME[/WEIGHTS]`` and directories holding torchvision_config.json + safetensors.

Owns torchvision's model classes clipscope maps, their layouts, the weights' transforms as preprocessing,
the torch-hub offline check and catalog entries.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from models.adapters.cnn import CNNAdapter, by_resolution_layout, resnet_style_layout
from models.adapters.vit import ViTAdapter, ViTLayout
from models.backends import Backend, KnownModel, common_kwargs, register, unknown_name
from models.errors import ModelUnavailableOfflineError, UnknownArchitectureError
from models.model_ids import ModelId
from models.network import host_reachable
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, square

TORCHVISION_CONFIG = "torchvision_config.json"
CATALOG = [
    KnownModel("torchvision:vit_b_16/IMAGENET1K_V1", "vit", 86_567_656, "torchvision ViT-B/16"),
    KnownModel("torchvision:resnet50/IMAGENET1K_V2", "cnn", 25_557_032, "torchvision ResNet-50"),
    KnownModel("torchvision:resnet18/IMAGENET1K_V1", "cnn", 11_689_512, "torchvision ResNet-18"),
    KnownModel("torchvision:convnext_tiny/IMAGENET1K_V1", "cnn", 28_589_128, "torchvision ConvNeXt-T"),
]


# -- layouts ---------------------------------------------------------------------------------------------------------
def vit_layout(model: nn.Module, class_names: list[str]) -> ViTLayout:
    """torchvision VisionTransformer (vit_b_16 ...)."""
    blocks = list(model.encoder.layers)
    return ViTLayout(
        patch_embed=model.conv_proj,
        blocks=blocks,
        ln1=[b.ln_1 for b in blocks],
        attn=[b.self_attention for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=model.encoder.ln,
        patch_size=(model.patch_size, model.patch_size),
        image_size=(model.image_size, model.image_size),
        prefix_tokens=["cls"],
        pos_embed=lambda: model.encoder.pos_embedding.detach()[0],
        output=model.heads,
        class_names=class_names,
    )


def _adapter(model: nn.Module, class_names: list[str], preprocess: Preprocess, common: dict):
    from torchvision.models import VisionTransformer

    if isinstance(model, VisionTransformer):
        return ViTAdapter(vit_layout(model, class_names), forward=model, module=model,
                          preprocess=preprocess, **common)
    if hasattr(model, "layer1") and hasattr(model, "fc"):
        layout = resnet_style_layout(model, class_names)
    elif hasattr(model, "features") and isinstance(model.features, nn.Sequential):
        if "swin" in type(model).__name__.lower():
            raise UnknownArchitectureError("torchvision Swin (channels-last, windowed attention) is not supported yet.")
        head = getattr(model, "classifier", None) or getattr(model, "head", None)
        layout = by_resolution_layout(model, model.features, head, class_names, preprocess.size)
    else:
        raise UnknownArchitectureError(f"torchvision {type(model).__name__} is not supported yet.")
    return CNNAdapter(layout, forward=model, module=model, preprocess=preprocess, **common)


# -- loading ---------------------------------------------------------------------------------------------------------
def load(model_id: ModelId, device, dtype):
    import torchvision

    if Path(model_id.name).is_dir():
        return _load_dir(model_id, device, dtype)
    arch, _, weights_name = model_id.name.partition("/")
    known = torchvision.models.list_models()
    if arch not in known:
        raise unknown_name("torchvision", arch, known)
    weights = None
    if weights_name.lower() not in ("none", "random"):
        enum = torchvision.models.get_model_weights(arch)
        try:
            weights = enum[weights_name or "DEFAULT"]
        except KeyError:
            raise UnknownArchitectureError(f"torchvision has no weights {weights_name!r} for {arch}. "
                                           f"Known: {', '.join(w.name for w in enum)}, or 'none' for random.") from None
    if weights is not None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not cached.exists() and not host_reachable("download.pytorch.org"):
            raise ModelUnavailableOfflineError(
                f"Model {model_id.raw!r}: weights {weights.url} are not in {cached.parent} and download.pytorch.org "
                "cannot be reached. Load it once on a machine with network and copy that file here, or use "
                f"'torchvision:{arch}/none' for random weights.")
    model = torchvision.models.get_model(arch, weights=weights).to(device=device, dtype=dtype).eval()
    if weights is not None:
        t = weights.transforms()
        preprocess = Preprocess(size=square(t.crop_size), mean=tuple(t.mean), std=tuple(t.std),
                                resize_to=min(t.resize_size), interpolation=t.interpolation.value)
        class_names = list(weights.meta.get("categories", []))
    else:
        size = (model.image_size, model.image_size) if hasattr(model, "image_size") else (224, 224)
        preprocess = Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_to=int(size[0] * 256 / 224),
                                interpolation="bilinear")
        class_names = []
    return _adapter(model, class_names, preprocess, common_kwargs(model_id, device, dtype))


def _load_dir(model_id: ModelId, device, dtype):
    """A directory with torchvision_config.json (arch, builder kwargs, class names, preprocess) + safetensors."""
    import torchvision
    from safetensors.torch import load_file

    path = Path(model_id.name)
    config = json.loads((path / TORCHVISION_CONFIG).read_text())
    arch, kwargs = config["arch"], config.get("kwargs", {})
    if arch in torchvision.models.list_models():
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    elif arch == "VisionTransformer":  # a custom-sized ViT (the builders fix the sizes)
        model = getattr(torchvision.models, arch)(**kwargs)
    else:
        raise UnknownArchitectureError(f"{path / TORCHVISION_CONFIG}: torchvision has no architecture {arch!r}.")
    model.load_state_dict(load_file(path / "model.safetensors"))
    pre = config.get("preprocess", {})
    size = square(pre.get("size", 224))
    preprocess = Preprocess(size=size, mean=tuple(pre.get("mean", IMAGENET_MEAN)),
                            std=tuple(pre.get("std", IMAGENET_STD)), resize_to=pre.get("resize_to"),
                            interpolation=pre.get("interpolation", "bilinear"))
    model = model.to(device=device, dtype=dtype).eval()
    class_names = list(config.get("class_names", []))
    return _adapter(model, class_names, preprocess, common_kwargs(model_id, device, dtype))


# -- offline ---------------------------------------------------------------------------------------------------------
def usable_offline(name: str) -> bool:
    import torchvision

    arch, _, weights = name.partition("/")
    url = torchvision.models.get_model_weights(arch)[weights or "DEFAULT"].url
    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists()


register(Backend(
    name="torchvision", load=load,
    id_forms=("torchvision:NAME[/WEIGHTS] (e.g. torchvision:resnet50/IMAGENET1K_V2)",),
    claims_dir=lambda path: (path / TORCHVISION_CONFIG).exists(),
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
))
