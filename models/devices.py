"""Choosing where a model runs: CUDA, then Apple MPS, then CPU, unless the caller says otherwise."""
from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def best_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best one this machine has (cuda > mps > cpu)."""
    if requested is not None and str(requested) != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device {requested!r} was asked for but CUDA is not available on this machine.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"Device {requested!r} was asked for but MPS is not available on this machine.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """float32 by default; bf16 / fp16 when asked for, on any device (a GPU is where they pay off, but the CPU runs
    them too, which is how the half-precision paths are tested without a GPU)."""
    if dtype is None:
        return torch.float32
    resolved = dtype if isinstance(dtype, torch.dtype) else _DTYPES.get(str(dtype).lower())
    if resolved is None:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
    return resolved
