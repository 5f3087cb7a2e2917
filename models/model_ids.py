"""Model ids that carry their backend, e.g. ``open_clip:ViT-B-32/openai`` or ``hf:google/vit-base-patch16-224``.

A plain local path is accepted too; the backend whose on-disk format it holds claims it
(each backend in ``models/backends/`` says which directories are its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelIdError

LOCAL_DIR_PREFIX = "local-dir:"  # how open_clip and timm ids name a folder on disk: open_clip:local-dir:/path


def _backends() -> dict:
    from models.backends import BACKENDS

    return BACKENDS


@dataclass(frozen=True)
class ModelId:
    """A parsed model id: which backend loads it and the backend's own name for it."""

    backend: str
    name: str
    raw: str

    @property
    def is_local(self) -> bool:
        """True when the weights come from a path on this machine (no download involved)."""
        return _backends()[self.backend].is_local(self.name)

    @property
    def local_folder(self) -> Path | None:
        """The folder on this machine the weights are read from, if the id names one."""
        path = Path(self.name.removeprefix(LOCAL_DIR_PREFIX)).expanduser()
        return path if path.is_dir() else None


def id_forms() -> list[str]:
    forms = [form for entry in _backends().values() for form in entry.id_forms]
    return forms + ["a local directory saved by one of these backends"]


def _help(raw: str, why: str) -> str:
    forms = "\n  ".join(id_forms())
    return f"Model id {raw!r}: {why}. Use one of:\n  {forms}"


def parse_model_id(raw: str) -> ModelId:
    """Split ``backend:name``; a bare existing path is resolved by :func:`local_backend`."""
    if not isinstance(raw, str) or not raw.strip():
        raise ModelIdError(_help(str(raw), "it is empty"))
    text = raw.strip()
    backends = _backends()
    prefix, sep, name = text.partition(":")
    if sep and prefix in backends:
        if not name.strip():
            raise ModelIdError(_help(text, f"nothing follows '{prefix}:'"))
        return ModelId(prefix, name.strip(), text)
    path = Path(text).expanduser()
    if path.exists():
        found = local_backend(path)
        return ModelId(found, backends[found].local_name(path.resolve()), text)
    if sep and len(prefix) > 1:  # a drive letter is not a backend
        raise ModelIdError(_help(text, f"unknown backend {prefix!r} (known: {', '.join(backends)})"))
    raise ModelIdError(_help(text, "it has no backend prefix and is not an existing local path"))


def local_backend(path: Path) -> str:
    """Which backend saved this directory, by the files it holds."""
    if path.is_file():
        raise ModelIdError(
            _help(str(path), "a single weights file has no architecture; pass the directory saved with its config"))
    for name, entry in _backends().items():
        if entry.claims_dir(path):
            return name
    raise ModelIdError(_help(str(path), "the directory holds no open_clip_config.json, torchvision_config.json, "
                                        "timm config.json or transformers config.json"))
