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
    adapter.trained_on = trained_on(path)
    return adapter


def trained_on(folder: Path) -> str:
    """What a bundled model knows, in one line: clipscope's procedural world, with the held-out top-1 its training
    log measured (when the log has one), so the app can say so next to every answer."""
    from models.world import shapes

    line = (f"clipscope's procedural coloured-shapes world ({len(shapes.SHAPES)} shapes x {len(shapes.COLOURS)} "
            "colours in small generated scenes)")
    score = held_out_top1(folder)
    return f"{line}{f'; {score}' if score else ''}; it knows nothing else"


# each kind of bundled model's main held-out figure in its training log (models/world/train_bundled.py), and its count
MAIN_METRICS = (("zero_shot_top1", "zero_shot_n"), ("top1", "top1_n"))


def held_out_top1(folder: Path) -> str | None:
    """The main held-out top-1 of a bundled model's training_log.json ("held-out top-1 97.5% of 720 images"), or
    None where the log is missing or has none of :data:`MAIN_METRICS`."""
    import json

    try:
        metrics = json.loads((folder / "training_log.json").read_text(encoding="utf-8"))["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(metrics, dict):
        return None
    for key, count_key in MAIN_METRICS:
        if isinstance(metrics.get(key), (int, float)):
            count = metrics.get(count_key)
            return f"held-out top-1 {metrics[key]:.1%}" + (f" of {count:,} images" if isinstance(count, int) else "")
    return None


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
