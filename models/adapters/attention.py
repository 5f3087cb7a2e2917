"""Attention patterns recomputed from a block's own input and its attention module's own weights.

Fast kernels (SDPA, flash, nn.MultiheadAttention with need_weights=False, timm's fused path) never materialise
the (tokens x tokens) pattern. Rather than swap them for slow eager code, clipscope records the tensor that enters
the attention module and recomputes softmax(Q K^T / sqrt(d)) from it with the module's own projection weights
(and its q/k norms where it has them). The gradient of the loss with respect to the pattern follows from the
gradient at the module's output: out = concat_h(A_h V_h) W_o^T + b, so dL/dA_h = (dL/dout W_o)_h V_h^T.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import UnknownArchitectureError

KINDS = ("mha", "open_clip", "timm", "hf")


@dataclass
class AttentionSite:
    """One self-attention module and what is needed to recompute its pattern.

    kind: "mha" (torch nn.MultiheadAttention), "open_clip" (open_clip's custom Attention),
    "timm" (timm.layers.Attention), "hf" (transformers modules with q_proj / k_proj / v_proj).
    """

    module: nn.Module
    kind: str
    num_heads: int
    head_dim: int
    scale: float
    causal: bool = False

    @classmethod
    def detect(cls, module: nn.Module, causal: bool = False) -> AttentionSite:
        """Recognise the attention implementation of ``module``."""
        if isinstance(module, nn.MultiheadAttention):
            if not module._qkv_same_embed_dim:
                raise UnknownArchitectureError("nn.MultiheadAttention with separate key/value sizes is not supported.")
            return cls(module, "mha", module.num_heads, module.head_dim, module.head_dim ** -0.5, causal)
        if hasattr(module, "in_proj_weight") and hasattr(module, "ln_q"):
            return cls(module, "open_clip", module.num_heads, module.head_dim, module.scale, causal)
        if hasattr(module, "qkv") and hasattr(module, "q_norm") and hasattr(module, "num_heads"):
            return cls(module, "timm", module.num_heads, module.head_dim, module.scale, causal)
        if all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj")):
            head_dim = module.head_dim
            heads = module.q_proj.out_features // head_dim
            scale = getattr(module, "scaling", getattr(module, "scale", head_dim ** -0.5))
            return cls(module, "hf", heads, head_dim, float(scale), causal)
        raise UnknownArchitectureError(f"Unrecognised attention module {type(module).__name__}.")

    # -- reading the call ---------------------------------------------------------------------------------------
    def input_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The (batch, tokens, dim) tensor entering the module, from a forward pre-hook's args/kwargs."""
        x = args[0] if args else next(
            kwargs[k] for k in ("query", "hidden_states", "x", "q_x") if k in kwargs)
        if self.kind == "mha" and not self.module.batch_first:
            x = x.transpose(0, 1)
        return x

    def output_of(self, output) -> torch.Tensor:
        """The module's output tensor, as it appears in the graph (sequence-first for non batch_first MHA)."""
        return output[0] if isinstance(output, tuple) else output

    # -- recomputation -------------------------------------------------------------------------------------------
    def _split(self, t: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = t.shape
        return t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv(self, x: torch.Tensor, with_v: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Q, K, V as (batch, heads, tokens, head_dim), after the module's q/k norms (V skipped unless with_v)."""
        m = self.module
        parts = 3 if with_v else 2
        if self.kind in ("mha", "open_clip", "timm"):
            weight, bias = (m.in_proj_weight, m.in_proj_bias) if self.kind != "timm" else (m.qkv.weight, m.qkv.bias)
            rows = weight.shape[0] // 3 * parts
            projected = F.linear(x, weight[:rows], None if bias is None else bias[:rows]).chunk(parts, dim=-1)
        else:
            projected = (m.q_proj(x), m.k_proj(x)) + ((m.v_proj(x),) if with_v else ())
        q, k = self._split(projected[0]), self._split(projected[1])
        v = self._split(projected[2]) if with_v else None
        if self.kind == "open_clip":
            q, k = m.ln_q(q), m.ln_k(k)
        elif self.kind == "timm":
            q, k = m.q_norm(q), m.k_norm(k)
        return q, k, v

    def projection_modules(self) -> list[nn.Module]:
        """Modules whose outputs already hold Q, K, V during the forward (none for fused in-projections)."""
        if self.kind == "hf":
            return [self.module.q_proj, self.module.k_proj, self.module.v_proj]
        if self.kind == "timm":
            return [self.module.qkv]
        return []

    def qkv_from_projections(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V from the recorded outputs of :meth:`projection_modules` (no recomputation)."""
        q, k, v = outputs if len(outputs) == 3 else outputs[0].chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        if self.kind == "timm":
            q, k = self.module.q_norm(q), self.module.k_norm(k)
        return q, k, v

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Scaled, masked attention logits in float32: the softmax input."""
        q, k = q.float(), k.float()
        cosine_scale = getattr(self.module, "logit_scale", None) if self.kind == "open_clip" else None
        if cosine_scale is not None:
            logit_scale = torch.clamp(cosine_scale.float(), max=self.module.logit_scale_max).exp()
            scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * logit_scale
        else:  # scaling Q (tokens x head_dim) is cheaper than scaling the (tokens x tokens) scores
            scores = (q * self.scale) @ k.transpose(-1, -2)
        if self.causal:
            tokens = scores.shape[-1]
            blocked = torch.ones(tokens, tokens, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(blocked, float("-inf"))
        return scores

    def pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax over keys: (batch, heads, query, key), rows summing to one."""
        return self.scores(q, k).softmax(dim=-1)

    # -- gradients -----------------------------------------------------------------------------------------------
    def _output_weight_and_head_scale(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.module
        if self.kind == "mha":
            return m.out_proj.weight, None
        if self.kind == "open_clip":
            if not isinstance(m.ln_inner, nn.Identity):
                raise UnknownArchitectureError("Pattern gradients need a linear output path (open_clip inner norm).")
            return m.out_proj.weight, m.head_scale
        if self.kind == "timm":
            if not isinstance(m.norm, nn.Identity) or getattr(m, "gate", None) is not None:
                raise UnknownArchitectureError("Pattern gradients need a linear output path (timm scale norm/gate).")
            return m.proj.weight, None
        out = getattr(m, "o_proj", None) or getattr(m, "out_proj", None)
        if out is None:
            raise UnknownArchitectureError(f"{type(m).__name__} has no output projection clipscope recognises.")
        return out.weight, None

    def pattern_grad(self, v: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        """dL/dA (batch, heads, query, key) from V and dL/d(module output) (batch, tokens, dim)."""
        weight, head_scale = self._output_weight_and_head_scale()
        grad_heads = self._split(grad_output.float() @ weight.float())
        if head_scale is not None:
            grad_heads = grad_heads * head_scale.float()
        return grad_heads @ v.float().transpose(-1, -2)

    def grad_output_batch_first(self, grad: torch.Tensor) -> torch.Tensor:
        """The output gradient as (batch, tokens, dim) whatever the module's layout."""
        if self.kind == "mha" and not self.module.batch_first:
            return grad.transpose(0, 1)
        return grad
