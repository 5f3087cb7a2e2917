"""Residual-stream analysis: how large each block's writes are, and how alike its attention is across depth.

Pure functions on captured tensors; the figures live in viz/patch_figures.py.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

RESIDUAL_QUANTITIES = ("resid_post", "attn_out", "mlp_out")


def residual_names(num_layers: int) -> list[str]:
    """The capture names residual_norms reads."""
    return [f"blocks.{i}.{q}" for q in RESIDUAL_QUANTITIES for i in range(num_layers)]


def residual_norms(cache: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, np.ndarray]:
    """Mean L2 norm over batch and tokens of each block's resid_post, attn_out and mlp_out: {quantity: (layers,)}.

    Shows how the residual stream grows with depth and which sub-layer writes most into it."""
    return {quantity: np.array([cache[f"blocks.{i}.{quantity}"].detach().float().norm(dim=-1).mean().item()
                                for i in range(num_layers)])
            for quantity in RESIDUAL_QUANTITIES}


def attention_map_correlation(patterns: Sequence[torch.Tensor]) -> np.ndarray:
    """Pearson correlation between layers' head-averaged attention maps (B, H, T, T), flattened over batch,
    query and key: (L, L). Neighbouring layers that attend alike show up as bright off-diagonal blocks."""
    if not patterns:
        raise ValueError("attention_map_correlation needs at least one layer's pattern.")
    maps = torch.stack([p.detach().double().mean(dim=1).flatten() for p in patterns])
    centred = maps - maps.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    unit = centred / torch.where(norms > 0, norms, torch.ones_like(norms))
    corr = (unit @ unit.T).clamp(-1.0, 1.0)
    corr.fill_diagonal_(1.0)
    return corr.cpu().numpy()
