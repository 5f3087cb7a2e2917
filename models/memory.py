"""Running a batch that may not fit: on out-of-memory, free the allocator's cache and retry in halves.

Bulk embedding picks its batch size for throughput; a large model, a large image or another user's work can make it
too big for the GPU at that moment. Halving until it fits keeps the request alive; only a single image that still
does not fit becomes an error, with a message that says what to do.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from models.errors import ModelOutOfMemoryError


def free_cached_memory() -> None:
    """Give the CUDA caching allocator's unused blocks back (after an out-of-memory error)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_backoff(function: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """``function(batch)``; if it runs out of memory, the same on each half (recursively), concatenated.

    Raises ModelOutOfMemoryError when a single item does not fit.
    """
    try:
        return function(batch)
    except torch.OutOfMemoryError:
        free_cached_memory()
        if len(batch) <= 1:
            raise ModelOutOfMemoryError(
                "The device ran out of memory on a single image. Free the GPU (other jobs, other loaded models), "
                "use a smaller model, or run on the CPU (--device cpu).") from None
    half = len(batch) // 2
    return torch.cat([run_with_backoff(function, batch[:half]), run_with_backoff(function, batch[half:])])
