"""Known model ids: each backend's catalog entries (the bundled ones first), with family and parameter count.

Parameter counts of real checkpoints are facts of their architectures (tests rebuild each architecture on the
meta device and recount). Whether an id is usable offline is checked against the local caches, never the network.
"""
from __future__ import annotations

from models.backends import BACKENDS, KnownModel


def catalog_models() -> list[KnownModel]:
    """Every backend's catalog entries, bundled models first."""
    return [entry for backend in BACKENDS.values() for entry in backend.catalog()]


def bundled_models() -> list[KnownModel]:
    return BACKENDS["bundled"].catalog()


def real_models() -> list[KnownModel]:
    """Catalog entries whose weights come from a download."""
    return [entry for name, backend in BACKENDS.items() if name != "bundled" for entry in backend.catalog()]


def usable_offline(model_id: str) -> bool:
    """Are this id's weights on this machine now (bundled, or already in a download cache)?"""
    backend, _, name = model_id.partition(":")
    return backend in BACKENDS and BACKENDS[backend].usable_offline(name)


def known_models() -> list[tuple[KnownModel, bool]]:
    """Bundled models first, then the real ones, each with whether it is usable offline right now."""
    return [(m, usable_offline(m.id)) for m in catalog_models()]
