"""Known model ids: the bundled ones plus popular real checkpoints, with family and parameter count.

Parameter counts of real checkpoints are facts of their architectures (tests rebuild each architecture on the
meta device and recount). Whether an id is usable offline is checked against the local caches, never the network.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class KnownModel:
    id: str
    family: str
    parameters: int
    note: str = ""

    @property
    def image_tower(self) -> str:
        """"vit" or "cnn": what the image side is (a CLIP's tower, or the model itself)."""
        if self.family == "clip":
            return "cnn" if "resnet" in self.note.lower() else "vit"
        return self.family


REAL_MODELS = [
    KnownModel("open_clip:ViT-B-32/openai", "clip", 151_277_313, "OpenAI CLIP ViT-B/32"),
    KnownModel("open_clip:ViT-B-16/openai", "clip", 149_620_737, "OpenAI CLIP ViT-B/16"),
    KnownModel("open_clip:ViT-L-14/openai", "clip", 427_616_513, "OpenAI CLIP ViT-L/14"),
    KnownModel("open_clip:RN50/openai", "clip", 102_007_137, "OpenAI CLIP ResNet-50 (attention pool)"),
    KnownModel("open_clip:ViT-B-32/laion2b_s34b_b79k", "clip", 151_277_313, "LAION-2B ViT-B/32"),
    KnownModel("hf:openai/clip-vit-base-patch32", "clip", 151_277_313, "OpenAI CLIP ViT-B/32, transformers"),
    KnownModel("hf:google/vit-base-patch16-224", "vit", 86_567_656, "ViT-B/16 ImageNet-1k classifier"),
    KnownModel("timm:vit_small_patch16_224.augreg_in21k_ft_in1k", "vit", 22_050_664, "ViT-S/16 AugReg"),
    KnownModel("torchvision:vit_b_16/IMAGENET1K_V1", "vit", 86_567_656, "torchvision ViT-B/16"),
    KnownModel("torchvision:resnet50/IMAGENET1K_V2", "cnn", 25_557_032, "torchvision ResNet-50"),
    KnownModel("torchvision:resnet18/IMAGENET1K_V1", "cnn", 11_689_512, "torchvision ResNet-18"),
    KnownModel("torchvision:convnext_tiny/IMAGENET1K_V1", "cnn", 28_589_128, "torchvision ConvNeXt-T"),
]


def _safetensors_parameters(directory: Path) -> int:
    """Parameter count from safetensors headers alone (no weights read)."""
    total = 0
    for path in directory.glob("*.safetensors"):
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
        for key, info in header.items():
            if key != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def bundled_models() -> list[KnownModel]:
    from models.backends import BUNDLED_DIR, bundled_names

    families = {"mini-clip": "clip", "mini-vit": "vit", "mini-cnn": "cnn"}
    return [KnownModel(f"bundled:{name}", families.get(name, "?"), _safetensors_parameters(BUNDLED_DIR / name),
                       "trained by clipscope on procedural shapes") for name in bundled_names()]


def _hf_cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def usable_offline(model_id: str) -> bool:
    """Are this id's weights on this machine now (bundled, or already in a download cache)?"""
    backend, _, name = model_id.partition(":")
    if backend == "bundled":
        return True
    if backend == "hf":
        return Path(name).exists() or _hf_cached(name, "config.json")
    if backend == "open_clip":
        import open_clip

        arch, _, tag = name.partition("/")
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        repo = (cfg.get("hf_hub") or "").rstrip("/")
        return bool(repo) and any(_hf_cached(repo, f) for f in ("open_clip_model.safetensors",
                                                                "open_clip_pytorch_model.bin"))
    if backend == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg else None
        return bool(repo) and any(_hf_cached(repo, f) for f in ("model.safetensors", "pytorch_model.bin"))
    if backend == "torchvision":
        import torchvision

        arch, _, weights = name.partition("/")
        url = torchvision.models.get_model_weights(arch)[weights or "DEFAULT"].url
        return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists()
    return False


def known_models() -> list[tuple[KnownModel, bool]]:
    """Bundled models first, then the real ones, each with whether it is usable offline right now."""
    return [(m, usable_offline(m.id)) for m in bundled_models() + REAL_MODELS]
