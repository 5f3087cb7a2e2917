"""One home per backend: each module here owns its id forms, loader, architecture detection, layouts,
preprocessing, offline check, catalog entries and coverage builders, and registers itself.

    register(Backend(name="timm", load=load, ...))     # at the bottom of models/backends/timm.py
    backend("timm").load(model_id, device, dtype)

Supporting a new architecture touches its backend's module and one row of ``models.coverage.MATRIX``.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import ModelIdError, UnknownArchitectureError


@dataclass(frozen=True)
class KnownModel:
    """A catalog entry: an id a user can pick, what it is, and how big."""

    id: str
    family: str            # clip | vit | hierarchical | cnn
    parameters: int
    note: str = ""
    image_tower: str = ""  # the image side's family (a CLIP's tower, or the model itself)

    def __post_init__(self):
        if not self.image_tower:
            object.__setattr__(self, "image_tower", self.family)

    # -- capabilities, as a loaded adapter answers them (ui pickers ask these before loading) ---------------------
    @property
    def has_text(self) -> bool:
        return self.family == "clip"

    @property
    def has_token_grid(self) -> bool:
        """Does the image tower attend over one token grid, block by block (a ViT)?"""
        return self.image_tower == "vit"

    @property
    def has_stage_attention(self) -> bool:
        """Does the image tower attend on a grid per stage (windowed or global: Swin, MaxViT, FastViT hybrids)?"""
        return self.image_tower == "hierarchical"

    @property
    def has_feature_maps(self) -> bool:
        return self.image_tower in ("cnn", "hierarchical")


@dataclass
class Backend:
    """What a backend module registers. Only ``name`` and ``load`` are required."""

    name: str
    load: Callable                                   # (ModelId, device, dtype) -> ModelAdapter
    id_forms: tuple[str, ...] = ()                   # help text, one line per accepted form
    claims_dir: Callable[[Path], bool] = lambda path: False   # is this directory saved in our format?
    local_name: Callable[[Path], str] = lambda path: str(path)  # our own name for such a directory
    is_local: Callable[[str], bool] = lambda name: Path(name).expanduser().exists()
    usable_offline: Callable[[str], bool] = lambda name: False
    catalog: Callable[[], list[KnownModel]] = list
    # coverage matrix: build an architecture from its real configuration (or a tiny one), save it in our format
    save_random: Callable | None = None              # (arch, directory, tiny) -> model id
    eager_patterns: Callable | None = None           # (adapter, pixels) -> {site name: pattern} from eager code
    extra: dict = field(default_factory=dict)


BACKENDS: dict[str, Backend] = {}


def register(entry: Backend) -> Backend:
    """Make a backend known by its id prefix (each backend's ``claims_dir`` must be exclusive of the others')."""
    BACKENDS[entry.name] = entry
    return entry


def backend(name: str) -> Backend:
    """The registered backend called ``name``."""
    if name not in BACKENDS:
        raise ModelIdError(f"Unknown backend {name!r} (known: {', '.join(BACKENDS)}).")
    return BACKENDS[name]


def unknown_name(kind: str, name: str, known: list[str]) -> UnknownArchitectureError:
    """'<backend> does not know NAME', with the closest names it does know."""
    close = difflib.get_close_matches(name, known, n=5)
    return UnknownArchitectureError(f"{kind} does not know {name!r}. Close names: {', '.join(close) or 'none'}.")


def common_kwargs(model_id, device, dtype) -> dict:
    """The arguments every adapter takes from the id and placement."""
    return {"model_id": model_id.raw, "backend": model_id.backend, "device": device, "dtype": dtype}


# importing the backend modules registers them
from models.backends import bundled, hf, open_clip, timm, torchvision  # noqa: E402, F401
