"""CLIP's image embedding as a sum of direct contributions (Gandelsman, Efros & Steinhardt, ICLR 2024).

A pre-norm ViT's class token after the last block is the sum of what each piece wrote into the residual stream:

    x_cls = e_cls + sum_l [ s1_l * (sum_{h,t} A_lh[cls, t] V_lh[t] W_o,h^T + b_o,l) + s2_l * mlp_l[cls] ]

(e: the embedded sequence after any ln_pre; A, V: head h's pattern and values; W_o,h: that head's slice of the
output projection; s1, s2: layer scales). The final norm is linear once its statistics are fixed to the image's own
(centre, divide by the image's std, times gamma; beta is a term of its own), and the projection after it is affine,
so the embedding is the sum of every term pushed through ``norm -> projection``. Everything is read with
``model.capture`` from the native forward; the terms are checked against the model's own tensors on the way (block
by block, and the total against ``encode_image``), so an architecture that breaks an assumption raises
:class:`NotDecomposableError` naming what broke instead of returning a wrong sum.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.adapters.base import ModelAdapter
from models.errors import ClipscopeModelError, UnknownArchitectureError

CHECK_TOLERANCE = 1e-3   # relative; a structural mismatch is orders of magnitude larger than float32 rounding
HALF_CHECK_TOLERANCE = 5e-2   # bf16 / fp16 weights and activations: each stored tensor is rounded to ~3 digits
_LAYER_SCALES = (("ls_1", "ls1", "layer_scale1", "gamma_1"), ("ls_2", "ls2", "layer_scale2", "gamma_2"))


class NotDecomposableError(ClipscopeModelError, NotImplementedError):
    """The image tower's embedding is not a linear sum of layer, head and token terms that clipscope can read."""


@dataclass
class ImageDecomposition:
    """Direct contributions to the image embedding (the model's own ``encode_image`` output), all (…, dim).

    ``heads`` (batch, layers, heads, dim) sums each head over tokens; ``head_tokens`` (batch, layers, heads,
    tokens, dim) keeps the token axis where asked for. ``total()`` == ``embedding`` to float precision.
    """

    embeddings: torch.Tensor     # (batch, dim): patch + position + class embeddings (after ln_pre)
    heads: torch.Tensor          # (batch, layers, heads, dim)
    attn_bias: torch.Tensor      # (batch, layers, dim): each attention's output-projection bias
    mlps: torch.Tensor           # (batch, layers, dim)
    norm_bias: torch.Tensor      # (batch, dim): the final norm's beta (and any projection bias)
    embedding: torch.Tensor      # (batch, dim): the model's own image embedding
    head_tokens: torch.Tensor | None = None   # (batch, layers, heads, tokens, dim)

    @property
    def num_layers(self) -> int:
        return self.heads.shape[1]

    @property
    def num_heads(self) -> int:
        return self.heads.shape[2]

    def attention(self) -> torch.Tensor:
        """Each layer's whole attention term (heads + bias): (batch, layers, dim)."""
        return self.heads.sum(dim=2) + self.attn_bias

    def total(self) -> torch.Tensor:
        """The sum of every term: (batch, dim)."""
        return self.embeddings + self.attention().sum(dim=1) + self.mlps.sum(dim=1) + self.norm_bias

    def relative_error(self) -> float:
        """max over images of |total - embedding| / |embedding|."""
        error = (self.total() - self.embedding).norm(dim=-1) / self.embedding.norm(dim=-1).clamp_min(1e-12)
        return float(error.max())


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12))


def _layer_scale(block: nn.Module, names: tuple[str, ...]):
    """The block's per-channel scale after a sub-layer (a LayerScale module or a gamma vector), or identity."""
    for name in names:
        scale = getattr(block, name, None)
        if isinstance(scale, nn.Module):
            return scale
        if torch.is_tensor(scale):
            return lambda x, scale=scale: x * scale.float()
    return lambda x: x


def _output_projection(site) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(W_o (dim, heads*head_dim), its bias or None, per-head scale or None) of one attention site."""
    try:
        weight, head_scale = site.output_projection()
    except (UnknownArchitectureError, NotImplementedError) as exc:
        raise NotDecomposableError(f"{site.kind}: the heads' output path is not linear ({exc})") from exc
    linear = next((m for m in site.module.modules() if isinstance(m, nn.Linear) and m.weight is weight), None)
    bias = None if linear is None else linear.bias
    return weight, bias, head_scale


def decomposition_problem(model: ModelAdapter) -> str | None:
    """Why the image embedding of ``model`` cannot be decomposed (from its structure alone), or None if it can."""
    tower = model.image_tower
    layout = getattr(tower, "layout", None)
    if not model.has_text:
        return "the decomposition is of a CLIP image embedding; this model has no text tower."
    if layout is None or "blocks.0.attn" not in tower.sites or not hasattr(layout, "readout"):
        return (f"the image tower ({tower.family}, {type(tower.module).__name__}) is not a plain ViT: the "
                "decomposition reads a class token after a stack of transformer blocks.")
    if layout.readout != "cls" or not tower.prefix_tokens or tower.prefix_tokens[0] != "cls":
        return (f"the image tower reads out by {layout.readout!r}, not a class token: decomposing through an "
                f"{layout.readout.replace('_', ' ')} readout is not implemented.")
    if layout.final_norm is None or not isinstance(layout.final_norm, nn.LayerNorm):
        kind = "none" if layout.final_norm is None else type(layout.final_norm).__name__
        return f"the final norm is {kind}, not a LayerNorm the decomposition can treat as linear."
    if layout.readout_projection is None:
        return "the backend does not name the projection after the final norm."
    return None


def can_decompose(model: ModelAdapter) -> bool:
    """Does :func:`decompose_image` apply to ``model``? (see :func:`decomposition_problem`)"""
    return decomposition_problem(model) is None


def _capture_names(num_layers: int) -> list[str]:
    names = ["blocks.0.resid_pre"]
    for i in range(num_layers):
        names += [f"blocks.{i}.attn.v", f"blocks.{i}.attn.pattern", f"blocks.{i}.attn_out", f"blocks.{i}.mlp_out",
                  f"blocks.{i}.resid_post"]
    return names + ["final_norm"]


@torch.no_grad()
def decompose_image(model: ModelAdapter, pixels: torch.Tensor, tokens: bool = False) -> ImageDecomposition:
    """Decompose the image embeddings of ``pixels`` (preprocessed, (batch, 3, H, W)) into direct contributions.

    ``tokens=True`` keeps each head's contribution per source token (``head_tokens``); otherwise heads are summed
    over tokens. Raises :class:`NotDecomposableError` where the tower is not a sum of such terms.
    """
    problem = decomposition_problem(model)
    if problem is not None:
        raise NotDecomposableError(f"{model.model_id}: {problem}")
    tower = model.image_tower
    layout = tower.layout
    layers = tower.num_layers
    dtype = next(iter(tower.module.parameters())).dtype
    tolerance = CHECK_TOLERANCE if dtype in (torch.float32, torch.float64) else HALF_CHECK_TOLERANCE
    with tower.capture(_capture_names(layers)) as cache:
        embedding = model.encode_image(pixels).float()
    embed = cache["blocks.0.resid_pre"][:, 0].float()
    heads, head_tokens, biases, mlps = [], [], [], []
    stream = embed
    for i in range(layers):
        site = tower.sites[f"blocks.{i}.attn"]
        block = layout.blocks[i]
        weight, bias, head_scale = _output_projection(site)
        pattern = cache[f"blocks.{i}.attn.pattern"][:, :, 0].float()        # (batch, heads, tokens): cls row
        values = cache[f"blocks.{i}.attn.v"].float()                          # (batch, heads, tokens, head_dim)
        mixed = pattern[..., None] * values
        if head_scale is not None:
            mixed = mixed * head_scale.float().reshape(1, -1, 1, 1)
        w_heads = weight.float().reshape(weight.shape[0], site.num_heads, site.head_dim)   # (dim, heads, hd)
        per_token = torch.einsum("bhtk,dhk->bhtd", mixed, w_heads)            # (batch, heads, tokens, dim)
        b_o = torch.zeros_like(embed) if bias is None else bias.float().expand_as(embed)
        attn_out = cache[f"blocks.{i}.attn_out"][:, 0].float()
        if _relative(per_token.sum(dim=(1, 2)) + b_o, attn_out) > tolerance:
            raise NotDecomposableError(
                f"{model.model_id}: block {i}'s attention output ({site.kind}) is not the sum of its heads through "
                "the output projection (an inner norm or gate after the heads?).")
        scale_attn, scale_mlp = (_layer_scale(block, names) for names in _LAYER_SCALES)
        per_token, b_o = scale_attn(per_token), scale_attn(b_o)
        mlp = scale_mlp(cache[f"blocks.{i}.mlp_out"][:, 0].float())
        stream = stream + per_token.sum(dim=(1, 2)) + b_o + mlp
        if _relative(stream, cache[f"blocks.{i}.resid_post"][:, 0].float()) > tolerance:
            raise NotDecomposableError(
                f"{model.model_id}: block {i} ({type(block).__name__}) does not write input + attention + MLP into "
                "its residual stream (a post-norm block, or a norm after the attention?).")
        heads.append(per_token.sum(dim=2))
        head_tokens.append(per_token if tokens else None)
        biases.append(b_o)
        mlps.append(mlp)

    norm = layout.final_norm
    centre = stream.mean(dim=-1, keepdim=True)
    std = (stream.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    gamma = norm.weight.float() if norm.weight is not None else torch.ones_like(embed[0])
    beta = norm.bias.float() if norm.bias is not None else torch.zeros_like(embed[0])
    normed = cache["final_norm"].float()
    normed = normed[:, 0] if normed.dim() == 3 else normed   # on every token, or on the pooled class token alone
    if _relative((stream - centre) / std * gamma + beta, normed) > tolerance:
        raise NotDecomposableError(f"{model.model_id}: the final norm does not act on the class token alone.")

    offset = layout.readout_projection(torch.zeros_like(embed[:1]).to(dtype)).float()   # the projection's bias

    def through_head(term: torch.Tensor) -> torch.Tensor:
        """A residual-stream term through the frozen norm (no beta) and the linear part of the projection."""
        s = std.reshape(std.shape[0], *([1] * (term.dim() - 1)))
        normed = (term - term.mean(dim=-1, keepdim=True)) / s * gamma
        return layout.readout_projection(normed.to(dtype)).float() - offset

    result = ImageDecomposition(   # on the CPU: the analyses meet text embeddings there, and sets add up there
        embeddings=through_head(embed).cpu(),
        heads=through_head(torch.stack(heads, dim=1)).cpu(),
        attn_bias=through_head(torch.stack(biases, dim=1)).cpu(),
        mlps=through_head(torch.stack(mlps, dim=1)).cpu(),
        norm_bias=layout.readout_projection(beta.expand_as(embed).to(dtype)).float().cpu(),
        embedding=embedding.cpu(),
        head_tokens=through_head(torch.stack(head_tokens, dim=1)).cpu() if tokens else None,
    )
    if result.relative_error() > tolerance:
        raise NotDecomposableError(
            f"{model.model_id}: the terms do not add up to the image embedding (relative error "
            f"{result.relative_error():.1e}): the head after the final norm is not affine.")
    return result
