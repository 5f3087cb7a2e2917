"""What a local model folder keeps its weights in. clipscope loads safetensors; a folder whose weights are only
pickles (``torch.save`` / ``pickle`` files) is refused with that reason, before any backend tries to read it, so the
user is told what to convert instead of getting an unpickling error or a misleading "cannot be downloaded"."""
from __future__ import annotations

from pathlib import Path

from models.errors import PickledWeightsError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def weight_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files in ``folder`` or one level below (open_clip keeps a text tower in a subfolder) ending in ``suffixes``."""
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes]
    for sub in (p for p in folder.iterdir() if p.is_dir()):
        found += [p for p in sub.iterdir() if p.is_file() and p.suffix in suffixes]
    return sorted(found)


def refuse_pickled_weights(folder: Path) -> None:
    """Raise PickledWeightsError if ``folder`` holds pickled weight files and no safetensors file."""
    if weight_files(folder, (".safetensors",)):
        return
    pickles = weight_files(folder, PICKLE_SUFFIXES)
    if pickles:
        names = ", ".join(p.relative_to(folder).as_posix() for p in pickles[:3])
        raise PickledWeightsError(
            f"{folder}: pickled weights are refused; use safetensors (found {names}). Unpickling can run code. "
            "Convert once where you trust the file: load it with torch.load(path, weights_only=True) and write it "
            "with safetensors.torch.save_file(state_dict, 'model.safetensors') (transformers: "
            "model.save_pretrained(folder, safe_serialization=True)).")
