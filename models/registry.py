"""``load_model(id)``: parse the id, load once, keep loaded models in a cache bounded by memory."""
from __future__ import annotations

import threading
from collections import OrderedDict

import psutil
import torch

from models.adapters.base import ModelAdapter
from models.backends import BACKENDS
from models.devices import best_device, resolve_dtype
from models.model_ids import parse_model_id
from models.weight_files import refuse_pickled_weights

_cache: OrderedDict[tuple, ModelAdapter] = OrderedDict()
DEFAULT_DEVICE: str | None = None  # set by the app's --device; None means the best available
DEFAULT_DTYPE: str | None = None  # set by the app's --dtype; None means float32
_lock = threading.RLock()


def model_bytes(adapter: ModelAdapter) -> int:
    """Memory held by a model's parameters and buffers."""
    tensors = list(adapter.module.parameters()) + list(adapter.module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def cache_budget_bytes(device: torch.device) -> int:
    """How much memory cached models may hold: half the GPU's memory, or 40% of RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.5)
    return int(psutil.virtual_memory().total * 0.4)


def load_model(model_id: str, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> ModelAdapter:
    """Load a CLIP, ViT or CNN model by id and wrap it in its family adapter; cached per (id, device, dtype).

    Raises ModelIdError, UnknownArchitectureError, PickledWeightsError or ModelUnavailableOfflineError with a
    message that says what to do.
    """
    parsed = parse_model_id(model_id)
    if parsed.local_folder is not None:
        refuse_pickled_weights(parsed.local_folder)
    resolved_device = best_device(device if device is not None else DEFAULT_DEVICE)
    resolved_dtype = resolve_dtype(dtype if dtype is not None else DEFAULT_DTYPE)
    key = (parsed.backend, parsed.name, str(resolved_device), str(resolved_dtype))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        adapter = BACKENDS[parsed.backend].load(parsed, resolved_device, resolved_dtype)
        adapter.model_id = parsed.raw
        _cache[key] = adapter
        _evict(resolved_device)
        return adapter


def _evict(device: torch.device) -> None:
    """Drop least-recently-used models on ``device`` until the cache fits its budget (the newest always stays)."""
    budget = cache_budget_bytes(device)
    on_device = [k for k in _cache if k[2] == str(device)]
    while len(on_device) > 1 and sum(model_bytes(_cache[k]) for k in on_device) > budget:
        del _cache[on_device.pop(0)]
    if device.type == "cuda":
        torch.cuda.empty_cache()


def cached_models() -> list[str]:
    """Ids currently held in memory, least recently used first."""
    with _lock:
        return [adapter.model_id for adapter in _cache.values()]


def clear_cache() -> None:
    with _lock:
        _cache.clear()
