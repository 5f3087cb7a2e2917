"""Tiny randomly initialised models written in each backend's real on-disk format.

They are loaded back through ``load_model``: the same code path a download takes once the files are on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CLASS_NAMES = ["red circle", "blue square", "green star", "yellow cross", "purple heart"]


def _seed() -> None:
    torch.manual_seed(0)


def open_clip_vit(path: Path) -> Path:
    """open_clip ``local-dir`` CLIP with a ViT image tower (patch 8 on 32 px) and a 2-layer text tower."""
    import open_clip
    from safetensors.torch import save_file

    _seed()
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }
    model = open_clip.model.CLIP(**model_cfg)
    path.mkdir(parents=True, exist_ok=True)
    preprocess_cfg = {"size": 32, "mean": [0.48145466, 0.4578275, 0.40821073],
                      "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                      "resize_mode": "shortest"}
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                            "preprocess_cfg": preprocess_cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    return path


def open_clip_resnet(path: Path) -> Path:
    """open_clip ``local-dir`` CLIP with a ModifiedResNet image tower (ends in an attention pool)."""
    import open_clip
    from safetensors.torch import save_file

    _seed()
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
    }
    model = open_clip.model.CLIP(**model_cfg)
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"size": 64}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    return path


def _tiny_clip_tokenizer(path: Path) -> None:
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    raw = path / "raw_tokenizer"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt")).save_pretrained(path)


def hf_clip(path: Path) -> Path:
    """transformers CLIPModel + CLIPImageProcessor + CLIPTokenizer, saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    _seed()
    config = CLIPConfig(
        text_config={"vocab_size": 60, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=32)
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    _tiny_clip_tokenizer(path)
    return path


def hf_vit(path: Path, kind: str = "vit") -> Path:
    """transformers ViT / DeiT-distilled / Dinov2-with-registers, saved with save_pretrained."""
    import transformers

    _seed()
    common = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
              "image_size": 32, "patch_size": 8,
              "id2label": dict(enumerate(CLASS_NAMES)), "label2id": {n: i for i, n in enumerate(CLASS_NAMES)}}
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**common))
    elif kind == "deit":
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**common))
    elif kind == "dinov2_reg":
        config = transformers.Dinov2WithRegistersConfig(**common, num_register_tokens=4)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        raise ValueError(kind)
    model.save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def hf_cnn(path: Path, kind: str = "resnet") -> Path:
    """transformers ResNet / ConvNext image classifiers."""
    import transformers

    _seed()
    labels = {"id2label": dict(enumerate(CLASS_NAMES)), "label2id": {n: i for i, n in enumerate(CLASS_NAMES)}}
    if kind == "resnet":
        config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1],
                                           layer_type="basic", **labels)
        model = transformers.ResNetForImageClassification(config)
    else:
        config = transformers.ConvNextConfig(hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], **labels)
        model = transformers.ConvNextForImageClassification(config)
    model.save_pretrained(path)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=1.0).save_pretrained(path)
    return path


def timm_model(path: Path, kind: str = "vit") -> Path:
    """timm model saved with timm's own save_for_hf (config.json + model.safetensors), read back by local-dir:."""
    import timm
    from timm.models import save_for_hf

    _seed()
    if kind == "vit":
        name, args = "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "num_heads": 4,
                                              "embed_dim": 64}
    elif kind == "vit_reg":
        name, args = "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "num_heads": 4,
                                              "embed_dim": 64, "reg_tokens": 4, "no_embed_class": True}
    elif kind == "vit_dynamic":  # accepts any input size: the position table is interpolated per input
        name, args = "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "num_heads": 4,
                                              "embed_dim": 64, "dynamic_img_size": True}
    elif kind == "deit_distilled":
        name, args = "deit_tiny_distilled_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2,
                                                         "num_heads": 4, "embed_dim": 64}
    elif kind == "resnet":
        name, args = "resnet10t", {}
    else:
        raise ValueError(kind)
    model = timm.create_model(name, pretrained=False, num_classes=len(CLASS_NAMES), **args)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32) if args else (3, 64, 64),
                            "crop_pct": 1.0, "label_names": CLASS_NAMES}
    save_for_hf(model, path, model_args=args, safe_serialization=True)
    return path


def torchvision_model(path: Path, kind: str = "resnet") -> Path:
    """torchvision architecture + state dict in safetensors + torchvision_config.json."""
    import torchvision
    from safetensors.torch import save_file

    _seed()
    if kind == "resnet":
        arch, kwargs, size = "resnet18", {"num_classes": len(CLASS_NAMES)}, 64
    elif kind == "vit":
        arch, kwargs, size = "VisionTransformer", {"image_size": 32, "patch_size": 8, "num_layers": 2,
                                                  "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128,
                                                  "num_classes": len(CLASS_NAMES)}, 32
    elif kind == "convnext":
        arch, kwargs, size = "convnext_tiny", {"num_classes": len(CLASS_NAMES)}, 64
    else:
        raise ValueError(kind)
    builder = getattr(torchvision.models, arch) if arch[0].isupper() else (
        lambda **kw: torchvision.models.get_model(arch, weights=None, **kw))
    model = builder(**kwargs)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors")
    (path / "torchvision_config.json").write_text(json.dumps({
        "arch": arch, "kwargs": kwargs, "class_names": CLASS_NAMES,
        "preprocess": {"size": size, "resize_to": size}}))
    return path
