"""Hugging Face transformers: ``hf:REPO_OR_DIR`` (a hub repository or a directory saved with save_pretrained).

Owns the model types clipscope maps (CLIP, ViT-style encoders, CNNs), their layouts, the image processor's
preprocessing, the text towers, the hub-cache offline check and catalog entries.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from models.adapters.clip import CLIPAdapter, TextLayout
from models.adapters.cnn import CNNAdapter, CNNLayout, module_paths
from models.adapters.vit import ViTAdapter, ViTLayout, conv_in
from models.backends import Backend, KnownModel, common_kwargs, register
from models.errors import ModelIdError, UnknownArchitectureError
from models.model_ids import ModelId
from models.network import download_guard, host_reachable
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, square

HF_VIT_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers", "clip_vision_model"}
HF_CNN_TYPES = {"resnet", "convnext", "convnextv2"}
CATALOG = [
    KnownModel("hf:openai/clip-vit-base-patch32", "clip", 151_277_313, "OpenAI CLIP ViT-B/32, transformers", "vit"),
    KnownModel("hf:google/vit-base-patch16-224", "vit", 86_567_656, "ViT-B/16 ImageNet-1k classifier"),
]


def hub_cached(repo: str, filename: str) -> bool:
    """Is ``filename`` of hub repository ``repo`` in the local Hugging Face cache (no network asked)?"""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


# -- layouts ---------------------------------------------------------------------------------------------------------
def vit_layout(model: nn.Module) -> ViTLayout:
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
        patch_embed=conv_in(embeddings),
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


def text_layout(model: nn.Module) -> TextLayout:
    """transformers CLIPModel text tower."""
    text = model.text_model
    blocks = list(text.encoder.layers)
    return TextLayout(
        token_embed=text.embeddings.token_embedding, blocks=blocks,
        ln1=[b.layer_norm1 for b in blocks], attn=[b.self_attn for b in blocks], mlp=[b.mlp for b in blocks],
        final_norm=text.final_layer_norm, output=model.text_projection,
        context_length=int(model.config.text_config.max_position_embeddings),
        vocab_size=int(model.config.text_config.vocab_size),
    )


# -- loading ---------------------------------------------------------------------------------------------------------
def _preprocess(name: str, config) -> Preprocess:
    from transformers import AutoImageProcessor

    vision = getattr(config, "vision_config", config)
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = None
    if processor is None:
        size = square(getattr(vision, "image_size", 224))
        return Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_to=None)
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
    if crop is not None:
        final, resize_to = crop, min(resize) if resize else min(crop)
    elif resize is not None and "shortest_edge" in dict(size_cfg):
        crop_pct = getattr(processor, "crop_pct", None)
        final = resize
        resize_to = int(resize[0] / crop_pct) if crop_pct else None
    else:
        final, resize_to = resize or square(getattr(vision, "image_size", 224)), None
    resample = getattr(processor, "resample", 3)
    interpolation = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(int(resample), "bicubic")
    return Preprocess(size=tuple(final), mean=tuple(processor.image_mean), std=tuple(processor.image_std),
                      resize_to=resize_to, interpolation=interpolation)


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
        architectures = config.architectures or []
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if model_type == "clip":
            model = transformers.CLIPModel.from_pretrained(name, **kwargs)
        elif model_type in HF_VIT_TYPES | HF_CNN_TYPES:
            head = next((a for a in architectures if "ForImageClassification" in a), None)
            auto = transformers.AutoModelForImageClassification if head else transformers.AutoModel
            model = auto.from_pretrained(name, **kwargs)
        else:
            raise UnknownArchitectureError(
                f"Model id {model_id.raw!r}: transformers model type {model_type!r} is not supported "
                f"(supported: clip, {', '.join(sorted(HF_VIT_TYPES | HF_CNN_TYPES))}).")
        preprocess = _preprocess(name, config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name) if model_type == "clip" else None
    model = model.to(device=device, dtype=dtype).eval()
    common = common_kwargs(model_id, device, dtype)
    if model_type == "clip":
        vision = model.vision_model
        visual = ViTAdapter(vit_layout(model), forward=lambda px: model.visual_projection(
            vision(pixel_values=px).pooler_output), module=vision, preprocess=preprocess, **common)
        context = int(config.text_config.max_position_embeddings)

        def tokenize(texts):
            return tokenizer(list(texts), padding="max_length", truncation=True, max_length=context,
                             return_tensors="pt")["input_ids"]
        text = text_layout(model)
        eos = model.config.text_config.eos_token_id
        if eos != 2:  # transformers' own rule: the first end-of-text token (older configs: the highest id)
            text.pooled_index = lambda ids: (ids == eos).int().argmax(dim=-1)
        text.token_text = lambda i: tokenizer.convert_ids_to_tokens(i).replace("</w>", "")
        return CLIPAdapter(
            visual=visual, text=text,
            encode_text_tokens=lambda ids: model.text_projection(model.text_model(input_ids=ids).pooler_output),
            tokenize=tokenize, logit_scale=lambda: model.logit_scale,
            count_tokens=lambda text: len(tokenizer(text, truncation=False)["input_ids"]),
            module=model, preprocess=preprocess, **common)
    if model_type in HF_VIT_TYPES:
        def forward(px):
            out = model(pixel_values=px)
            return out.logits if hasattr(out, "logits") else out.last_hidden_state
        return ViTAdapter(vit_layout(model), forward=forward, module=model, preprocess=preprocess, **common)

    def forward(px):
        out = model(pixel_values=px)
        return out.logits if hasattr(out, "logits") else out.pooler_output
    return CNNAdapter(cnn_layout(model), forward=forward, module=model, preprocess=preprocess, **common)


# -- local directories, offline --------------------------------------------------------------------------------------
def claims_dir(path: Path) -> bool:
    """A directory written by save_pretrained: config.json with a model_type."""
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def usable_offline(name: str) -> bool:
    return Path(name).exists() or hub_cached(name, "config.json")


register(Backend(
    name="hf", load=load,
    id_forms=("hf:REPO_OR_DIR (e.g. hf:openai/clip-vit-base-patch32)",),
    claims_dir=claims_dir,
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
))
