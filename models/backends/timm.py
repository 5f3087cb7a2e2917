"""timm: ``timm:NAME[.TAG][/none]`` and ``timm:local-dir:PATH`` (a directory written by timm's save_for_hf).

Owns timm's model classes clipscope maps, their layouts, the data config's preprocessing, class names,
the hub-cache offline check and catalog entries.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from torch import nn

from models.adapters.cnn import CNNAdapter, CNNLayout, resnet_style_layout
from models.adapters.vit import ViTAdapter, ViTLayout, channels_first_to_tokens, channels_last_to_tokens
from models.backends import Backend, KnownModel, common_kwargs, register, unknown_name
from models.errors import UnknownArchitectureError
from models.model_ids import ModelId
from models.network import download_guard
from models.preprocess import Preprocess, square

CATALOG = [
    KnownModel("timm:vit_small_patch16_224.augreg_in21k_ft_in1k", "vit", 22_050_664, "ViT-S/16 AugReg"),
]


# -- layouts ---------------------------------------------------------------------------------------------------------
def vit_layout(model: nn.Module, class_names: list[str]) -> ViTLayout:
    """timm VisionTransformer (incl. registers and distilled DeiT)."""
    blocks = list(model.blocks)
    prefix = ["cls"] if getattr(model, "cls_token", None) is not None else []
    if getattr(model, "dist_token", None) is not None:
        prefix.append("dist")
    prefix += [f"reg{i}" for i in range(getattr(model, "num_reg_tokens", 0) or 0)]
    pos_rows = 0 if getattr(model, "no_embed_class", False) else len(prefix)
    output_fmt = getattr(model.patch_embed, "output_fmt", None)
    transform = channels_last_to_tokens if str(output_fmt).endswith("NHWC") else channels_first_to_tokens
    head = model.head if not isinstance(model.head, nn.Identity) else (model.fc_norm if not isinstance(
        model.fc_norm, nn.Identity) else model.norm)
    return ViTLayout(
        patch_embed=model.patch_embed,
        blocks=blocks,
        ln1=[b.norm1 for b in blocks],
        attn=[b.attn for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=model.norm,
        patch_size=square(model.patch_embed.patch_size),
        image_size=square(model.patch_embed.img_size or model.default_cfg.get("input_size", (3, 224, 224))[1:]),
        prefix_tokens=prefix,
        pos_embed=(lambda: model.pos_embed.detach()[0]) if model.pos_embed is not None else None,
        pos_embed_prefix_rows=pos_rows,
        patch_embed_transform=transform,
        output=head,
        output_name="logits" if not isinstance(model.head, nn.Identity) else "final_output",
        class_names=class_names if not isinstance(model.head, nn.Identity) else [],
    )


def cnn_layout(model: nn.Module, class_names: list[str]) -> CNNLayout:
    """timm CNNs: stages are the modules timm's own feature_info names."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise UnknownArchitectureError(f"timm model {type(model).__name__} has no feature_info.")
    paths = [entry["module"] for entry in info]
    modules = [model.get_submodule(p) for p in paths]
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None or isinstance(head, nn.Identity):
        head = modules[-1]
        class_names = []
    return CNNLayout(stem=modules[0], stages=modules[1:], stage_paths=paths[1:], head=head,
                     head_name="logits" if class_names or not isinstance(head, nn.Identity) else "features",
                     class_names=class_names)


# -- loading ---------------------------------------------------------------------------------------------------------
def _class_names(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if cfg.get("label_names"):
        return list(cfg["label_names"])
    num_classes = getattr(model, "num_classes", 0)
    if num_classes in (1000, 11821, 21841, 21843):
        from timm.data import ImageNetInfo, infer_imagenet_subset
        subset = infer_imagenet_subset(model)
        if subset:
            return list(ImageNetInfo(subset).label_descriptions())
    return [str(i) for i in range(num_classes)] if num_classes else []


def load(model_id: ModelId, device, dtype):
    import timm
    from timm.models.vision_transformer import VisionTransformer

    name, _, weights = model_id.name.partition("/") if not model_id.name.startswith(
        ("hf-hub:", "local-dir:")) else (model_id.name, "", "")
    random_weights = weights.lower() in ("none", "random")
    if not name.startswith(("hf-hub:", "local-dir:")):
        if not timm.is_model(name.split(".")[0]):
            raise unknown_name("timm", name, timm.list_models())
    with download_guard(model_id.raw):
        model = timm.create_model(name, pretrained=not random_weights)
    model = model.to(device=device, dtype=dtype).eval()
    data = timm.data.resolve_model_data_config(model)
    size = square(data["input_size"][1:])
    crop_pct = data.get("crop_pct") or 1.0
    preprocess = Preprocess(size=size, mean=tuple(data["mean"]), std=tuple(data["std"]),
                            resize_to=int(math.floor(min(size) / crop_pct)),
                            interpolation=data.get("interpolation", "bicubic"))
    common = common_kwargs(model_id, device, dtype)
    class_names = _class_names(model)
    if isinstance(model, VisionTransformer):
        return ViTAdapter(vit_layout(model, class_names), forward=model, module=model,
                          preprocess=preprocess, **common)
    if hasattr(model, "layer1") and hasattr(model, "fc"):
        layout = resnet_style_layout(model, class_names)
    else:
        layout = cnn_layout(model, class_names)
    return CNNAdapter(layout, forward=model, module=model, preprocess=preprocess, **common)


# -- local directories, offline --------------------------------------------------------------------------------------
def claims_dir(path: Path) -> bool:
    """A directory written by timm's save_for_hf: config.json with an architecture and no model_type."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "architecture" in config and "model_type" not in config


def usable_offline(name: str) -> bool:
    import timm

    from models.backends.hf import hub_cached

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg else None
    return bool(repo) and any(hub_cached(repo, f) for f in ("model.safetensors", "pytorch_model.bin"))


register(Backend(
    name="timm", load=load,
    id_forms=("timm:NAME (e.g. timm:vit_small_patch16_224.augreg_in21k_ft_in1k), timm:local-dir:PATH",),
    claims_dir=claims_dir,
    local_name=lambda path: f"local-dir:{path}",
    is_local=lambda name: name.startswith("local-dir:") or Path(name).expanduser().exists(),
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
))
