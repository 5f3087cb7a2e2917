"""Which model ids a shared server may load: the catalog, the launcher's ``--model`` ids, and folders under
``--allow-model-dir``; nothing else (``--lock-models``, implied by ``--share`` and by a non-loopback ``--host``).

A public link must not let a visitor fill the server's disk with downloads or probe its file system, so every refusal
is the same sentence: it never says whether a typed path exists, and it is decided before anything touches the path.

    access = ModelAccess.locked_to(["bundled:mini-clip"], folders=["/srv/models"])
    access.check("hf:/srv/models/my-vit")      # returns the id
    access.check("/etc/passwd")               # raises ModelNotAllowedError
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelNotAllowedError
from models.model_ids import LOCAL_DIR_PREFIX

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
REFUSAL = ("This app is shared with a locked model list (--lock-models): pick a model from the list. Whoever runs it "
           "can offer more with --model ID or --allow-model-dir DIR.")


def lock_implied(host: str, share: bool) -> bool:
    """Is the app reachable by others (a public link, or listening beyond this machine)? Then the list is locked."""
    return share or host.strip().lower() not in LOOPBACK_HOSTS


def _within(path: Path, folders: tuple[Path, ...]) -> bool:
    """Is ``path`` (made absolute, ``..`` and links resolved) inside one of ``folders``? Resolving does not require
    the path to exist, and the answer is the only thing the caller learns."""
    resolved = Path(os.path.realpath(path.expanduser()))
    return any(resolved == folder or folder in resolved.parents for folder in folders)


@dataclass(frozen=True)
class ModelAccess:
    """The model ids an app may load. Unlocked (the default for a local app) allows every id."""

    locked: bool = False
    ids: frozenset[str] = frozenset()
    folders: tuple[Path, ...] = ()

    @classmethod
    def locked_to(cls, ids: Iterable[str], folders: Iterable[str | Path] = ()) -> ModelAccess:
        """A locked list: the catalog's ids, ``ids`` (the launcher's --model) and anything under ``folders``."""
        from models.catalog import catalog_models

        known = {m.id for m in catalog_models()} | {i.strip() for i in ids}
        return cls(True, frozenset(known), tuple(Path(os.path.realpath(Path(f).expanduser())) for f in folders))

    def allows(self, model_id: str) -> bool:
        """May this id be loaded? Listed ids exactly; otherwise only a path (bare or after ``backend:``) that lies
        in an allowed folder."""
        text = (model_id or "").strip()
        if not self.locked or text in self.ids:
            return True
        if not self.folders or not text:
            return False
        _, sep, rest = text.partition(":")
        candidates = [text] + ([rest, rest.removeprefix(LOCAL_DIR_PREFIX)] if sep else [])
        return any(_within(Path(c), self.folders) for c in candidates if os.path.isabs(os.path.expanduser(c)))

    def check(self, model_id: str) -> str:
        """The stripped id if it may be loaded; else ModelNotAllowedError, with the same message for every id."""
        if not self.allows(model_id):
            raise ModelNotAllowedError(REFUSAL)
        return (model_id or "").strip()
