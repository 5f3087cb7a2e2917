"""The one door the app's tabs load models through: the server's :class:`models.access.ModelAccess` decides which ids
are allowed (everything for a local app; the catalog, the --model ids and --allow-model-dir folders for a shared one).
"""
from __future__ import annotations

from models import load_model as _load_model
from models.access import ModelAccess

_access = ModelAccess()


def set_access(access: ModelAccess) -> None:
    """Set the server's policy (``app.build_app`` does, once, before any tab loads a model)."""
    global _access
    _access = access


def current_access() -> ModelAccess:
    return _access


def load_model(model_id: str):
    """``models.load_model`` for an id the server allows; ModelNotAllowedError (one message for all) otherwise."""
    return _load_model(_access.check(model_id))


def typing_hint() -> str:
    """What may be typed into a model picker on this server."""
    if _access.locked:
        folders = ", ".join(str(f) for f in _access.folders)
        return ("This shared app loads the listed models" + (f" and folders under {folders} (type the absolute path)"
                                                            if folders else "") + ".")
    return ("Any id can be typed: bundled:*, open_clip:ARCH/TAG, hf:REPO, timm:NAME, torchvision:NAME[/WEIGHTS] or a "
            "local folder.")


DOWNLOAD_MARK = " (needs a download)"


def labelled_choices(model_ids: list[str]) -> list[tuple[str, str]]:
    """(label, id) pairs for a model picker: ids whose weights are not on this machine say they need a download."""
    from models.catalog import usable_offline
    from models.model_ids import parse_model_id

    def on_disk(model_id: str) -> bool:
        try:
            return usable_offline(model_id) or parse_model_id(model_id).is_local
        except Exception:  # noqa: BLE001 - an id that does not parse is not on disk either
            return False

    return [(i if on_disk(i) else i + DOWNLOAD_MARK, i) for i in model_ids]
