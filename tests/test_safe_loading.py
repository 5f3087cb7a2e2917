"""Loading never runs code that came with a checkpoint: no remote code, no pickles beyond plain tensors."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from models import ClipscopeModelError, load_model


class Payload:
    """Unpickling this would run arbitrary code (here: create a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_folder_asking_for_remote_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "clipscope_evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}}))
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ClipscopeModelError):
        load_model(f"hf:{tmp_path}", device="cpu")
    assert not marker.exists()


def test_torch_load_refuses_pickled_code_by_default(tmp_path):
    """Every checkpoint the backends read with torch.load (no loader here passes weights_only=False) is limited
    to tensors and plain containers: a pickle that would run code is refused."""
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": Payload(str(marker))}, handle)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not marker.exists()


def test_no_loader_opts_into_remote_code_or_unsafe_pickles():
    from pathlib import Path

    source = "\n".join(p.read_text() for p in (Path(__file__).parent.parent / "models").glob("*.py"))
    assert "trust_remote_code=True" not in source and "weights_only=False" not in source
