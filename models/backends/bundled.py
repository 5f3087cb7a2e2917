"""Bundled models: small models clipscope trains itself (``models/bundled/NAME``), saved in a real backend's format
and loaded by that backend's own code path, so the app works offline from the first run."""
from __future__ import annotations

from pathlib import Path

from models.backends import BACKENDS, Backend, KnownModel, register
from models.errors import ModelIdError
from models.model_ids import ModelId, local_backend

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
FAMILIES = {"mini-clip": ("clip", "vit"), "mini-vit": ("vit", "vit"), "mini-cnn": ("cnn", "cnn")}  # (family, tower)


def bundled_names() -> list[str]:
    """Names of the bundled models present in this checkout."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir() and any(p.glob("*.json")))


def bundled_path(name: str) -> Path:
    path = BUNDLED_DIR / name
    if name not in bundled_names():
        raise ModelIdError(f"Model id 'bundled:{name}': no bundled model of that name. "
                           f"Bundled: {', '.join(bundled_names()) or 'none built yet'} "
                           "(rebuild with `python -m models.world.train_bundled NAME`).")
    return path


def load(model_id: ModelId, device, dtype):
    path = bundled_path(model_id.name)
    inner_backend = local_backend(path)
    inner = ModelId(inner_backend, BACKENDS[inner_backend].local_name(path), model_id.raw)
    adapter = BACKENDS[inner_backend].load(inner, device, dtype)
    adapter.backend = f"bundled ({inner_backend})"
    return adapter


def _safetensors_parameters(directory: Path) -> int:
    """Parameter count from safetensors headers alone (no weights read)."""
    import json

    total = 0
    for path in directory.glob("*.safetensors"):
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        for key, info in header.items():
            if key != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def catalog() -> list[KnownModel]:
    entries = []
    for name in bundled_names():
        family, tower = FAMILIES.get(name, ("?", "?"))
        entries.append(KnownModel(f"bundled:{name}", family, _safetensors_parameters(BUNDLED_DIR / name),
                                  "trained by clipscope on procedural shapes", tower))
    return entries


register(Backend(
    name="bundled", load=load,
    id_forms=("bundled:NAME (e.g. bundled:mini-clip)",),
    is_local=lambda name: True,
    usable_offline=lambda name: True,
    catalog=catalog,
))
