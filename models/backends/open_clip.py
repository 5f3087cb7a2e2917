"""open_clip: ``open_clip:ARCH/PRETRAINED``, ``open_clip:hf-hub:ORG/REPO``, ``open_clip:local-dir:PATH``.

Owns open_clip's id forms, loading, its image towers (VisionTransformer, ModifiedResNet) and text towers
(TextTransformer, HF encoders), its preprocessing config, offline check and catalog entries.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from models.adapters.clip import CLIPAdapter, TextLayout
from models.adapters.cnn import CNNAdapter, resnet_style_layout
from models.adapters.vit import ViTAdapter, ViTLayout
from models.backends import Backend, KnownModel, common_kwargs, register, unknown_name
from models.errors import ModelIdError, UnknownArchitectureError
from models.model_ids import ModelId
from models.network import download_guard
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, square

CATALOG = [
    KnownModel("open_clip:ViT-B-32/openai", "clip", 151_277_313, "OpenAI CLIP ViT-B/32", "vit"),
    KnownModel("open_clip:ViT-B-16/openai", "clip", 149_620_737, "OpenAI CLIP ViT-B/16", "vit"),
    KnownModel("open_clip:ViT-L-14/openai", "clip", 427_616_513, "OpenAI CLIP ViT-L/14", "vit"),
    KnownModel("open_clip:RN50/openai", "clip", 102_007_137, "OpenAI CLIP ResNet-50 (attention pool)", "cnn"),
    KnownModel("open_clip:ViT-B-32/laion2b_s34b_b79k", "clip", 151_277_313, "LAION-2B ViT-B/32", "vit"),
]


# -- layouts ---------------------------------------------------------------------------------------------------------
def vit_layout(visual: nn.Module) -> ViTLayout:
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


def text_layout(model: nn.Module) -> TextLayout:
    """open_clip CLIP (text tower inline) or CustomTextCLIP (``model.text`` is a TextTransformer)."""
    tower = getattr(model, "text", model)
    if not hasattr(tower, "transformer") or not hasattr(tower, "token_embedding"):
        raise UnknownArchitectureError(
            f"open_clip text tower {type(tower).__name__} is not a TextTransformer (HF text towers are not supported).")
    blocks = list(tower.transformer.resblocks)
    projection = tower.text_projection if isinstance(tower.text_projection, nn.Module) else None
    return TextLayout(
        token_embed=tower.token_embedding, blocks=blocks,
        ln1=[b.ln_1 for b in blocks], attn=[b.attn for b in blocks], mlp=[b.mlp for b in blocks],
        final_norm=tower.ln_final, output=projection,
        context_length=int(getattr(tower, "context_length", None) or model.context_length),
        vocab_size=int(getattr(tower, "vocab_size", None) or model.vocab_size),
    )


def hf_text_layout(tower: nn.Module, tokenizer) -> TextLayout:
    """open_clip CustomTextCLIP whose text tower is a Hugging Face encoder (``HFTextEncoder``, e.g. XLM-RoBERTa).

    Its blocks are not mapped (post-norm encoders with padding masks need their own attention recomputation);
    the tokenizer's context length is the one the model is fed with, not the encoder's position table.
    """
    hf_tokenizer = getattr(tokenizer, "tokenizer", None)
    end_id = getattr(hf_tokenizer, "sep_token_id", None) or getattr(hf_tokenizer, "eos_token_id", None)
    layout = TextLayout(
        token_embed=tower.transformer.get_input_embeddings(), blocks=[], ln1=[], attn=[], mlp=[],
        final_norm=None, output=tower.proj,
        context_length=int(tokenizer.context_length), vocab_size=int(tower.config.vocab_size),
    )
    if end_id is not None:
        layout.pooled_index = lambda ids: (ids == end_id).int().argmax(dim=-1)
    if hf_tokenizer is not None:
        layout.token_text = lambda i: hf_tokenizer.convert_ids_to_tokens(i)
    return layout


# -- loading ---------------------------------------------------------------------------------------------------------
def _preprocess(visual: nn.Module) -> Preprocess:
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = square(cfg.get("size", visual.image_size))
    mode = cfg.get("resize_mode", "shortest")
    return Preprocess(size=size, mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                      resize_to=None if mode == "squash" else min(size),
                      interpolation=cfg.get("interpolation", "bicubic"))


def _token_counter(tokenizer):
    """Untruncated token count (special tokens included) with an open_clip tokenizer, or None if unknown."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # SimpleTokenizer: <sot> text <eot>
        return lambda text: len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer / SigLipTokenizer wrap a transformers tokenizer
    if inner is not None:
        clean = getattr(tokenizer, "clean_fn", None) or (lambda text: text)
        return lambda text: len(inner(clean(text), truncation=False)["input_ids"])
    return None


def _resolve(model_id: ModelId) -> tuple[str, str | None]:
    """(architecture or hub/local spec, pretrained tag or None), refusing unknown names before building."""
    import open_clip

    name = model_id.name
    if name.startswith(("hf-hub:", "local-dir:")):
        if name.startswith("local-dir:"):
            local = Path(name[len("local-dir:"):]).expanduser()
            if not (local / "open_clip_config.json").exists():
                raise ModelIdError(f"Model id {model_id.raw!r}: {local} holds no open_clip_config.json.")
        return name, None
    arch, _, pretrained = name.partition("/")
    if arch not in open_clip.list_models():
        raise unknown_name("open_clip", arch, open_clip.list_models())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not pretrained:
        example = tags[0] if tags else "TAG"
        raise ModelIdError(f"Model id {model_id.raw!r}: name the weights, e.g. open_clip:{arch}/{example} "
                           f"(known for {arch}: {', '.join(tags) or 'none'}; 'none' for random weights).")
    if pretrained.lower() in ("none", "random"):  # the architecture with random weights
        return arch, None
    if pretrained not in tags and not Path(pretrained).exists():
        raise UnknownArchitectureError(
            f"open_clip has no weights {pretrained!r} for {arch}. Known: {', '.join(tags) or 'none'}.")
    return arch, pretrained


def load(model_id: ModelId, device, dtype):
    import open_clip
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    arch, pretrained = _resolve(model_id)
    with download_guard(model_id.raw):
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    model = model.to(device=device, dtype=dtype).eval()
    visual = model.visual
    preprocess = _preprocess(visual)
    common = common_kwargs(model_id, device, dtype)
    if isinstance(visual, VisionTransformer):
        visual_adapter = ViTAdapter(vit_layout(visual), forward=visual, module=visual,
                                    preprocess=preprocess, **common)
    elif isinstance(visual, ModifiedResNet):
        visual_adapter = CNNAdapter(resnet_style_layout(visual, [], head_name="image_embed"), forward=visual,
                                    module=visual, preprocess=preprocess, **common)
    else:
        raise UnknownArchitectureError(f"open_clip image tower {type(visual).__name__} is not supported yet.")
    if isinstance(getattr(model, "text", None), HFTextEncoder):  # multilingual (XLM-RoBERTa) and other HF towers
        text = hf_text_layout(model.text, tokenizer)
    else:
        text = text_layout(model)
    decoder = getattr(tokenizer, "decoder", None)
    if decoder is not None:  # open_clip's SimpleTokenizer: byte-level BPE pieces, "</w>" ends a word
        text.token_text = lambda i: decoder.get(i, f"<{i}>").replace("</w>", " ").strip() or " "
    return CLIPAdapter(
        visual=visual_adapter, text=text,
        encode_text_tokens=model.encode_text, tokenize=tokenizer,
        logit_scale=lambda: model.logit_scale,
        logit_bias=lambda: getattr(model, "logit_bias", None),
        count_tokens=_token_counter(tokenizer),
        module=model, preprocess=preprocess, **common,
    )


# -- ids, local directories, offline ---------------------------------------------------------------------------------
def usable_offline(name: str) -> bool:
    import open_clip

    from models.backends.hf import hub_cached

    arch, _, tag = name.partition("/")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    repo = (cfg.get("hf_hub") or "").rstrip("/")
    return bool(repo) and any(hub_cached(repo, f) for f in ("open_clip_model.safetensors",
                                                            "open_clip_pytorch_model.bin"))


# -- coverage: real configurations with random weights, and the eager reference ------------------------------------
def _tiny_config(cfg: dict) -> dict:
    """The same classes as ``cfg`` at a size that builds and runs in a second on a CPU."""
    cfg = json.loads(json.dumps(cfg))
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    cfg["embed_dim"] = 32
    if "timm_model_name" not in vision:
        if isinstance(vision.get("layers"), list):  # ModifiedResNet
            vision.update(layers=[1, 1, 1, 1], width=16, image_size=64)
        else:
            patch = vision.get("patch_size", 16)
            vision.update(layers=2, width=64, head_width=16, image_size=4 * patch)
    if "hf_model_name" not in text:
        text.update(width=32, heads=4, layers=2, context_length=min(int(text.get("context_length", 77)), 16))
    return cfg


def save_random(arch: str, directory: Path, tiny: bool = True) -> str:
    """Build open_clip architecture ``arch`` from its own config (random weights), write it as a local-dir."""
    import open_clip
    from safetensors.torch import save_file

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise unknown_name("open_clip", arch, open_clip.list_models())
    cfg = _tiny_config(cfg) if tiny else json.loads(json.dumps(cfg))
    directory.mkdir(parents=True, exist_ok=True)
    size = cfg["vision_cfg"].get("image_size", 224)
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": size}}))
    model = _build(cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "open_clip_model.safetensors")
    return f"open_clip:local-dir:{directory}"


def _build(cfg: dict) -> nn.Module:
    import open_clip

    cfg = dict(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]
    cls = open_clip.model.CustomTextCLIP if custom else open_clip.model.CLIP
    if "multimodal_cfg" in cfg:
        cls = open_clip.coca_model.CoCa
    return cls(**cfg).eval()


def _mha_eager(site, args: tuple, kwargs: dict) -> torch.Tensor:
    """nn.MultiheadAttention's own eager weights for one recorded call (need_weights, per head)."""
    module = site.module
    x = args[0] if args else kwargs["query"]
    mask = kwargs.get("attn_mask")
    return module(x, x, x, need_weights=True, average_attn_weights=False, attn_mask=mask)[1]


def eager_patterns(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every attention site's pattern from the module's own eager code, called on the recorded inputs."""
    from models.coverage import record_site_calls

    calls = record_site_calls(adapter, pixels, tokens)
    patterns = {}
    with torch.no_grad():
        for name, (args, kwargs) in calls.items():
            site = adapter.sites[name]
            if isinstance(site.module, nn.MultiheadAttention):
                patterns[name] = _mha_eager(site, args, kwargs)
    return patterns


register(Backend(
    name="open_clip", load=load,
    id_forms=("open_clip:ARCH/PRETRAINED (e.g. open_clip:ViT-B-32/openai), open_clip:hf-hub:ORG/REPO, "
              "open_clip:local-dir:PATH",),
    claims_dir=lambda path: (path / "open_clip_config.json").exists(),
    local_name=lambda path: f"local-dir:{path}",
    is_local=lambda name: name.startswith("local-dir:") or Path(name).expanduser().exists(),
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
    save_random=save_random,
    eager_patterns=eager_patterns,
))
