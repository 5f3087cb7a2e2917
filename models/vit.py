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
  logits | image_embed   classifier logits, or (CLIP) the projected image embedding
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from models.adapter import ModelAdapter
from models.attention import AttentionSite
from models.capture import HookPoint
from models.errors import UnknownArchitectureError
from models.preprocess import square


def _channels_first_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim, h, w) -> (batch, h*w, dim); tokens already flat pass through."""
    return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x


def _channels_last_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(batch, h, w, dim) -> (batch, h*w, dim); tokens already flat pass through."""
    return x.flatten(1, 2) if x.ndim == 4 else x


@dataclass
class ViTLayout:
    """The native modules of one ViT, found once per backend."""

    patch_embed: nn.Module
    blocks: list[nn.Module]
    ln1: list[nn.Module]
    attn: list[nn.Module]
    mlp: list[nn.Module]
    final_norm: nn.Module | None
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    prefix_tokens: list[str]
    pos_embed: Callable[[], torch.Tensor] | None
    output: nn.Module                      # whose output is the model's result
    output_name: str = "logits"            # "logits" or "image_embed"
    patch_embed_transform: Callable = _channels_first_to_tokens
    pos_embed_prefix_rows: int = 1         # how many prefix tokens the stored table covers
    causal: bool = False
    class_names: list[str] = field(default_factory=list)
    project_tokens: Callable[[torch.Tensor], torch.Tensor] | None = None  # CLIP: final norm + projection


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
        for i, block in enumerate(layout.blocks):
            self.points[f"blocks.{i}.resid_pre"] = HookPoint(block, kind="input")
            self.points[f"blocks.{i}.ln1"] = HookPoint(layout.ln1[i])
            self.sites[f"blocks.{i}.attn"] = AttentionSite.detect(layout.attn[i], causal=layout.causal)
            self.points[f"blocks.{i}.attn_out"] = HookPoint(
                layout.attn[i], transform=self.sites[f"blocks.{i}.attn"].grad_output_batch_first)
            self.points[f"blocks.{i}.mlp_out"] = HookPoint(layout.mlp[i])
            self.points[f"blocks.{i}.resid_post"] = HookPoint(block)
        if layout.final_norm is not None:
            self.points["final_norm"] = HookPoint(layout.final_norm)
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
    def num_prefix_tokens(self) -> int:
        return len(self.layout.prefix_tokens)

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


# -- layouts, one per backend ----------------------------------------------------------------------------------------
def _conv_in(module: nn.Module) -> nn.Conv2d:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise UnknownArchitectureError(f"No patch convolution found in {type(module).__name__}.")
    return conv


def open_clip_vit_layout(visual: nn.Module) -> ViTLayout:
    """open_clip VisionTransformer (model.visual)."""
    blocks = list(visual.transformer.resblocks)
    if visual.attn_pool is not None:
        raise UnknownArchitectureError("open_clip vision towers with attentional pooling (CoCa) are not supported.")
    return ViTLayout(
        patch_embed=visual.conv1,
        blocks=blocks,
        ln1=[b.ln_1 for b in blocks],
        attn=[b.attn for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=visual.ln_post,
        patch_size=square(visual.patch_size),
        image_size=square(visual.image_size),
        prefix_tokens=["cls"],  # open_clip always prepends one class token
        pos_embed=lambda: visual.positional_embedding.detach(),
        output=visual,
        output_name="image_embed",
        project_tokens=lambda tokens: visual.ln_post(tokens) @ visual.proj,
    )


def hf_vit_layout(model: nn.Module) -> ViTLayout:
    """transformers ViT / DeiT / Dinov2 (with registers) / CLIP vision models and their classification heads."""
    config = model.config
    vision_config = getattr(config, "vision_config", config)
    base = getattr(model, "vision_model", None) or getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None or not hasattr(base, "embeddings"):
        base = model
    embeddings = base.embeddings
    encoder = getattr(base, "encoder", base)
    encoder_layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
    if encoder_layers is None:
        raise UnknownArchitectureError(f"{type(model).__name__}: no encoder layers found.")
    blocks = list(encoder_layers)

    def first_child(block, names):
        for name in names:
            if hasattr(block, name):
                return getattr(block, name)
        raise UnknownArchitectureError(f"{type(block).__name__} has none of {names}.")

    ln1 = [first_child(b, ("layernorm_before", "norm1", "layer_norm1")) for b in blocks]
    attn = [next(m for m in b.modules() if all(hasattr(m, n) for n in ("q_proj", "k_proj", "v_proj")))
            for b in blocks]
    mlp = [first_child(b, ("mlp",)) if hasattr(b, "mlp") else b.output for b in blocks]
    final_norm = getattr(base, "layernorm", None) or getattr(base, "post_layernorm", None)

    prefix = ["cls"]
    registers = getattr(vision_config, "num_register_tokens", 0) or 0
    prefix += [f"reg{i}" for i in range(registers)]
    if hasattr(embeddings, "distillation_token"):
        prefix.append("dist")

    if hasattr(embeddings, "position_embeddings") and torch.is_tensor(embeddings.position_embeddings):
        def pos_embed():
            return embeddings.position_embeddings.detach()[0]
    else:
        def pos_embed():
            return embeddings.position_embedding.weight.detach()
    pos_rows = 1 + (1 if "dist" in prefix else 0)  # registers are added after the position embedding

    project_tokens = None
    if getattr(model, "visual_projection", None) is not None:
        def project_tokens(tokens):
            return model.visual_projection(base.post_layernorm(tokens))
    classifier = getattr(model, "classifier", None) or getattr(model, "cls_classifier", None)
    projection = getattr(model, "visual_projection", None)
    if classifier is not None:
        output, output_name = classifier, "logits"
    elif projection is not None:
        output, output_name = projection, "image_embed"
    else:
        output, output_name = final_norm or blocks[-1], "final_output"
    id2label = getattr(config, "id2label", None) or {}
    class_names = [id2label[i] for i in sorted(id2label)] if classifier is not None else []
    return ViTLayout(
        patch_embed=_conv_in(embeddings),
        blocks=blocks, ln1=ln1, attn=attn, mlp=mlp,
        final_norm=final_norm,
        patch_size=square(vision_config.patch_size),
        image_size=square(vision_config.image_size),
        prefix_tokens=prefix,
        pos_embed=pos_embed,
        pos_embed_prefix_rows=pos_rows,
        output=output, output_name=output_name,
        class_names=class_names,
        project_tokens=project_tokens,
    )


def timm_vit_layout(model: nn.Module, class_names: list[str]) -> ViTLayout:
    """timm VisionTransformer (incl. registers and distilled DeiT)."""
    blocks = list(model.blocks)
    prefix = ["cls"] if getattr(model, "cls_token", None) is not None else []
    if getattr(model, "dist_token", None) is not None:
        prefix.append("dist")
    prefix += [f"reg{i}" for i in range(getattr(model, "num_reg_tokens", 0) or 0)]
    pos_rows = 0 if getattr(model, "no_embed_class", False) else len(prefix)
    output_fmt = getattr(model.patch_embed, "output_fmt", None)
    transform = _channels_last_to_tokens if str(output_fmt).endswith("NHWC") else _channels_first_to_tokens
    head = model.head if not isinstance(model.head, nn.Identity) else (model.fc_norm if not isinstance(
        model.fc_norm, nn.Identity) else model.norm)
    return ViTLayout(
        patch_embed=model.patch_embed,
        blocks=blocks,
        ln1=[b.norm1 for b in blocks],
        attn=[b.attn for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=model.norm,
        patch_size=square(model.patch_embed.patch_size),
        image_size=square(model.patch_embed.img_size or model.default_cfg.get("input_size", (3, 224, 224))[1:]),
        prefix_tokens=prefix,
        pos_embed=(lambda: model.pos_embed.detach()[0]) if model.pos_embed is not None else None,
        pos_embed_prefix_rows=pos_rows,
        patch_embed_transform=transform,
        output=head,
        output_name="logits" if not isinstance(model.head, nn.Identity) else "final_output",
        class_names=class_names if not isinstance(model.head, nn.Identity) else [],
    )


def torchvision_vit_layout(model: nn.Module, class_names: list[str]) -> ViTLayout:
    """torchvision VisionTransformer (vit_b_16 ...)."""
    blocks = list(model.encoder.layers)
    return ViTLayout(
        patch_embed=model.conv_proj,
        blocks=blocks,
        ln1=[b.ln_1 for b in blocks],
        attn=[b.self_attention for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=model.encoder.ln,
        patch_size=(model.patch_size, model.patch_size),
        image_size=(model.image_size, model.image_size),
        prefix_tokens=["cls"],
        pos_embed=lambda: model.encoder.pos_embedding.detach()[0],
        output=model.heads,
        class_names=class_names,
    )
