"""Hugging Face transformers: ``hf:REPO_OR_DIR`` (a hub repository or a directory saved with save_pretrained).

Owns the model types clipscope maps, their layouts, the image processor's preprocessing, the text towers, the
hub-cache offline check, catalog entries and the coverage builders:

- two towers (``clip`` family): CLIP, SigLIP, SigLIP 2, ChineseCLIP (BERT text tower), AltCLIP (XLM-R text tower);
- ViT-style encoders (``vit``): ViT, DeiT, DINOv2 (with registers), DINOv3 (rotary positions), BEiT (relative
  position bias, mean-pooled readout), CLIP / SigLIP / SigLIP 2 vision towers on their own;
- CNNs (``cnn``): ResNet, ConvNeXt, ConvNeXt V2.
- hierarchical transformers (``hierarchical``): Swin (window attention, relative position bias, shifted windows).

:func:`encoder_text_stack` turns any BERT / RoBERTa / XLM-R encoder into a :class:`BlockStack`; other backends
with HF text towers (open_clip's XLM-R CLIPs) call it too.
"""
from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from models.adapters.clip import CLIPAdapter, TextLayout
from models.adapters.cnn import CNNAdapter, CNNLayout, module_paths
from models.adapters.hierarchical import (
    PATCH_MERGE,
    HierarchicalAdapter,
    HierarchicalLayout,
    StageAttention,
    TokenGridPoint,
    window_reach,
)
from models.adapters.stack import BlockStack
from models.adapters.vit import ViTAdapter, ViTLayout, conv_in
from models.backends import Backend, KnownModel, common_kwargs, register
from models.errors import ModelIdError, UnknownArchitectureError
from models.model_ids import ModelId
from models.network import download_guard, host_reachable
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, square
from models.tokens import token_classifier

HF_CLIP_TYPES = {"clip", "siglip", "siglip2", "chinese_clip", "altclip"}
HF_VIT_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers", "dinov3_vit", "beit", "clip_vision_model",
                "siglip_vision_model", "siglip2_vision_model"}
HF_CNN_TYPES = {"resnet", "convnext", "convnextv2"}
HF_HIERARCHICAL_TYPES = {"swin"}
SUPPORTED_TYPES = HF_CLIP_TYPES | HF_VIT_TYPES | HF_CNN_TYPES | HF_HIERARCHICAL_TYPES
# unsupported model types researchers meet, and the supported form closest to each
CLOSEST_TYPE = {
    "dinov3_convnext": "convnext", "swinv2": "swin", "data2vec-vision": "beit", "vit_mae": "vit", "vit_msn": "vit",
    "vit_hybrid": "vit", "owlvit": "clip", "owlv2": "clip", "clipseg": "clip", "x_clip": "clip", "blip": "clip",
    "blip-2": "clip", "metaclip_2": "clip", "bit": "resnet", "regnet": "resnet", "efficientnet": "convnext",
    "mobilenet_v2": "resnet", "levit": "vit", "pvt": "vit",
}
CATALOG = [
    KnownModel("hf:openai/clip-vit-base-patch32", "clip", 151_277_313, "OpenAI CLIP ViT-B/32, transformers", "vit"),
    KnownModel("hf:google/vit-base-patch16-224", "vit", 86_567_656, "ViT-B/16 ImageNet-1k classifier"),
    KnownModel("hf:google/siglip-base-patch16-224", "clip", 203_155_970,
               "SigLIP ViT-B/16: MAP-head readout, sigmoid scores", "vit"),
    KnownModel("hf:google/siglip2-base-patch16-naflex", "clip", 375_234_050, "SigLIP 2 ViT-B/16 (NaFlex)", "vit"),
    KnownModel("hf:OFA-Sys/chinese-clip-vit-base-patch16", "clip", 188_262_913,
               "Chinese CLIP ViT-B/16, BERT text tower", "vit"),
    KnownModel("hf:BAAI/AltCLIP", "clip", 864_186_113, "AltCLIP ViT-L/14, multilingual XLM-R text tower", "vit"),
    KnownModel("hf:facebook/dinov2-base", "vit", 86_580_480, "DINOv2 ViT-B/14 features (self-supervised)"),
    KnownModel("hf:facebook/dinov2-with-registers-base", "vit", 86_583_552, "DINOv2 ViT-B/14 with 4 registers"),
    KnownModel("hf:facebook/dinov3-vitb16-pretrain-lvd1689m", "vit", 85_660_416,
               "DINOv3 ViT-B/16: rotary positions, 4 registers"),
    KnownModel("hf:microsoft/beit-base-patch16-224", "vit", 86_530_984,
               "BEiT-B/16: relative position bias, mean-pooled readout"),
    KnownModel("hf:facebook/deit-base-distilled-patch16-224", "vit", 87_338_192, "DeiT-B/16 with distillation token"),
    KnownModel("hf:microsoft/resnet-50", "cnn", 25_557_032, "ResNet-50 ImageNet-1k classifier, transformers"),
    KnownModel("hf:facebook/convnext-tiny-224", "cnn", 28_589_128, "ConvNeXt-T ImageNet-1k classifier"),
    KnownModel("hf:facebook/convnextv2-tiny-1k-224", "cnn", 28_635_496, "ConvNeXt V2-T ImageNet-1k classifier"),
    KnownModel("hf:microsoft/swin-tiny-patch4-window7-224", "hierarchical", 28_288_354,
               "Swin-T: shifted 7x7 windows, 4 stages, transformers"),
]
# the transformers class each catalog checkpoint is (its configuration is written out in _configs)
CHECKPOINT_ARCH = {
    "google/siglip-base-patch16-224": "SiglipModel", "google/siglip2-base-patch16-naflex": "Siglip2Model",
    "OFA-Sys/chinese-clip-vit-base-patch16": "ChineseCLIPModel", "BAAI/AltCLIP": "AltCLIPModel",
    "facebook/dinov2-base": "Dinov2Model", "facebook/dinov2-with-registers-base": "Dinov2WithRegistersModel",
    "facebook/dinov3-vitb16-pretrain-lvd1689m": "DINOv3ViTModel",
    "microsoft/beit-base-patch16-224": "BeitForImageClassification",
    "facebook/deit-base-distilled-patch16-224": "DeiTForImageClassificationWithTeacher",
    "microsoft/resnet-50": "ResNetForImageClassification",
    "facebook/convnext-tiny-224": "ConvNextForImageClassification",
    "facebook/convnextv2-tiny-1k-224": "ConvNextV2ForImageClassification",
    "microsoft/swin-tiny-patch4-window7-224": "SwinForImageClassification",
}


def hub_cached(repo: str, filename: str) -> bool:
    """Is ``filename`` of hub repository ``repo`` in the local Hugging Face cache (no network asked)?"""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def _first(module: nn.Module, names: tuple[str, ...], default=None):
    """The first of ``names`` that ``module`` has (and is not None)."""
    for name in names:
        value = getattr(module, name, None)
        if value is not None:
            return value
    return default


# -- text towers -------------------------------------------------------------------------------------------------------
def encoder_text_stack(encoder: nn.Module, embeddings: nn.Module | None = None) -> BlockStack:
    """A BERT / RoBERTa / XLM-R encoder (post-norm, not causal) as a block stack.

    ``encoder`` is the whole HF model (``BertModel``, ``XLMRobertaModel``, ``AltRobertaModel``: it has
    ``.embeddings`` and ``.encoder``) or its ``.encoder`` with ``embeddings`` given. Per block: ``attn`` is
    ``layer.attention.self`` (query/key/value, the padding mask passed in the call); ``ln1`` is the norm whose
    output the attention reads (post-norm: the embeddings' LayerNorm for block 0, the previous block's output
    LayerNorm after); ``mlp`` is ``layer.output.dense`` (before dropout, residual and LayerNorm).
    """
    if embeddings is None:
        embeddings = getattr(encoder, "embeddings", None)
    stack = getattr(encoder, "encoder", encoder)
    layers = _first(stack, ("layer", "layers"))
    if layers is None or embeddings is None:
        raise UnknownArchitectureError(
            f"{type(encoder).__name__} is not a BERT-style encoder with embeddings and encoder layers "
            "(closest supported: transformers BertModel / XLMRobertaModel).")
    blocks = list(layers)
    try:
        attn = [b.attention.self for b in blocks]
        norms = [embeddings.LayerNorm] + [b.output.LayerNorm for b in blocks[:-1]]
        mlp = [b.output.dense for b in blocks]
    except AttributeError as exc:
        raise UnknownArchitectureError(
            f"{type(blocks[0]).__name__} is not a BERT-style layer (attention.self, output.dense, "
            f"output.LayerNorm): {exc}") from exc
    return BlockStack(blocks=blocks, ln1=norms, attn=attn, mlp=mlp, causal=False)


def clip_style_text_stack(text_model: nn.Module, causal: bool) -> BlockStack:
    """CLIP / SigLIP text encoders: pre-norm layers with ``layer_norm1``, ``self_attn``, ``mlp``."""
    blocks = list(text_model.encoder.layers)
    return BlockStack(blocks=blocks, ln1=[b.layer_norm1 for b in blocks], attn=[b.self_attn for b in blocks],
                      mlp=[b.mlp for b in blocks], causal=causal)


def text_layout(model: nn.Module, model_type: str) -> TextLayout:
    """The text tower of a transformers CLIP-family model, with its pooling rule, causality and per-token path
    (``project_tokens``: what the tower does to its pooled token, applied to every last-block token)."""
    text_config = model.config.text_config
    text = model.text_model
    projection = getattr(model, "text_projection", None)
    if model_type in ("chinese_clip", "altclip"):
        encoder = getattr(text, "roberta", text)
        stack = encoder_text_stack(encoder)
        token_embed = encoder.embeddings.word_embeddings
        output = projection
        if model_type == "altclip":  # every token normalised and transformed, then the [CLS] one projected
            final_norm = text.pre_LN

            def project_tokens(tokens):
                return projection(text.transformation(text.pre_LN(tokens)))
        else:                        # post-norm: the last block's [CLS] token is projected as it is
            final_norm, project_tokens = None, projection

        def pooled_index(ids):       # both pool the [CLS] / <s> token at position 0
            return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    else:
        causal = model_type == "clip"                   # SigLIP's text attention is not causal
        stack = clip_style_text_stack(text, causal)
        final_norm = text.final_layer_norm
        token_embed = text.embeddings.token_embedding
        output = projection if model_type == "clip" else text.head   # SigLIP: a head on the last position

        def project_tokens(tokens):
            return output(final_norm(tokens))
        eos = text_config.eos_token_id
        if model_type != "clip":
            def pooled_index(ids):
                return torch.full((ids.shape[0],), ids.shape[-1] - 1, dtype=torch.long, device=ids.device)
        elif eos == 2:  # transformers' own rule: older CLIP configs pool at the highest id, newer at the first eos
            def pooled_index(ids):
                return ids.argmax(dim=-1)
        else:
            def pooled_index(ids):
                return (ids == eos).int().argmax(dim=-1)
    return TextLayout(
        token_embed=token_embed, blocks=stack.blocks, ln1=stack.ln1, attn=stack.attn, mlp=stack.mlp,
        causal=stack.causal, final_norm=final_norm, output=output,
        context_length=int(text_config.max_position_embeddings), vocab_size=int(text_config.vocab_size),
        pooled_index=pooled_index, project_tokens=project_tokens,
    )


# -- image towers ------------------------------------------------------------------------------------------------------
def _vision_base(model: nn.Module) -> nn.Module:
    """The module that holds the embeddings (``vision_model``, ``vit``, ``beit``, ... or the model itself)."""
    for name in ("vision_model", getattr(model, "base_model_prefix", "")):
        base = getattr(model, name, None) if name else None
        if base is not None and hasattr(base, "embeddings"):
            return base
    return model


def _blocks(base: nn.Module) -> list[nn.Module]:
    for holder in (getattr(base, "encoder", None), getattr(base, "model", None), base):  # DINOv3: .model.layer
        layers = _first(holder, ("layer", "layers")) if holder is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers):
            return list(layers)
    raise UnknownArchitectureError(f"{type(base).__name__}: no encoder layers found.")


def _patch_embed(embeddings: nn.Module) -> nn.Module:
    """The patch projection: a convolution, or SigLIP 2's Linear over flattened patches."""
    linear = getattr(embeddings, "patch_embedding", None)
    return linear if isinstance(linear, nn.Linear) else conv_in(embeddings)


def linear_patch_filters(linear: nn.Linear, patch_size: int) -> Callable[[], torch.Tensor]:
    """SigLIP 2's Linear over flattened patches as conv filters (dim, C, p, p): its image processor flattens each
    patch as (p, p, C) (``convert_image_to_patches``)."""
    def filters():
        return linear.weight.reshape(linear.out_features, patch_size, patch_size, -1).permute(0, 3, 1, 2)
    return filters


def vit_layout(model: nn.Module) -> ViTLayout:
    """transformers ViT-style image towers, with or without a classification head or a CLIP projection."""
    config = model.config
    vision_config = getattr(config, "vision_config", config)
    base = _vision_base(model)
    embeddings = base.embeddings
    blocks = _blocks(base)

    def child(block, names):
        found = _first(block, names)
        if found is None:
            raise UnknownArchitectureError(f"{type(block).__name__} has none of {names}.")
        return found

    ln1 = [child(b, ("layernorm_before", "norm1", "layer_norm1")) for b in blocks]
    attn = [next(m for m in b.modules() if all(hasattr(m, n) for n in ("q_proj", "k_proj", "v_proj")))
            for b in blocks]
    mlp = [b.mlp if hasattr(b, "mlp") else b.output for b in blocks]
    final_norm = _first(base, ("layernorm", "post_layernorm", "norm"))
    if isinstance(final_norm, nn.Identity):  # BEiT with mean pooling: the norm is applied to the pooled mean
        final_norm = None

    has_cls = any(hasattr(embeddings, name) for name in ("cls_token", "class_embedding"))
    prefix = ["cls"] if has_cls else []
    prefix += [f"reg{i}" for i in range(getattr(vision_config, "num_register_tokens", 0) or 0)]
    if hasattr(embeddings, "distillation_token"):
        prefix.append("dist")

    table = getattr(embeddings, "position_embeddings", None)
    if torch.is_tensor(table):
        def pos_embed():
            return table.detach()[0]
    elif isinstance(getattr(embeddings, "position_embedding", None), nn.Embedding):
        def pos_embed():
            return embeddings.position_embedding.weight.detach()
    else:  # rotary positions (DINOv3) or relative position bias only (BEiT)
        pos_embed = None
    pos_rows = int(has_cls) + int("dist" in prefix)  # registers are added after the position embedding

    head = getattr(base, "head", None) if getattr(base, "use_head", False) else None
    readout = "cls"
    if head is not None:
        readout = "attention_pool"
    elif getattr(getattr(base, "pooler", None), "layernorm", None) is not None:
        readout = "mean"                     # BEiT: layernorm(mean of the patch tokens)

    projection = getattr(model, "visual_projection", None)
    classifier = _first(model, ("classifier", "cls_classifier"))
    project_tokens = None
    if classifier is not None:
        output, output_name = classifier, "logits"
    elif projection is not None:
        output, output_name = projection, "image_embed"

        def project_tokens(tokens):
            return projection(base.post_layernorm(tokens))
    elif head is not None:
        output, output_name = head, ("image_embed" if hasattr(model, "text_model") else "features")

        def project_tokens(tokens):
            """Each token alone through the final norm and the MAP head (one key: the probe attends only to it)."""
            batch, count, width = tokens.shape
            alone = base.post_layernorm(tokens).reshape(batch * count, 1, width)
            return head(alone).reshape(batch, count, -1)
    else:
        output, output_name = final_norm or blocks[-1], "features"
    id2label = getattr(config, "id2label", None) or {}
    class_names = [id2label[i] for i in sorted(id2label)] if classifier is not None else []
    patch_embed = _patch_embed(embeddings)
    patch_size = square(vision_config.patch_size)
    return ViTLayout(
        patch_embed=patch_embed,
        patch_filters=linear_patch_filters(patch_embed, patch_size[0]) if isinstance(patch_embed, nn.Linear) else None,
        blocks=blocks, ln1=ln1, attn=attn, mlp=mlp,
        final_norm=final_norm,
        patch_size=patch_size,
        image_size=_image_size(vision_config),
        prefix_tokens=prefix,
        pos_embed=pos_embed,
        pos_embed_prefix_rows=pos_rows,
        output=output, output_name=output_name,
        class_names=class_names,
        project_tokens=project_tokens,
        readout_projection=projection if output_name == "image_embed" and head is None else None,
        readout=readout,
        pool=head,
    )


def _image_size(vision_config) -> tuple[int, int]:
    """The input size: ``image_size``, or (SigLIP 2) the square holding ``num_patches`` patches."""
    if getattr(vision_config, "num_patches", None) and not hasattr(vision_config, "image_size"):
        side = math.isqrt(int(vision_config.num_patches)) * int(vision_config.patch_size)
        return (side, side)
    return square(vision_config.image_size)


def siglip2_inputs(pixels: torch.Tensor, patch_size: int) -> dict[str, torch.Tensor]:
    """SigLIP 2's inputs for a batch of fixed-size images, as its image processor builds them: flattened patches
    (row-major, each patch ``(p, p, C)``), the patch grid of each image and an all-ones patch mask (no padding)."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    patches = torch.stack([convert_image_to_patches(image, patch_size) for image in pixels])
    grid = [pixels.shape[-2] // patch_size, pixels.shape[-1] // patch_size]
    spatial_shapes = torch.tensor([grid] * pixels.shape[0], dtype=torch.long, device=pixels.device)
    mask = torch.ones(patches.shape[:2], dtype=torch.long, device=pixels.device)
    return {"pixel_values": patches, "spatial_shapes": spatial_shapes, "pixel_attention_mask": mask}


def vision_forward(vision: nn.Module, model_type: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels -> the vision model's output (logits where it has a head, else its pooled features)."""
    patch = int(square(vision.config.patch_size)[0]) if model_type.startswith("siglip2") else 0

    def forward(pixels):
        inputs = siglip2_inputs(pixels, patch) if patch else {"pixel_values": pixels}
        out = vision(**inputs)
        if getattr(out, "logits", None) is not None:
            return out.logits
        if getattr(out, "pooler_output", None) is not None:
            return out.pooler_output
        return out.last_hidden_state[:, 0]
    return forward


def cnn_layout(model: nn.Module) -> CNNLayout:
    """transformers ResNet / ConvNext / ConvNextV2 (with or without a classification head)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    stem = getattr(base, "embedder", None) or getattr(base, "embeddings", None)
    stages = list(base.encoder.stages)
    classifier = getattr(model, "classifier", None)
    id2label = getattr(model.config, "id2label", None) or {}
    if classifier is None:
        head, head_name, names = stages[-1], "features", []
    else:
        head, head_name, names = classifier, "logits", [id2label[i] for i in sorted(id2label)]
    return CNNLayout(stem=stem, stages=stages, stage_paths=module_paths(model, stages), head=head,
                     head_name=head_name, class_names=names)


# -- hierarchical transformers (Swin): the hierarchical engineer's section --------------------------------------------
def swin_layout(model: nn.Module) -> HierarchicalLayout:
    """transformers Swin (SwinModel / SwinForImageClassification): flat-token stages whose grid each call names.

    ``stages.S`` is the last block of stage S (before its patch merging), so each stage's map sits on the grid its
    window attention cuts; the last stage is read after the final ``layernorm`` (a plain tensor the classifier reads,
    so Grad-CAM's hooks work there), on the grid the model was built for. Each block's windows are found with its
    own ``maybe_pad``, ``cyclic_shift`` and ``window_partition``. The eager reference is the backend's own
    (output_attentions with eager attention).
    """
    from transformers.models.swin.modeling_swin import window_partition

    base = getattr(model, "swin", model)

    def block_partition(block):
        def partition(x):
            x, _ = block.maybe_pad(x, x.shape[1], x.shape[2])
            windows = window_partition(block.cyclic_shift(x), block.window_size)
            return windows.reshape(windows.shape[0], -1, x.shape[-1])
        return partition

    stages = list(base.encoder.layers)
    readers = [stage.blocks[-1] for stage in stages[:-1]] + [base.layernorm]
    attention = [StageAttention(s, b, block.attention, block_partition(block),
                                "shifted window" if block.shift_size else "window")
                 for s, stage in enumerate(stages) for b, block in enumerate(stage.blocks)]
    points = {"stem": TokenGridPoint(base.embeddings, grid_of=lambda args, output: output[1])}
    points.update({f"stages.{s}": TokenGridPoint(block, grid_of=lambda args, output: args[1])
                   for s, block in enumerate(readers[:-1])})
    points[f"stages.{len(stages) - 1}"] = TokenGridPoint(
        base.layernorm, grid=tuple(int(v) for v in stages[-1].blocks[-1].input_resolution))
    mixers = {block: window_reach(model.config.window_size) for stage in stages for block in stage.blocks}
    mixers.update({stage.downsample: PATCH_MERGE for stage in stages if stage.downsample is not None})
    classifier = getattr(model, "classifier", None)
    id2label = getattr(model.config, "id2label", None) or {}
    if classifier is not None and not isinstance(classifier, nn.Identity):
        head, head_name, names = classifier, "logits", [id2label[i] for i in sorted(id2label)]
    else:
        head, head_name, names = base.pooler if base.pooler is not None else base.layernorm, "features", []
    return HierarchicalLayout(stem=base.embeddings, stages=readers, stage_paths=module_paths(model, readers),
                              head=head, head_name=head_name, class_names=names, attention=attention, points=points,
                              mixers=mixers)


# -- loading -----------------------------------------------------------------------------------------------------------
def _preprocess(name: str, config) -> Preprocess:
    from transformers import AutoImageProcessor

    vision = getattr(config, "vision_config", config)
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = None
    if processor is None:
        return Preprocess(size=_image_size(vision), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_to=None)
    size_cfg = getattr(processor, "size", None) or {}
    crop_cfg = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None

    def pair(cfg):
        if cfg is None:
            return None
        cfg = dict(cfg)
        if "height" in cfg:
            return (cfg["height"], cfg["width"])
        if "shortest_edge" in cfg:
            return (cfg["shortest_edge"], cfg["shortest_edge"])
        return None
    resize = pair(size_cfg)
    crop = pair(crop_cfg)
    if getattr(processor, "max_num_patches", None):  # SigLIP 2: a square image resized to fit its patch budget
        from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

        side = _image_size(vision)[0]
        final = get_image_size_for_max_num_patches(side, side, processor.patch_size, processor.max_num_patches)
        resize_to = None
    elif crop is not None:
        final, resize_to = crop, min(resize) if resize else min(crop)
    elif resize is not None and "shortest_edge" in dict(size_cfg):
        crop_pct = getattr(processor, "crop_pct", None)
        final = resize
        resize_to = int(resize[0] / crop_pct) if crop_pct else None
    else:
        final, resize_to = resize or _image_size(vision), None
    resample = getattr(processor, "resample", 3)
    interpolation = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(int(resample), "bicubic")
    return Preprocess(size=tuple(final), mean=tuple(processor.image_mean), std=tuple(processor.image_std),
                      resize_to=resize_to, interpolation=interpolation)


def _unsupported(model_id: ModelId, config) -> UnknownArchitectureError:
    """Refusal naming the id, the model type / class and the closest supported form, from the config alone."""
    model_type = config.model_type
    classes = ", ".join(config.architectures or []) or "no architectures listed"
    closest = CLOSEST_TYPE.get(model_type) or next(iter(difflib.get_close_matches(
        model_type, sorted(SUPPORTED_TYPES), n=1, cutoff=0.4)), None)
    hint = f"closest supported: {closest!r}; " if closest else ""
    return UnknownArchitectureError(
        f"Model id {model_id.raw!r}: transformers model type {model_type!r} ({classes}) is not supported "
        f"({hint}supported: {', '.join(sorted(SUPPORTED_TYPES))}).")


def _model_class(config):
    """The transformers class to build: the one the config names where it is a model or classifier, else Auto."""
    import transformers

    for name in config.architectures or []:
        cls = getattr(transformers, name, None)
        if cls is not None and (name.endswith("Model") or "ForImageClassification" in name):
            return cls
    return transformers.AutoModel


def _text_inputs(model_type: str, pad_id: int | None):
    """token ids -> the keyword arguments the text tower is called with (BERT-style towers get a padding mask)."""
    if model_type in ("chinese_clip", "altclip") and pad_id is not None:
        return lambda ids: {"input_ids": ids, "attention_mask": (ids != pad_id).long()}
    return lambda ids: {"input_ids": ids}  # CLIP pools before the padding; SigLIP is trained on padded text


def load(model_id: ModelId, device, dtype, attn_implementation: str | None = None):
    import transformers
    from transformers import AutoConfig

    name = model_id.name
    with download_guard(model_id.raw):
        try:
            config = AutoConfig.from_pretrained(name)
        except OSError as exc:  # a local directory without a usable config, or (online) no such repository
            if Path(name).exists() or host_reachable("huggingface.co"):
                raise ModelIdError(f"Model id {model_id.raw!r}: {str(exc).splitlines()[0]}") from exc
            raise
        model_type = config.model_type
        if model_type not in SUPPORTED_TYPES:
            raise _unsupported(model_id, config)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = _model_class(config).from_pretrained(name, **kwargs)
        preprocess = _preprocess(name, config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name) if model_type in HF_CLIP_TYPES else None
    model = model.to(device=device, dtype=dtype).eval()
    common = common_kwargs(model_id, device, dtype)
    if model_type in HF_CLIP_TYPES:
        return _clip_adapter(model, model_type, tokenizer, preprocess, common)
    if model_type in HF_VIT_TYPES:
        return ViTAdapter(vit_layout(model), forward=vision_forward(model, model_type), module=model,
                          preprocess=preprocess, **common)

    def forward(px):
        out = model(pixel_values=px)
        return out.logits if hasattr(out, "logits") else out.pooler_output
    if model_type in HF_HIERARCHICAL_TYPES:
        return HierarchicalAdapter(swin_layout(model), forward=forward, module=model, preprocess=preprocess, **common)
    return CNNAdapter(cnn_layout(model), forward=forward, module=model, preprocess=preprocess, **common)


def _clip_adapter(model: nn.Module, model_type: str, tokenizer, preprocess: Preprocess, common: dict) -> CLIPAdapter:
    vision = model.vision_model
    image_forward = vision_forward(vision, model_type)
    projection = getattr(model, "visual_projection", None)
    visual = ViTAdapter(vit_layout(model), forward=(lambda px: projection(image_forward(px))) if projection
                        is not None else image_forward, module=vision, preprocess=preprocess, **common)
    text = text_layout(model, model_type)
    limit = getattr(tokenizer, "model_max_length", None)
    context = min(text.context_length, limit) if isinstance(limit, int) and limit > 0 else text.context_length
    text.context_length = context

    def tokenize(texts):
        return tokenizer(list(texts), padding="max_length", truncation=True, max_length=context,
                         return_tensors="pt")["input_ids"]
    text_inputs = _text_inputs(model_type, tokenizer.pad_token_id)

    def encode_text_tokens(ids):
        return model.get_text_features(**text_inputs(ids)).pooler_output

    text.token_text = lambda i: tokenizer.convert_ids_to_tokens(i).replace("</w>", "")
    text.token_kind = token_classifier(tokenizer)
    if model_type in ("chinese_clip", "altclip"):  # [CLS] / <s> pooled at 0: the text runs to [SEP] / </s>
        text.end_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    elif model_type != "clip":                      # SigLIP pools its last position: the text runs to </s>
        text.end_id = tokenizer.eos_token_id
    return CLIPAdapter(
        visual=visual, text=text, encode_text_tokens=encode_text_tokens, tokenize=tokenize,
        logit_scale=lambda: model.logit_scale, logit_bias=lambda: getattr(model, "logit_bias", None),
        count_tokens=lambda text: len(tokenizer(text, truncation=False)["input_ids"]),
        module=model, preprocess=preprocess, **common)


# -- local directories, offline ----------------------------------------------------------------------------------------
def claims_dir(path: Path) -> bool:
    """A directory written by save_pretrained: config.json with a model_type."""
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def usable_offline(name: str) -> bool:
    return Path(name).exists() or hub_cached(name, "config.json")


# -- coverage: real configurations with random weights, and the eager reference ----------------------------------------
LABELS_1K = {"num_labels": 1000}
CLIP_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 8, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2,
             "pad_token_id": 1}   # openai's config: eos_token_id 2 means "pool at the highest id" (transformers)
VIT_B = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
VIT_L = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def _configs(arch: str, tiny: bool) -> dict:
    """transformers config kwargs of the checkpoint researchers use for ``arch`` (or a tiny one of the same class).

    Real: openai/clip-vit-base-patch32, openai/clip-vit-large-patch14-336, google/siglip-base-patch16-224,
    google/siglip2-base-patch16-naflex, google/siglip-so400m-patch14-384, OFA-Sys/chinese-clip-vit-base-patch16,
    BAAI/AltCLIP, google/vit-base-patch16-224, facebook/deit-base-distilled-patch16-224, facebook/dinov2-base,
    facebook/dinov2-with-registers-base, facebook/dinov3-vitb16-pretrain-lvd1689m, microsoft/beit-base-patch16-224,
    facebook/convnext-tiny-224, facebook/convnextv2-tiny-1k-224, microsoft/resnet-50.
    """
    small = {**TINY, "image_size": 32, "patch_size": 8}
    if arch == "CLIPModel":
        if tiny:
            return {"text_config": {**TINY_TEXT, "vocab_size": 300, "max_position_embeddings": 16,
                                    "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 257},
                    "vision_config": small, "projection_dim": 32}
        return {"text_config": CLIP_TEXT, "vision_config": {**VIT_B, "image_size": 224, "patch_size": 32},
                "projection_dim": 512}
    if arch == "CLIPVisionModel":
        return small if tiny else {**VIT_L, "image_size": 336, "patch_size": 14, "projection_dim": 768}
    if arch in ("SiglipModel", "Siglip2Model"):
        # the text head projects to the image width; SigLIP's T5 tokenizer pads with </s>=1, SigLIP 2's Gemma one
        # pads with <pad>=0 and ends with <eos>=1 (bos <bos>=2)
        ids = ({"pad_token_id": 1, "eos_token_id": 1, "bos_token_id": None} if arch == "SiglipModel" else
               {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2})
        vocab = 32000 if arch == "SiglipModel" else 256000
        text = ({**TINY_TEXT, "vocab_size": 300, "max_position_embeddings": 16, "projection_size": 64} if tiny else
                {**VIT_B, "vocab_size": vocab, "max_position_embeddings": 64, "projection_size": 768})
        if arch == "SiglipModel":
            vision = small if tiny else {**VIT_B, "image_size": 224, "patch_size": 16}
        else:
            vision = {**TINY, "num_patches": 16, "patch_size": 8} if tiny else {**VIT_B, "num_patches": 256,
                                                                                 "patch_size": 16}
        return {"text_config": {**text, **ids}, "vision_config": vision}
    if arch == "SiglipVisionModel":
        return small if tiny else {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                                   "num_attention_heads": 16, "image_size": 384, "patch_size": 14}
    if arch == "ChineseCLIPModel":
        text = ({**TINY_TEXT, "vocab_size": 300, "max_position_embeddings": 24} if tiny else
                {**VIT_B, "vocab_size": 21128, "max_position_embeddings": 512, "type_vocab_size": 2})
        vision = small if tiny else {**VIT_B, "image_size": 224, "patch_size": 16}
        return {"text_config": {**text, "pad_token_id": 0}, "vision_config": vision,
                "projection_dim": 32 if tiny else 512}
    if arch == "AltCLIPModel":
        text = ({**TINY_TEXT, "vocab_size": 300, "max_position_embeddings": 24, "project_dim": 32} if tiny else
                {**VIT_L, "vocab_size": 250002, "max_position_embeddings": 514, "type_vocab_size": 1,
                 "project_dim": 768})
        vision = small if tiny else {**VIT_L, "image_size": 224, "patch_size": 14}
        return {"text_config": {**text, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
                "vision_config": vision, "projection_dim": 32 if tiny else 768}
    if arch in ("ViTForImageClassification", "DeiTForImageClassificationWithTeacher"):
        return {**small, "num_labels": 10} if tiny else {**VIT_B, "image_size": 224, "patch_size": 16, **LABELS_1K}
    if arch in ("Dinov2Model", "Dinov2WithRegistersModel"):
        registers = {"num_register_tokens": 4} if arch == "Dinov2WithRegistersModel" else {}
        shape = {**small} if tiny else {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                         "mlp_ratio": 4, "image_size": 518, "patch_size": 14}
        shape.pop("intermediate_size", None)
        return {**shape, **registers}
    if arch == "DINOv3ViTModel":
        return {**(small if tiny else {**VIT_B, "image_size": 224, "patch_size": 16}), "num_register_tokens": 4}
    if arch == "BeitForImageClassification":
        beit = {"use_relative_position_bias": True, "use_shared_relative_position_bias": False,
                "use_absolute_position_embeddings": False, "use_mean_pooling": True, "layer_scale_init_value": 0.1}
        return {**beit, **small, "num_labels": 10} if tiny else {**beit, **VIT_B, "image_size": 224,
                                                                  "patch_size": 16, **LABELS_1K}
    if arch in ("ConvNextForImageClassification", "ConvNextV2ForImageClassification"):
        return ({"hidden_sizes": [16, 32, 32, 64], "depths": [1, 1, 1, 1], "num_labels": 10} if tiny else
                {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3], **LABELS_1K})
    if arch == "ResNetForImageClassification":
        return ({"embedding_size": 16, "hidden_sizes": [16, 32, 32, 64], "depths": [1, 1, 1, 1],
                 "layer_type": "basic", "num_labels": 10} if tiny else
                {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                 "layer_type": "bottleneck", **LABELS_1K})
    if arch == "SwinForImageClassification":  # microsoft/swin-tiny-patch4-window7-224; tiny: grids 16, 8, 4
        return ({"image_size": 64, "patch_size": 4, "embed_dim": 16, "depths": [2, 2, 2], "num_heads": [2, 2, 2],
                 "window_size": 4, "num_labels": 10} if tiny else
                {"image_size": 224, "patch_size": 4, "embed_dim": 96, "depths": [2, 2, 6, 2],
                 "num_heads": [3, 6, 12, 24], "window_size": 7, **LABELS_1K})
    raise UnknownArchitectureError(
        f"hf coverage has no configuration for {arch!r} (known: {', '.join(COVERAGE_PROCESSORS)}).")


# image processor class and kwargs of each checkpoint (sizes scaled to the tiny input when tiny)
COVERAGE_PROCESSORS = {
    "CLIPModel": "CLIPImageProcessor", "CLIPVisionModel": "CLIPImageProcessor", "SiglipModel": "SiglipImageProcessor",
    "Siglip2Model": "Siglip2ImageProcessor", "SiglipVisionModel": "SiglipImageProcessor",
    "ChineseCLIPModel": "ChineseCLIPImageProcessor", "AltCLIPModel": "CLIPImageProcessor",
    "ViTForImageClassification": "ViTImageProcessor", "DeiTForImageClassificationWithTeacher": "DeiTImageProcessor",
    "Dinov2Model": "BitImageProcessor", "Dinov2WithRegistersModel": "BitImageProcessor",
    "DINOv3ViTModel": "DINOv3ViTImageProcessor", "BeitForImageClassification": "BeitImageProcessor",
    "ConvNextForImageClassification": "ConvNextImageProcessor",
    "ConvNextV2ForImageClassification": "ConvNextImageProcessor",
    "ResNetForImageClassification": "ConvNextImageProcessor",
    "SwinForImageClassification": "ViTImageProcessor",
}
# text tokenizer stand-ins: special tokens (first ones get the lowest ids unless ``last``), the template around a
# text, the pad / bos / eos tokens, and the context length of the real tokenizer
TOKENIZERS = {
    "CLIPModel": {"specials": ["<|startoftext|>", "<|endoftext|>"], "last": True,
                  "template": "<|startoftext|> $A <|endoftext|>", "pad": "<|endoftext|>", "bos": "<|startoftext|>",
                  "eos": "<|endoftext|>", "length": 77},
    "SiglipModel": {"specials": ["<pad>", "</s>", "<unk>"], "template": "$A </s>", "pad": "</s>", "eos": "</s>",
                    "length": 64},
    "Siglip2Model": {"specials": ["<pad>", "<eos>", "<bos>", "<unk>"], "template": "<bos> $A <eos>",
                     "pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "length": 64},
    "ChineseCLIPModel": {"specials": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "template": "[CLS] $A [SEP]",
                         "pad": "[PAD]", "bos": "[CLS]", "eos": "[SEP]", "length": 52},
    "AltCLIPModel": {"specials": ["<s>", "<pad>", "</s>", "<unk>"], "template": "<s> $A </s>", "pad": "<pad>",
                     "bos": "<s>", "eos": "</s>", "length": 77},
}


def _image_processor(arch: str, size: int, tiny: bool):
    import transformers

    cls = getattr(transformers, COVERAGE_PROCESSORS[arch])
    if arch == "Siglip2Model":
        return cls(patch_size=8 if tiny else 16, max_num_patches=16 if tiny else 256)
    if arch in ("SiglipModel", "SiglipVisionModel", "DINOv3ViTModel", "BeitForImageClassification",
                "ViTForImageClassification", "SwinForImageClassification"):
        return cls(size={"height": size, "width": size})
    if arch.startswith(("ConvNext", "ResNet")):
        return cls(size={"shortest_edge": size}, crop_pct=224 / 256)
    resize = round(size * 256 / 224) if arch.startswith(("Dinov2", "DeiT")) and not tiny else size
    return cls(size={"shortest_edge": resize}, crop_size={"height": size, "width": size})


def _stand_in_tokenizer(path: Path, spec: dict, context: int) -> None:
    """A byte-level tokenizer (every UTF-8 byte a token, so any language tokenizes) with the real tokenizer's
    special tokens, template and padding, written where AutoTokenizer looks: the real one would be downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = list(spec["specials"])
    ordered = alphabet + specials if spec.get("last") else specials + alphabet
    vocab = {token: i for i, token in enumerate(ordered)}
    unk = next((t for t in specials if "unk" in t.lower()), None)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    used = [t for t in specials if t in spec["template"]]
    tokenizer.post_processor = processors.TemplateProcessing(single=spec["template"],
                                                             special_tokens=[(t, vocab[t]) for t in used])
    named = {f"{role}_token": spec[role] for role in ("pad", "bos", "eos") if role in spec}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=unk, model_max_length=context, **named)
    fast.save_pretrained(path)


def save_random(arch: str, directory: Path, tiny: bool = True) -> str:
    """Build transformers class ``arch`` from its checkpoint's configuration (random weights), save it with
    ``save_pretrained`` beside its image processor (and a local stand-in tokenizer); return ``hf:DIR``."""
    import transformers

    model_cls = getattr(transformers, arch, None)
    if model_cls is None or arch not in COVERAGE_PROCESSORS:
        raise UnknownArchitectureError(
            f"hf coverage does not build {arch!r} (known: {', '.join(COVERAGE_PROCESSORS)}).")
    config = model_cls.config_class(**_configs(arch, tiny))
    model = model_cls(config).eval()
    with torch.no_grad():  # transformers starts relative position biases at zero: make them matter for parity
        for name, parameter in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.normal_(std=0.5)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    vision = getattr(config, "vision_config", config)
    size = _image_size(vision)[0] if hasattr(vision, "patch_size") else (64 if tiny else 224)
    _image_processor(arch, size, tiny).save_pretrained(directory)
    if arch in TOKENIZERS:
        spec = TOKENIZERS[arch]
        context = min(spec["length"], int(config.text_config.max_position_embeddings))
        if arch == "AltCLIPModel":  # RoBERTa positions start after the padding index
            context = min(context, int(config.text_config.max_position_embeddings) - 2)
        _stand_in_tokenizer(directory, spec, context)
    return f"hf:{directory}"


def _eager_weights(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Each block's attention weights as the module's own eager code returns them (output_attentions)."""
    from models.coverage import run_hooked

    weights: dict[str, torch.Tensor] = {}
    handles = []
    for name, site in adapter.sites.items():
        if name.endswith("pool.attn"):
            continue

        def keep(module, args, output, name=name):
            if isinstance(output, tuple) and len(output) > 1 and torch.is_tensor(output[1]):
                weights.setdefault(name, output[1].detach())
        handles.append(site.module.register_forward_hook(keep))
    run_hooked(adapter, pixels, tokens, handles)
    return weights


def eager_patterns(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every attention site's pattern from transformers' own eager attention: the saved model reloaded with
    ``attn_implementation="eager"`` (which returns its attention weights), and the SigLIP pool head's
    nn.MultiheadAttention called with ``need_weights=True`` on the recorded call."""
    from models.coverage import record_site_calls
    from models.model_ids import parse_model_id

    model_id = parse_model_id(adapter.model_id)
    eager = load(model_id, adapter.device, adapter.dtype, attn_implementation="eager")
    patterns = _eager_weights(eager, pixels, tokens)
    pools = [name for name in eager.sites if name.endswith("pool.attn")]
    if pools:
        calls = record_site_calls(eager, pixels, None)
        with torch.no_grad():
            for name in pools:
                head = eager.sites[name].module
                args, kwargs = calls[name]
                tokens_in = args[0] if args else kwargs["hidden_state"]
                probe = head.probe.expand(tokens_in.shape[0], -1, -1)
                patterns[name] = head.attention(probe, tokens_in, tokens_in, need_weights=True,
                                                average_attn_weights=False)[1]
    return patterns


register(Backend(
    name="hf", load=load,
    id_forms=("hf:REPO_OR_DIR (e.g. hf:openai/clip-vit-base-patch32)",),
    claims_dir=claims_dir,
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
    save_random=save_random,
    eager_patterns=eager_patterns,
))
