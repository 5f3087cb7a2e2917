"""Rotary attention: timm ``EvaAttention`` (EVA02, DINOv3 in timm) and ``AttentionRope`` (PE-Core, ...).

Q/K come from a fused ``qkv`` (EvaAttention adds ``q_bias`` / zero ``k_bias`` / ``v_bias`` itself) or from separate
``q_proj`` / ``k_proj`` / ``v_proj``, then the per-head q/k norms, then the rotary position embedding the model
passes in the call (``rope=``, recorded by :meth:`TimmRotaryAttentionSite.context_of`), applied with timm's own
``apply_rot_embed_cat`` to the patch tokens only: the first ``num_prefix_tokens`` (CLS, registers) are left as they
are. Grouped-query attention (fewer K/V heads) repeats each K/V head over its group, as the module does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters.attention import AttentionSite
from models.errors import UnknownArchitectureError


class TimmRotaryAttentionSite(AttentionSite):
    """timm self-attention with rotary positions: ``EvaAttention`` and ``timm.layers.AttentionRope``."""

    priority = 1   # refines TimmAttentionSite, which would also match the fused-qkv form

    @classmethod
    def matches(cls, module):
        return all(hasattr(module, name) for name in ("num_prefix_tokens", "rotate_half", "num_heads", "q_norm"))

    @classmethod
    def build(cls, module, causal=False):
        return cls(module, module.num_heads, module.head_dim, module.scale, causal)

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.module, "num_kv_heads", self.num_heads)

    def context_of(self, args, kwargs):
        context = {}
        for position, name in enumerate(("rope", "attn_mask", "is_causal"), start=1):
            value = kwargs.get(name, args[position] if len(args) > position else None)
            if value is not None and value is not False:
                context[name] = value
        return context

    def project(self, x, with_v):
        m = self.module
        if m.qkv is None:
            return [m.q_proj(x), m.k_proj(x)] + ([m.v_proj(x)] if with_v else [])
        bias = m.qkv.bias
        if getattr(m, "q_bias", None) is not None:   # EvaAttention: q and v biases, a zero k bias
            bias = torch.cat((m.q_bias, m.k_bias, m.v_bias))
        parts = 3 if with_v else 2
        rows = m.qkv.weight.shape[0] // 3 * parts
        return list(F.linear(x, m.qkv.weight[:rows], None if bias is None else bias[:rows]).chunk(parts, dim=-1))

    def projection_modules(self):
        m = self.module
        if m.qkv is None:
            return [m.q_proj, m.k_proj, m.v_proj]
        return [] if getattr(m, "q_bias", None) is not None else [m.qkv]   # EvaAttention adds its bias outside

    def split_heads(self, t):
        batch, tokens, width = t.shape
        return t.reshape(batch, tokens, width // self.head_dim, self.head_dim).transpose(1, 2)

    def _finish(self, projected, context):
        q, k, v = super()._finish(projected, context)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:   # grouped-query attention: head h reads K/V head h // groups
            k = k.repeat_interleave(groups, dim=1)
            v = None if v is None else v.repeat_interleave(groups, dim=1)
        return q, k, v

    def norm_qk(self, q, k, context):
        from timm.layers import apply_rot_embed_cat

        q, k = self.module.q_norm(q), self.module.k_norm(k)
        rope = context.get("rope")
        if rope is None:
            return q, k
        n = self.module.num_prefix_tokens
        half = bool(getattr(self.module, "rotate_half", False))
        q = torch.cat([q[:, :, :n], apply_rot_embed_cat(q[:, :, n:], rope, half=half).type_as(q)], dim=2)
        k = torch.cat([k[:, :, :n], apply_rot_embed_cat(k[:, :, n:], rope, half=half).type_as(k)], dim=2)
        return q, k

    def mask(self, q, k, context):
        if context.get("is_causal"):
            tokens_q, tokens_k = q.shape[-2], k.shape[-2]
            return torch.ones(tokens_q, tokens_k, dtype=torch.bool, device=q.device).tril(tokens_k - tokens_q)
        given = context.get("attn_mask")   # SDPA semantics: boolean True = attend, float = additive
        return given if given is not None else super().mask(q, k, context)

    def mixed_heads_module(self):
        norm = getattr(self.module, "norm", None)
        return norm if norm is not None and not isinstance(norm, nn.Identity) else None

    def output_projection(self):
        m = self.module
        if not isinstance(m.norm, nn.Identity) or getattr(m, "gate", None) is not None:
            raise UnknownArchitectureError("Pattern gradients need a linear output path (timm scale norm/gate).")
        return m.proj.weight, None
