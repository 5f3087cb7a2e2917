"""The repeated blocks of a transformer tower, image or text alike, and the hook points they give.

    blocks.N.resid_pre | ln1 | attn.{q,k,v,scores,pattern} | attn_out | mlp_out | resid_post
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from models.adapters.attention import AttentionSite
from models.adapters.capture import HookPoint


@dataclass(kw_only=True)
class BlockStack:
    """One transformer stack as its native modules: block i, its first norm, attention and MLP."""

    blocks: list[nn.Module]
    ln1: list[nn.Module]
    attn: list[nn.Module]
    mlp: list[nn.Module]
    causal: bool = False   # does each token attend only to the tokens before it?


def stack_points(stack: BlockStack, prefix: str = "") -> tuple[dict[str, HookPoint], dict[str, AttentionSite]]:
    """Canonical hook points and attention sites of a stack, names prefixed (``text.`` for a text tower)."""
    points: dict[str, HookPoint] = {}
    sites: dict[str, AttentionSite] = {}
    for i, block in enumerate(stack.blocks):
        name = f"{prefix}blocks.{i}"
        site = AttentionSite.detect(stack.attn[i], causal=stack.causal)
        sites[f"{name}.attn"] = site
        points[f"{name}.resid_pre"] = HookPoint(block, kind="input")
        points[f"{name}.ln1"] = HookPoint(stack.ln1[i])
        points[f"{name}.attn_out"] = HookPoint(stack.attn[i], transform=site.grad_output_batch_first)
        points[f"{name}.mlp_out"] = HookPoint(stack.mlp[i])
        points[f"{name}.resid_post"] = HookPoint(block)
    return points, sites
