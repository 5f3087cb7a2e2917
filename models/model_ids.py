"""Model ids that carry their backend, e.g. ``open_clip:ViT-B-32/openai`` or ``hf:google/vit-base-patch16-224``.

A plain local path is accepted too; its format is detected from the files it holds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelIdError

BACKENDS = ("bundled", "open_clip", "hf", "timm", "torchvision")

ID_FORMS = (
    "bundled:NAME (e.g. bundled:mini-clip)",
    "open_clip:ARCH/PRETRAINED (e.g. open_clip:ViT-B-32/openai), open_clip:hf-hub:ORG/REPO, open_clip:local-dir:PATH",
    "hf:REPO_OR_DIR (e.g. hf:openai/clip-vit-base-patch32)",
    "timm:NAME (e.g. timm:vit_small_patch16_224.augreg_in21k_ft_in1k), timm:local-dir:PATH",
    "torchvision:NAME[/WEIGHTS] (e.g. torchvision:resnet50/IMAGENET1K_V2)",
    "a local directory saved by one of these backends",
)


@dataclass(frozen=True)
class ModelId:
    """A parsed model id: which backend loads it and the backend's own name for it."""

    backend: str
    name: str
    raw: str

    @property
    def is_local(self) -> bool:
        """True when the weights come from a path on this machine (no download involved)."""
        if self.backend == "bundled":
            return True
        if self.backend in ("open_clip", "timm") and self.name.startswith("local-dir:"):
            return True
        return Path(self.name).expanduser().exists()


def _help(raw: str, why: str) -> str:
    forms = "\n  ".join(ID_FORMS)
    return f"Model id {raw!r}: {why}. Use one of:\n  {forms}"


def parse_model_id(raw: str) -> ModelId:
    """Split ``backend:name``; a bare existing path is resolved by :func:`detect_local_format`."""
    if not isinstance(raw, str) or not raw.strip():
        raise ModelIdError(_help(str(raw), "it is empty"))
    text = raw.strip()
    backend, sep, name = text.partition(":")
    if sep and backend in BACKENDS:
        if not name.strip():
            raise ModelIdError(_help(text, f"nothing follows '{backend}:'"))
        return ModelId(backend, name.strip(), text)
    path = Path(text).expanduser()
    if path.exists():
        backend = detect_local_format(path)
        name = str(path.resolve())
        return ModelId(backend, f"local-dir:{name}" if backend in ("open_clip", "timm") else name, text)
    if sep and len(backend) > 1:  # a drive letter is not a backend
        raise ModelIdError(_help(text, f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})"))
    raise ModelIdError(_help(text, "it has no backend prefix and is not an existing local path"))


def detect_local_format(path: Path) -> str:
    """Which backend saved this directory: open_clip, timm or hf (by the config files it holds)."""
    if path.is_file():
        raise ModelIdError(
            _help(str(path), "a single weights file has no architecture; pass the directory saved with its config")
        )
    if (path / "open_clip_config.json").exists():
        return "open_clip"
    if (path / "torchvision_config.json").exists():
        return "torchvision"
    config_path = path / "config.json"
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelIdError(_help(str(path), f"its config.json cannot be read ({exc})")) from exc
        if "architecture" in config and "model_type" not in config:
            return "timm"
        if "model_type" in config:
            return "hf"
    raise ModelIdError(
        _help(str(path), "the directory holds no open_clip_config.json, torchvision_config.json, "
              "timm config.json or transformers config.json")
    )
