"""Window attention kinds: attention restricted to windows of a stage grid (Swin, MaxViT) or over the whole grid
(FastViT / MobileCLIP attention stages), each with the relative position bias and shift mask of the module itself.

Every kind's pattern is laid out as the module computes it: (batch * windows, heads, window_tokens, window_tokens),
batch-major (window ``w`` of image ``b`` is row ``b * windows + w``). Where a window's tokens sit on the stage grid
is :meth:`WindowAttentionSite.positions`: the block's own pad / roll / partition applied to a map of grid indices,
so the placement follows the module's code rather than a second description of it.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters.attention import AttentionSite, _fused_in_projection

# (1, H, W, 1) channels-last map -> (windows, tokens, 1): how a block cuts its stage grid into windows
Partition = Callable[[torch.Tensor], torch.Tensor]


class WindowAttentionSite(AttentionSite):
    """Attention over windows of a stage grid. ``partition`` (set by the backend's layout, or by the kind itself
    when the module partitions internally) says where each window token sits; ``partition_kind`` names it for views:
    "window", "shifted window", "grid" (MaxViT's dilated grid) or "global" (one window = the whole grid)."""

    priority = 10
    partition: Partition | None = None
    partition_kind: str = "window"

    def describe(self, grid: tuple[int, int]) -> str:
        """The partition on ``grid``: a "shifted window" partition whose shift the block drops on this grid (the
        window covers it) is a plain "window" one: the first window then starts at the grid's first cell."""
        if self.partition_kind == "shifted window" and int(self.positions(grid)[0, 0]) == 0:
            return "window"
        return self.partition_kind

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """(windows, tokens) flat grid index (row * W + col) of every window token; -1 for padding tokens."""
        if self.partition is None:
            raise ValueError(f"{self.kind}: no window partition was given for this site.")
        height, width = grid
        index = torch.arange(1, height * width + 1, dtype=torch.float32).reshape(1, height, width, 1)
        windows = self.partition(index)
        return windows.reshape(windows.shape[0], -1).round().long() - 1


def _windows_mask(mask: torch.Tensor, batch_windows: int) -> torch.Tensor:
    """A per-window additive mask (windows, N, N) as (batch * windows, 1, N, N), batch-major like the windows."""
    windows, tokens = mask.shape[0], mask.shape[-1]
    return mask.reshape(1, windows, 1, tokens, tokens).expand(batch_windows // windows, -1, -1, -1, -1).reshape(
        batch_windows, 1, tokens, tokens)


class TimmWindowAttentionSite(WindowAttentionSite):
    """timm ``WindowAttention`` (Swin): called on partitioned windows with the block's shift mask as ``mask``."""

    @classmethod
    def matches(cls, module):
        return hasattr(module, "_get_rel_pos_bias") and hasattr(module, "qkv") and hasattr(module, "window_area")

    @classmethod
    def build(cls, module, causal=False):
        heads = module.num_heads
        return cls(module, heads, module.qkv.out_features // 3 // heads, module.scale)

    def context_of(self, args, kwargs):
        mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
        return {"mask": mask} if mask is not None else {}

    def project(self, x, with_v):
        return _fused_in_projection(self.module.qkv.weight, self.module.qkv.bias, x, with_v)

    def projection_modules(self):
        return [self.module.qkv]

    def bias(self, q, k, context):
        return self.module._get_rel_pos_bias()

    def mask(self, q, k, context):
        given = context.get("mask")
        return None if given is None else _windows_mask(given, q.shape[0])

    def output_projection(self):
        return self.module.proj.weight, None


class HFSwinAttentionSite(WindowAttentionSite):
    """transformers ``SwinAttention``: q/k/v projections, ``relative_position_bias()``, shift mask as 2nd argument."""

    @classmethod
    def matches(cls, module):
        return hasattr(module, "q_proj") and isinstance(getattr(module, "relative_position_bias", None), nn.Module)

    @classmethod
    def build(cls, module, causal=False):
        return cls(module, module.num_attention_heads, module.head_dim, module.scaling)

    def context_of(self, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        return {"mask": mask} if mask is not None else {}

    def project(self, x, with_v):
        m = self.module
        return [m.q_proj(x), m.k_proj(x)] + ([m.v_proj(x)] if with_v else [])

    def projection_modules(self):
        return [self.module.q_proj, self.module.k_proj, self.module.v_proj]

    def bias(self, q, k, context):
        return self.module.relative_position_bias()

    def mask(self, q, k, context):
        given = context.get("mask")
        return None if given is None else _windows_mask(given, q.shape[0])

    def output_projection(self):
        return self.module.o_proj.weight, None


class TorchvisionWindowAttentionSite(WindowAttentionSite):
    """torchvision ``ShiftedWindowAttention`` (and V2): takes the whole (B, H, W, C) map and windows it inside
    ``shifted_window_attention``; :meth:`windows` repeats that function's padding, roll and partition."""

    @classmethod
    def matches(cls, module):
        return all(hasattr(module, n) for n in ("get_relative_position_bias", "shift_size", "window_size", "qkv"))

    @classmethod
    def build(cls, module, causal=False):
        heads = module.num_heads
        dim = module.qkv.in_features
        site = cls(module, heads, dim // heads, (dim // heads) ** -0.5)
        site.partition = site.windows
        site.partition_kind = "shifted window" if any(module.shift_size) else "window"
        return site

    def _geometry(self, height: int, width: int) -> tuple[int, int, list[int]]:
        """(padded H, padded W, shift) exactly as shifted_window_attention derives them."""
        window = self.module.window_size
        pad_h = height + (window[0] - height % window[0]) % window[0]
        pad_w = width + (window[1] - width % window[1]) % window[1]
        shift = list(self.module.shift_size)
        if window[0] >= pad_h:
            shift[0] = 0
        if window[1] >= pad_w:
            shift[1] = 0
        return pad_h, pad_w, shift

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B * windows, window tokens, C): pad, roll by -shift, partition."""
        batch, height, width, channels = x.shape
        window = self.module.window_size
        pad_h, pad_w, shift = self._geometry(height, width)
        x = F.pad(x, (0, 0, 0, pad_w - width, 0, pad_h - height))
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = x.view(batch, pad_h // window[0], window[0], pad_w // window[1], window[1], channels)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], channels)

    def input_of(self, args, kwargs):
        return self.windows(super().input_of(args, kwargs))

    def context_of(self, args, kwargs):
        x = super().input_of(args, kwargs)
        return {"grid": tuple(x.shape[1:3])}

    def grad_output_batch_first(self, grad):
        return self.windows(grad) if grad.ndim == 4 else grad

    def project(self, x, with_v):
        bias = self.module.qkv.bias
        if bias is not None and hasattr(self.module, "logit_scale"):  # V2 zeroes the key bias, as the function does
            bias = bias.clone()
            bias[bias.numel() // 3: 2 * bias.numel() // 3] = 0
        return _fused_in_projection(self.module.qkv.weight, bias, x, with_v)

    def logits(self, q, k):
        logit_scale = getattr(self.module, "logit_scale", None)
        if logit_scale is None:
            return super().logits(q, k)
        scale = torch.clamp(logit_scale.float(), max=math.log(100.0)).exp()
        return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * scale

    def bias(self, q, k, context):
        return self.module.get_relative_position_bias()

    def mask(self, q, k, context):
        """The shift mask of shifted_window_attention: -100 between tokens of different regions of the roll."""
        pad_h, pad_w, shift = self._geometry(*context["grid"])
        if sum(shift) == 0:
            return None
        window = self.module.window_size
        regions = q.new_zeros((pad_h, pad_w))
        count = 0
        for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
            for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
                regions[h[0]:h[1], w[0]:w[1]] = count
                count += 1
        regions = regions.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
        regions = regions.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
        mask = regions.unsqueeze(1) - regions.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        return _windows_mask(mask, q.shape[0])

    def output_projection(self):
        return self.module.proj.weight, None


class MaxVitAttentionSite(WindowAttentionSite):
    """torchvision MaxViT ``RelativePositionalMultiHeadAttention``: input (B, groups, P, D) from the layer's own
    window or grid partition; relative position bias from its table (its scale is feat_dim ** -0.5, on K)."""

    @classmethod
    def matches(cls, module):
        return hasattr(module, "to_qkv") and hasattr(module, "get_relative_positional_bias")

    @classmethod
    def build(cls, module, causal=False):
        return cls(module, module.n_heads, module.head_dim, module.scale_factor)

    def input_of(self, args, kwargs):
        x = super().input_of(args, kwargs)
        return x.reshape(-1, *x.shape[-2:])

    def grad_output_batch_first(self, grad):
        return grad.reshape(-1, *grad.shape[-2:])

    def project(self, x, with_v):
        return _fused_in_projection(self.module.to_qkv.weight, self.module.to_qkv.bias, x, with_v)

    def bias(self, q, k, context):
        return self.module.get_relative_positional_bias()

    def output_projection(self):
        return self.module.merge.weight, None


class FastVitAttentionSite(WindowAttentionSite):
    """timm FastViT / MobileCLIP ``Attention``: global self-attention over a channels-first (B, C, H, W) stage map
    (one window: the whole grid)."""

    partition_kind = "global"

    @classmethod
    def matches(cls, module):
        return type(module).__module__.endswith("fastvit") and hasattr(module, "qkv") and hasattr(module, "num_heads")

    @classmethod
    def build(cls, module, causal=False):
        site = cls(module, module.num_heads, module.head_dim, module.scale)
        site.partition = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
        return site

    def input_of(self, args, kwargs):
        x = super().input_of(args, kwargs)
        return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x

    def grad_output_batch_first(self, grad):
        return grad.flatten(2).transpose(1, 2) if grad.ndim == 4 else grad

    def project(self, x, with_v):
        return _fused_in_projection(self.module.qkv.weight, self.module.qkv.bias, x, with_v)

    def projection_modules(self):
        return [self.module.qkv]

    def output_projection(self):
        return self.module.proj.weight, None

