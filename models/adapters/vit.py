"""Vision-transformer adapter: where each backend keeps its patch embedding, prefix tokens, blocks and norms.

Canonical names (N = block index):
  patch_embed            patch tokens straight out of the patch projection, (batch, patches, dim)
  pos_embed              the position-embedding table as stored, (rows, dim)
  blocks.N.resid_pre     block input (batch, tokens, dim); blocks.0.resid_pre is the embedded sequence
  blocks.N.ln1           the first norm's output: what the attention reads (Grad-CAM on ViTs targets the last one)
  blocks.N.attn.q|k|v    (batch, heads, tokens, head_dim), after q/k norms
  blocks.N.attn.scores   scaled logits Q K^T / sqrt(d), (batch, heads, tokens, tokens)
  blocks.N.attn.pattern  softmax of the scores, rows sum to 1
  blocks.N.attn_out      the attention module's output before the residual add
  blocks.N.mlp_out       the MLP's output before the residual add
  blocks.N.resid_post    block output
  final_norm             the final norm's output
  pool.attn.q|k|v|scores|pattern   readout "attention_pool": the probe's attention, (batch, heads, probes, tokens)
                         over ALL tokens of the last block's output (prefix first, then patches)
  pool                   the attention-pool head's output
  logits | image_embed   classifier logits, or (CLIP) the projected image embedding
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from models.adapters.attention_pool import pool_site
from models.adapters.base import ModelAdapter
from models.adapters.capture import HookPoint
from models.adapters.stack import BlockStack, stack_points
from models.errors import UnknownArchitectureError
from models.preprocess import square


def channels_first_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim, h, w) -> (batch, h*w, dim); tokens already flat pass through."""
    return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x


def channels_last_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(batch, h, w, dim) -> (batch, h*w, dim); tokens already flat pass through."""
    return x.flatten(1, 2) if x.ndim == 4 else x


@dataclass(kw_only=True)
class ViTLayout(BlockStack):
    """The native modules of one ViT, found once per backend."""

    patch_embed: nn.Module
    final_norm: nn.Module | None
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    prefix_tokens: list[str]
    pos_embed: Callable[[], torch.Tensor] | None
    output: nn.Module                      # whose output is the model's result
    output_name: str = "logits"            # "logits" or "image_embed"
    patch_embed_transform: Callable = channels_first_to_tokens
    pos_embed_prefix_rows: int = 1         # how many prefix tokens the stored table covers
    class_names: list[str] = field(default_factory=list)
    project_tokens: Callable[[torch.Tensor], torch.Tensor] | None = None  # CLIP: final norm + projection
    # CLIP: the map from the final norm's output to the image embedding alone (the projection; identity where there
    # is none), for the image-embedding decomposition; None where the backend does not name it
    readout_projection: Callable[[torch.Tensor], torch.Tensor] | None = None
    readout: str = "cls"                   # what the output reads: "cls", "mean" (of the patches), "attention_pool"
    pool: nn.Module | None = None          # readout "attention_pool": the pool head, called on the last block's tokens
    pool_skips_prefix: bool = False        # is the pool head given the patches only (prefix tokens dropped)?
    pool_probes: tuple[int, ...] | None = None  # the probes the output reads (CoCa: probe 0 of 256); None: all
    patch_filters: Callable[[], torch.Tensor] | None = None  # (dim, C, p, p) where the projection is no conv


class ViTAdapter(ModelAdapter):
    """A ViT classifier, feature extractor, or CLIP's ViT image tower."""

    family = "vit"

    def __init__(self, layout: ViTLayout, forward: Callable[[torch.Tensor], torch.Tensor], **kwargs):
        super().__init__(**kwargs)
        self.layout = layout
        self._forward = forward
        self.class_names = list(layout.class_names)
        self.points["patch_embed"] = HookPoint(layout.patch_embed, transform=layout.patch_embed_transform)
        if layout.pos_embed is not None:
            self.points["pos_embed"] = HookPoint(layout.patch_embed, kind="static",
                                                 transform=lambda _: layout.pos_embed())
        points, sites = stack_points(layout)
        self.points.update(points)
        self.sites.update(sites)
        if layout.final_norm is not None:
            self.points["final_norm"] = HookPoint(layout.final_norm)
        if layout.readout == "attention_pool":
            if layout.pool is None:
                raise UnknownArchitectureError("An attention-pool readout needs its pool head (ViTLayout.pool).")
            skipped = len(layout.prefix_tokens) if layout.pool_skips_prefix else 0
            self.sites["pool.attn"] = pool_site(layout.pool, skipped_prefix=skipped)
            self.points["pool"] = HookPoint(layout.pool)
        self.points[layout.output_name] = HookPoint(layout.output)

    # -- structure ------------------------------------------------------------------------------------------------
    @property
    def patch_size(self) -> tuple[int, int]:
        return self.layout.patch_size

    @property
    def num_layers(self) -> int:
        return len(self.layout.blocks)

    @property
    def num_heads(self) -> int:
        return self.sites["blocks.0.attn"].num_heads

    @property
    def prefix_tokens(self) -> list[str]:
        """Names of the tokens before the patches: cls, reg0.., dist."""
        return list(self.layout.prefix_tokens)

    @property
    def readout(self) -> str:
        """What the model's output reads from the last block: "cls", "mean" of the patches, or "attention_pool"."""
        return self.layout.readout

    @property
    def pool_probes(self) -> tuple[int, ...] | None:
        """Readout "attention_pool": which of the pool's probes the output reads (None: all, averaged)."""
        return self.layout.pool_probes

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.layout.prefix_tokens)

    @property
    def pos_embed_prefix_rows(self) -> int:
        """How many prefix tokens the stored position table (``pos_embed``) covers: its first rows."""
        return self.layout.pos_embed_prefix_rows

    def patch_embed_weight(self) -> torch.Tensor:
        """The patch convolution's weight (dim, channels, p, p), for the patch-embedding filter views."""
        if self.layout.patch_filters is not None:  # a Linear over flattened patches (SigLIP 2), as conv filters
            return self.layout.patch_filters().detach()
        return conv_in(self.layout.patch_embed).weight.detach()

    def grid(self, size: tuple[int, int] | torch.Tensor | None = None) -> tuple[int, int]:
        """Patch grid (rows, cols) for an input size or pixel tensor, from the model's own patch size."""
        if size is None:
            size = self.preprocess.size
        elif torch.is_tensor(size):
            size = tuple(size.shape[-2:])
        height, width = square(size)
        return height // self.patch_size[0], width // self.patch_size[1]

    # -- running --------------------------------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The native model's result: logits for classifiers, pooled features otherwise."""
        with self.lock, self.run_context():
            return self._forward(pixels.to(self.device, self.dtype))

    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Push any tokens (batch, n, dim) through the model's own final norm and image projection (CLIP towers)."""
        if self.layout.project_tokens is None:
            raise ValueError(f"{self.model_id} has no image projection: per-patch zero-shot needs a CLIP model.")
        with self.lock, self.run_context():
            return self.layout.project_tokens(tokens.to(self.device, self.dtype))

    def facts(self) -> dict:
        grid = self.grid()
        facts = super().facts()
        facts.update({
            "patch size": "x".join(map(str, self.patch_size)),
            "patch grid": f"{grid[0]}x{grid[1]}",
            "prefix tokens": ", ".join(self.prefix_tokens) or "none",
            "tokens": grid[0] * grid[1] + self.num_prefix_tokens,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "width": self.sites["blocks.0.attn"].num_heads * self.sites["blocks.0.attn"].head_dim,
        })
        if self.class_names:
            facts["classes"] = len(self.class_names)
        return facts


# -- shared by the backends' layouts -----------------------------------------------------------------------------------
def conv_in(module: nn.Module) -> nn.Conv2d:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise UnknownArchitectureError(f"No patch convolution found in {type(module).__name__}.")
    return conv
