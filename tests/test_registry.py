"""Device choice, dtype policy and the memory-bounded model cache."""
from __future__ import annotations

import pytest
import torch

from models import load_model, registry
from models.devices import best_device, resolve_dtype


def test_best_device_falls_back_to_cpu_and_refuses_missing_gpus():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert best_device().type == expected
    assert best_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            best_device("cuda")


def test_dtypes_resolve_by_name():
    assert resolve_dtype(None) == torch.float32
    assert resolve_dtype("fp16") == torch.float16   # runs on the CPU too (tests use it)
    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype"):
        resolve_dtype("fp8")


def test_models_are_cached_and_evicted_under_a_memory_budget(tiny_ids, monkeypatch):
    registry.clear_cache()
    first = load_model(tiny_ids["hf_vit"], device="cpu")
    assert load_model(tiny_ids["hf_vit"], device="cpu") is first
    budget = registry.model_bytes(first) + 1  # room for one of these models only
    monkeypatch.setattr(registry, "cache_budget_bytes", lambda device: budget)
    load_model(tiny_ids["timm_vit"], device="cpu")
    assert registry.cached_models() == [tiny_ids["timm_vit"]]
    assert load_model(tiny_ids["hf_vit"], device="cpu") is not first  # reloaded after eviction
    registry.clear_cache()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_half_precision_capture_on_gpu(tiny_ids):
    model = load_model(tiny_ids["hf_vit"], device="cuda", dtype="bf16")
    pixels = torch.randn(2, 3, 32, 32)
    with model.capture("blocks.*.attn.pattern") as cache:
        model.forward(pixels)
    pattern = cache["blocks.0.attn.pattern"]
    assert pattern.dtype == torch.float32 and pattern.device.type == "cuda"
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-4, rtol=0)
