"""Attention patterns recomputed from a block's own input and its attention module's own weights.

Fast kernels (SDPA, flash, nn.MultiheadAttention with need_weights=False, timm's fused path) never materialise
the (tokens x tokens) pattern. Rather than swap them for slow eager code, clipscope records the tensor that enters
the attention module (and the call's keyword arguments: masks, rotary tables, biases) and recomputes

    softmax(Q K^T * scale + bias + mask)

from it with the module's own projection weights, q/k norms and rotary positions. One subclass of
:class:`AttentionSite` per module kind knows how that kind projects Q, K, V, what bias and mask it adds and how its
output is projected; every kind shares :meth:`AttentionSite.scores`. A subclass registers itself by being defined:
``AttentionSite.detect(module)`` asks each kind, most specific first, whether it ``matches`` the module.

The gradient of the loss with respect to the pattern follows from the gradient at the module's output:
out = concat_h(A_h V_h) W_o^T + b, so dL/dA_h = (dL/dout W_o)_h V_h^T.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import UnknownArchitectureError

Context = dict[str, Any]  # what a site recorded of one call besides its input (masks, rotary tables, ...)


class AttentionSite:
    """One attention module and what is needed to recompute its pattern.

    Subclasses override :meth:`matches` and :meth:`build` and whichever of ``project``, ``norm_qk``, ``bias``,
    ``mask`` and ``output_projection`` differ from plain multi-head self-attention.
    """

    kinds: ClassVar[list[type[AttentionSite]]] = []
    priority: ClassVar[int] = 0   # higher is asked first (a subclass that refines another raises it)

    def __init__(self, module: nn.Module, num_heads: int, head_dim: int, scale: float, causal: bool = False):
        self.module = module
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = float(scale)
        self.causal = causal

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        AttentionSite.kinds.append(cls)

    @property
    def kind(self) -> str:
        return type(self).__name__

    # -- recognising a module ------------------------------------------------------------------------------------
    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return False

    @classmethod
    def build(cls, module: nn.Module, causal: bool = False) -> AttentionSite:
        raise NotImplementedError

    @classmethod
    def detect(cls, module: nn.Module, causal: bool = False) -> AttentionSite:
        """The attention implementation of ``module``, by asking every registered kind."""
        for kind in sorted(cls.kinds, key=lambda k: -k.priority):
            if kind.matches(module):
                return kind.build(module, causal=causal)
        known = ", ".join(k.__name__ for k in cls.kinds)
        raise UnknownArchitectureError(
            f"Unrecognised attention module {type(module).__module__}.{type(module).__name__} "
            f"(clipscope recognises: {known}).")

    # -- reading the call ---------------------------------------------------------------------------------------
    def input_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The (batch, tokens, dim) tensor entering the module, from a forward pre-hook's args/kwargs."""
        return args[0] if args else next(kwargs[k] for k in ("query", "hidden_states", "x", "q_x") if k in kwargs)

    def context_of(self, args: tuple, kwargs: dict) -> Context:
        """Whatever else of the call the recomputation needs (a mask, rotary positions); nothing by default."""
        return {}

    def output_module(self) -> nn.Module:
        """The module whose output is concat_h(A_h V_h) W_o^T + b (pattern gradients are read there): the module
        itself, or the inner projection of a pool head whose own output goes on through an MLP."""
        return self.module

    def mixed_heads_module(self) -> nn.Module | None:
        """A module whose INPUT is concat_h(A_h V_h), the heads' mixed values before any norm or projection (timm's
        inner ``norm`` of EVA-style attention); where there is one, pattern gradients are read there and need no
        linear output path: dL/dA_h = (dL/d mixed)_h V_h^T. None: they are read at :meth:`output_module`."""
        return None

    def output_of(self, output) -> torch.Tensor:
        """The output tensor of :meth:`output_module`, as it appears in the graph."""
        return output[0] if isinstance(output, tuple) else output

    def grad_output_batch_first(self, grad: torch.Tensor) -> torch.Tensor:
        """The output (or its gradient) as (batch, tokens, dim) whatever the module's layout."""
        return grad

    # -- recomputation -------------------------------------------------------------------------------------------
    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = t.shape
        return t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def project(self, x: torch.Tensor, with_v: bool) -> list[torch.Tensor]:
        """[Q, K(, V)] as (batch, tokens, heads * head_dim), before the head split."""
        raise NotImplementedError

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's own q/k norms and rotary positions, on (batch, heads, tokens, head_dim); none by default."""
        return q, k

    def qkv(self, x: torch.Tensor, with_v: bool = True, context: Context | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Q, K, V as (batch, heads, tokens, head_dim), after q/k norms and rotary positions (V only if with_v)."""
        projected = self.project(x, with_v)
        return self._finish(projected, context or {})

    def _finish(self, projected: list[torch.Tensor], context: Context):
        q, k = self.split_heads(projected[0]), self.split_heads(projected[1])
        v = self.split_heads(projected[2]) if len(projected) > 2 else None
        q, k = self.norm_qk(q, k, context)
        return q, k, v

    def projection_modules(self) -> list[nn.Module]:
        """Modules whose outputs already hold Q, K, V during the forward (none for fused in-projections)."""
        return []

    def qkv_from_projections(self, outputs: list[torch.Tensor], context: Context | None = None):
        """Q, K, V from the recorded outputs of :meth:`projection_modules` (no recomputation)."""
        parts = outputs if len(outputs) == 3 else list(outputs[0].chunk(3, dim=-1))
        return self._finish(parts, context or {})

    def bias(self, q: torch.Tensor, k: torch.Tensor, context: Context) -> torch.Tensor | None:
        """Additive bias broadcastable to (batch, heads, q_tokens, k_tokens): relative positions; none by default."""
        return None

    def mask(self, q: torch.Tensor, k: torch.Tensor, context: Context) -> torch.Tensor | None:
        """Additive (-inf / 0) or boolean (True = attend) mask broadcastable to the scores; causal if set."""
        if not self.causal:
            return None
        tokens_q, tokens_k = q.shape[-2], k.shape[-2]
        return torch.ones(tokens_q, tokens_k, dtype=torch.bool, device=q.device).tril(tokens_k - tokens_q)

    def logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Q K^T times the module's scale (scaling Q, tokens x head_dim, is cheaper than the scores)."""
        return (q * self.scale) @ k.transpose(-1, -2)

    def scores(self, q: torch.Tensor, k: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        """Scaled, biased, masked attention logits in float32: the softmax input."""
        context = context or {}
        q, k = q.float(), k.float()
        scores = self.logits(q, k)
        bias = self.bias(q, k, context)
        if bias is not None:
            scores = scores + bias.float()
        mask = self.mask(q, k, context)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
        return scores

    def pattern(self, q: torch.Tensor, k: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        """softmax over keys: (batch, heads, query, key), rows summing to one."""
        return self.scores(q, k, context).softmax(dim=-1)

    # -- gradients -----------------------------------------------------------------------------------------------
    def output_projection(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W_o, per-head scale or None): the linear map from the concatenated heads to the module's output."""
        raise NotImplementedError

    def pattern_grad_from_mixed(self, v: torch.Tensor, grad_mixed: torch.Tensor) -> torch.Tensor:
        """dL/dA (batch, heads, query, key) from V and dL/d(concat_h(A_h V_h)) (batch, tokens, heads * head_dim)."""
        return self.split_heads(grad_mixed.float()) @ v.float().transpose(-1, -2)

    def pattern_grad(self, v: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        """dL/dA (batch, heads, query, key) from V and dL/d(module output) (batch, tokens, dim)."""
        weight, head_scale = self.output_projection()
        grad_heads = self.split_heads(grad_output.float() @ weight.float())
        if head_scale is not None:
            grad_heads = grad_heads * head_scale.float()
        return grad_heads @ v.float().transpose(-1, -2)


def _fused_in_projection(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor,
                         with_v: bool) -> list[torch.Tensor]:
    """Q, K(, V) from one stacked (3 * dim, dim) in-projection, computing only the rows needed."""
    parts = 3 if with_v else 2
    rows = weight.shape[0] // 3 * parts
    return list(F.linear(x, weight[:rows], None if bias is None else bias[:rows]).chunk(parts, dim=-1))


def _blocking_mask(given: torch.Tensor, q: torch.Tensor, num_heads: int) -> torch.Tensor:
    """A call's ``attn_mask`` (torch's convention: bool True = blocked, or additive float) as
    :meth:`AttentionSite.mask` returns masks (bool True = attend, or additive); (batch * heads, q, k) stacks
    become (batch, heads, q, k)."""
    if given.dim() == 3:  # one mask per (batch, head), batch-major: open_clip's padding and CoCa class masks
        given = given.reshape(q.shape[0], num_heads, *given.shape[-2:])
    return ~given if given.dtype == torch.bool else given


class MultiheadAttentionSite(AttentionSite):
    """torch ``nn.MultiheadAttention`` (open_clip <= 3.3, torchvision ViT): called with need_weights=False."""

    @classmethod
    def matches(cls, module):
        return isinstance(module, nn.MultiheadAttention)

    @classmethod
    def build(cls, module, causal=False):
        if not module._qkv_same_embed_dim:
            raise UnknownArchitectureError("nn.MultiheadAttention with separate key/value sizes is not supported.")
        return cls(module, module.num_heads, module.head_dim, module.head_dim ** -0.5, causal)

    def input_of(self, args, kwargs):
        x = super().input_of(args, kwargs)
        return x if self.module.batch_first else x.transpose(0, 1)

    def context_of(self, args, kwargs):
        mask = kwargs.get("attn_mask")
        return {"attn_mask": mask} if mask is not None else {}

    def grad_output_batch_first(self, grad):
        return grad if self.module.batch_first else grad.transpose(0, 1)

    def project(self, x, with_v):
        return _fused_in_projection(self.module.in_proj_weight, self.module.in_proj_bias, x, with_v)

    def mask(self, q, k, context):
        given = context.get("attn_mask")
        return super().mask(q, k, context) if given is None else _blocking_mask(given, q, self.num_heads)

    def output_projection(self):
        return self.module.out_proj.weight, None


class OpenClipAttentionSite(AttentionSite):
    """open_clip's own ``Attention`` (scaled-cosine option, q/k norms ``ln_q``/``ln_k``, per-head scale)."""

    @classmethod
    def matches(cls, module):
        return hasattr(module, "in_proj_weight") and hasattr(module, "ln_q")

    @classmethod
    def build(cls, module, causal=False):
        return cls(module, module.num_heads, module.head_dim, module.scale, causal)

    def context_of(self, args, kwargs):
        mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        return {"attn_mask": mask} if mask is not None else {}

    def project(self, x, with_v):
        return _fused_in_projection(self.module.in_proj_weight, self.module.in_proj_bias, x, with_v)

    def norm_qk(self, q, k, context):
        return self.module.ln_q(q), self.module.ln_k(k)

    def mask(self, q, k, context):
        given = context.get("attn_mask")
        return super().mask(q, k, context) if given is None else _blocking_mask(given, q, self.num_heads)

    def logits(self, q, k):
        cosine_scale = getattr(self.module, "logit_scale", None)
        if cosine_scale is None:
            return super().logits(q, k)
        logit_scale = torch.clamp(cosine_scale.float(), max=self.module.logit_scale_max).exp()
        return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * logit_scale

    def output_projection(self):
        if not isinstance(self.module.ln_inner, nn.Identity):
            raise UnknownArchitectureError("Pattern gradients need a linear output path (open_clip inner norm).")
        return self.module.out_proj.weight, self.module.head_scale


class TimmAttentionSite(AttentionSite):
    """timm ``Attention`` (fused qkv, q/k norms), used by timm's VisionTransformer and its relatives."""

    @classmethod
    def matches(cls, module):
        return hasattr(module, "qkv") and hasattr(module, "q_norm") and hasattr(module, "num_heads")

    @classmethod
    def build(cls, module, causal=False):
        return cls(module, module.num_heads, module.head_dim, module.scale, causal)

    def project(self, x, with_v):
        return _fused_in_projection(self.module.qkv.weight, self.module.qkv.bias, x, with_v)

    def norm_qk(self, q, k, context):
        return self.module.q_norm(q), self.module.k_norm(k)

    def projection_modules(self):
        return [self.module.qkv]

    def mixed_heads_module(self):
        norm = getattr(self.module, "norm", None)
        return norm if norm is not None and not isinstance(norm, nn.Identity) else None

    def output_projection(self):
        m = self.module
        if not isinstance(getattr(m, "norm", nn.Identity()), nn.Identity) or getattr(m, "gate", None) is not None:
            raise UnknownArchitectureError("Pattern gradients need a linear output path (timm scale norm/gate).")
        return m.proj.weight, None


class HFAttentionSite(AttentionSite):
    """transformers attention modules with ``q_proj`` / ``k_proj`` / ``v_proj`` (CLIP, ViT, DeiT, DINOv2, ...)."""

    @classmethod
    def matches(cls, module):
        return all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj"))

    @classmethod
    def build(cls, module, causal=False):
        head_dim = module.head_dim
        heads = module.q_proj.out_features // head_dim
        scale = getattr(module, "scaling", getattr(module, "scale", head_dim ** -0.5))
        return cls(module, heads, head_dim, float(scale), causal)

    def context_of(self, args, kwargs):
        mask = kwargs.get("attention_mask")
        return {"attention_mask": mask} if mask is not None else {}

    def project(self, x, with_v):
        m = self.module
        return [m.q_proj(x), m.k_proj(x)] + ([m.v_proj(x)] if with_v else [])

    def projection_modules(self):
        return [self.module.q_proj, self.module.k_proj, self.module.v_proj]

    def mask(self, q, k, context):
        given = context.get("attention_mask")  # transformers passes the prepared additive (or boolean) mask
        if given is None:
            return super().mask(q, k, context)
        return given if given.dtype == torch.bool else given.float()

    def output_projection(self):
        m = self.module
        out = getattr(m, "o_proj", None) or getattr(m, "out_proj", None)
        if out is None:
            raise UnknownArchitectureError(f"{type(m).__name__} has no output projection clipscope recognises.")
        return out.weight, None


# further kinds, each in its own module, register themselves on import
from models.adapters import attention_hf, attention_pool, attention_rotary, attention_window  # noqa: E402, F401
