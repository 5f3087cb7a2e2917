"""Hugging Face transformers attention kinds beyond plain ``q_proj``/``k_proj``/``v_proj`` self-attention.

- :class:`HFEncoderAttentionSite`: BERT / RoBERTa / XLM-R style self-attention (``query``/``key``/``value`` Linear
  layers, the ``.self`` of ``layer.attention``), as in ChineseCLIP's and AltCLIP's text towers and open_clip's
  XLM-R text towers. The site is the ``.self`` module: its output is the concatenated heads, before the
  ``attention.output`` dense + residual + LayerNorm, so the linear map from heads to its output is the identity.
- :class:`HFRotaryAttentionSite`: attention modules called with ``position_embeddings=(cos, sin)`` (DINOv3): the
  rotary tables are recorded from the call and applied with the modeling module's own ``apply_rotary_pos_emb``
  (which leaves the prefix tokens, CLS and registers, unrotated).

Additive biases passed as ``attention_mask`` (BEiT's relative position bias, shared or per layer, plus any padding
mask) are what :class:`~models.adapters.attention.HFAttentionSite` already adds: transformers folds the bias into the
``attention_mask`` argument before calling the attention module, and the site records that argument.
"""
from __future__ import annotations

import inspect
import sys

import torch

from models.adapters.attention import HFAttentionSite
from models.errors import UnknownArchitectureError


class HFEncoderAttentionSite(HFAttentionSite):
    """BERT-style self-attention: ``query``/``key``/``value`` Linear layers and ``num_attention_heads``."""

    @classmethod
    def matches(cls, module):
        return all(hasattr(module, name) for name in ("query", "key", "value", "num_attention_heads"))

    @classmethod
    def build(cls, module, causal=False):
        heads = int(module.num_attention_heads)
        head_dim = int(module.attention_head_size)
        scale = getattr(module, "scaling", head_dim ** -0.5)
        return cls(module, heads, head_dim, float(scale), causal)

    def project(self, x, with_v):
        m = self.module
        return [m.query(x), m.key(x)] + ([m.value(x)] if with_v else [])

    def projection_modules(self):
        return [self.module.query, self.module.key, self.module.value]

    def output_projection(self):
        width = self.num_heads * self.head_dim
        weight = self.module.query.weight
        return torch.eye(width, dtype=weight.dtype, device=weight.device), None


class HFRotaryAttentionSite(HFAttentionSite):
    """HF attention taking ``position_embeddings=(cos, sin)`` and rotating Q and K with its module's own function."""

    priority = 1

    @classmethod
    def matches(cls, module):
        return super().matches(module) and "position_embeddings" in inspect.signature(module.forward).parameters

    @classmethod
    def build(cls, module, causal=False):
        if getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb", None) is None:
            raise UnknownArchitectureError(
                f"{type(module).__name__} takes rotary positions but its module has no apply_rotary_pos_emb.")
        return super().build(module, causal)

    def context_of(self, args, kwargs):
        context = super().context_of(args, kwargs)
        rotary = kwargs.get("position_embeddings")
        if rotary is None and len(args) > 2:
            rotary = args[2]
        if rotary is not None:
            context["position_embeddings"] = rotary
        return context

    def norm_qk(self, q, k, context):
        rotary = context.get("position_embeddings")
        if rotary is None:
            return q, k
        cos, sin = rotary
        apply = sys.modules[type(self.module).__module__].apply_rotary_pos_emb
        return apply(q, k, cos.to(q.dtype), sin.to(q.dtype))
