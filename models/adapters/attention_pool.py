"""Attention pooling: a learned probe (one or more latent queries) attends over a tower's output tokens.

Three module kinds, each recomputed from the tokens entering the pool head and the head's own weights:

- timm ``AttentionPoolLatent`` (SigLIP / PE-Core MAP head): ``q`` from ``latent``, ``kv`` from the tokens
  (plus the head's ``pos_embed`` if any), q/k norms, optional ``attn_mask``;
- transformers ``SiglipMultiheadAttentionPoolingHead``: ``attention(probe, x, x)`` through ``nn.MultiheadAttention``;
- open_clip CoCa ``AttentionalPooler``: ``attn(ln_q(query), ln_k(x), ln_k(x))`` through ``nn.MultiheadAttention``.

Cross-attention: the query comes from the probe, keys and values from the recorded input, so ``pattern`` is
(batch, heads, probes, tokens). How to use it from a backend's layout::

    ViTLayout(..., readout="attention_pool", pool=model.attn_pool, pool_skips_prefix=False)

and :class:`models.adapters.vit.ViTAdapter` registers the site ``pool.attn`` (built by :func:`pool_site`) and the
point ``pool`` (the head's output). Convention agreed with viz/: the pattern's keys are ALL tokens of the last
block's output, prefix tokens first, then patches. A head that is fed the patches only (timm's
``pool_include_prefix=False``) gets -inf scores, hence zero attention, on the prefix columns it never sees.

Pattern gradients are read at the head's attention output projection (:meth:`AttentionSite.output_module`), where
out = concat_h(A_h V_h) W_o^T + b is linear in the pattern; the MLP after it does not matter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters.attention import AttentionSite, Context
from models.errors import UnknownArchitectureError


class AttentionPoolSite(AttentionSite):
    """Common part of every probe-queries-tokens head: prefix padding of the keys and the probe's projections."""

    skipped_prefix: int = 0   # leading tokens of the last block's output the head is not given

    def probe(self, batch: int) -> torch.Tensor:
        """The probe queries as the head feeds them to its attention, (batch, probes, dim)."""
        raise NotImplementedError

    def context_of(self, args, kwargs):
        mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        return {"attn_mask": mask} if mask is not None else {}

    def mask(self, q, k, context):
        given = context.get("attn_mask")   # SDPA semantics: boolean True = attend, float = additive
        return given

    def scores(self, q: torch.Tensor, k: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        scores = super().scores(q, k, context)
        if not self.skipped_prefix:
            return scores
        blocked = scores.new_full((*scores.shape[:-1], self.skipped_prefix), float("-inf"))
        return torch.cat([blocked, scores], dim=-1)

    def pattern_grad(self, v: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        grad = super().pattern_grad(v, grad_output)
        if not self.skipped_prefix:
            return grad
        return torch.cat([grad.new_zeros((*grad.shape[:-1], self.skipped_prefix)), grad], dim=-1)


class TimmLatentPoolSite(AttentionPoolSite):
    """timm ``AttentionPoolLatent``: learned ``latent`` probes, ``q`` / ``kv`` linears, q/k norms, output ``proj``."""

    @classmethod
    def matches(cls, module):
        return all(hasattr(module, name) for name in ("latent", "kv", "q", "q_norm", "num_heads"))

    @classmethod
    def build(cls, module, causal=False):
        return cls(module, module.num_heads, module.head_dim, module.scale)

    def probe(self, batch):
        return self.module.latent.expand(batch, -1, -1)

    def project(self, x, with_v):
        m = self.module
        if m.pos_embed is not None:
            x = x + m.pos_embed.unsqueeze(0).to(x.dtype)
        q = m.q(self.probe(x.shape[0]).to(x.dtype))
        k, v = m.kv(x).chunk(2, dim=-1)   # kv's rows are (key | value), each heads * head_dim
        return [q, k] + ([v] if with_v else [])

    def norm_qk(self, q, k, context):
        return self.module.q_norm(q), self.module.k_norm(k)

    def output_module(self):
        return self.module.proj

    def output_projection(self):
        proj = self.module.proj
        if isinstance(proj, nn.Identity):   # out_features=0: the head returns concat_h(A_h V_h) itself
            dim = self.num_heads * self.head_dim
            return torch.eye(dim, device=self.module.latent.device), None
        return proj.weight, None


def _mha_projections(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                     with_v: bool) -> list[torch.Tensor]:
    """Q from ``query``, K (and V) from ``key``, with nn.MultiheadAttention's own in-projection weights."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise UnknownArchitectureError("nn.MultiheadAttention with add_bias_kv / add_zero_attn is not supported.")
    bias = mha.in_proj_bias
    biases = [None, None, None] if bias is None else list(bias.chunk(3))
    if mha._qkv_same_embed_dim:
        weights = list(mha.in_proj_weight.chunk(3))
    else:
        weights = [mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight]
    q = F.linear(query, weights[0], biases[0])
    k = F.linear(key, weights[1], biases[1])
    return [q, k] + ([F.linear(key, weights[2], biases[2])] if with_v else [])


class MultiheadProbePoolSite(AttentionPoolSite):
    """A learned probe querying the tokens through an ``nn.MultiheadAttention`` (batch-first) inside a pool head.

    Subclasses say where the attention and the probe are, and what the head does to the tokens before it.
    """

    @classmethod
    def attention_of(cls, module: nn.Module) -> nn.MultiheadAttention:
        raise NotImplementedError

    @classmethod
    def build(cls, module, causal=False):
        mha = cls.attention_of(module)
        if not mha.batch_first:
            raise UnknownArchitectureError(f"{type(module).__name__}: sequence-first pool attention is not supported.")
        return cls(module, mha.num_heads, mha.head_dim, mha.head_dim ** -0.5)

    @property
    def attention(self) -> nn.MultiheadAttention:
        return self.attention_of(self.module)

    def keys_of(self, x: torch.Tensor) -> torch.Tensor:
        """What the head passes to its attention as keys and values; the tokens themselves by default."""
        return x

    def context_of(self, args, kwargs):
        return {}

    def mask(self, q, k, context):
        return None

    def project(self, x, with_v):
        return _mha_projections(self.attention, self.probe(x.shape[0]).to(x.dtype), self.keys_of(x), with_v)

    def output_module(self):
        return self.attention

    def output_projection(self):
        return self.attention.out_proj.weight, None


class HFProbePoolSite(MultiheadProbePoolSite):
    """transformers ``SiglipMultiheadAttentionPoolingHead``: ``attention(probe, x, x)``, then norm + MLP."""

    @classmethod
    def matches(cls, module):
        return hasattr(module, "probe") and isinstance(getattr(module, "attention", None), nn.MultiheadAttention)

    @classmethod
    def attention_of(cls, module):
        return module.attention

    def probe(self, batch):
        return self.module.probe.expand(batch, -1, -1)


class OpenClipPoolerSite(MultiheadProbePoolSite):
    """open_clip ``AttentionalPooler`` (CoCa): ``attn(ln_q(query), ln_k(x), ln_k(x))``."""

    @classmethod
    def matches(cls, module):
        return (hasattr(module, "query") and hasattr(module, "ln_q") and hasattr(module, "ln_k")
                and isinstance(getattr(module, "attn", None), nn.MultiheadAttention))

    @classmethod
    def attention_of(cls, module):
        return module.attn

    def probe(self, batch):
        return self.module.ln_q(self.module.query).unsqueeze(0).expand(batch, -1, -1)

    def keys_of(self, x):
        return self.module.ln_k(x)


POOL_KINDS = (TimmLatentPoolSite, HFProbePoolSite, OpenClipPoolerSite)


def pool_site(module: nn.Module, skipped_prefix: int = 0) -> AttentionPoolSite:
    """The attention site of an attention-pool head; ``skipped_prefix`` = leading tokens it is not given."""
    for kind in POOL_KINDS:
        if kind.matches(module):
            site = kind.build(module)
            site.skipped_prefix = int(skipped_prefix)
            return site
    raise UnknownArchitectureError(
        f"Unrecognised attention-pool head {type(module).__module__}.{type(module).__name__} (clipscope recognises "
        "timm AttentionPoolLatent, transformers SiglipMultiheadAttentionPoolingHead, open_clip AttentionalPooler).")
