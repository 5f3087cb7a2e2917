"""open_clip: ``open_clip:ARCH/PRETRAINED``, ``open_clip:hf-hub:ORG/REPO``, ``open_clip:local-dir:PATH``.

Owns open_clip's id forms, loading, its image towers (VisionTransformer, with CoCa's attentional pooler as an
attention-pool readout; ModifiedResNet; TimmModel trunks such as SigLIP, EVA02, PE-Core, MobileCLIP and ConvNeXt,
adapted by ``models.backends.timm.adapter_for``) and text towers (TextTransformer, causal or not, pooled where its
config says; Hugging Face encoders such as XLM-R), its preprocessing config, offline check, catalog entries and
coverage builders.
"""
from __future__ import annotations

import json
from collections.abc import Callable
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
from models.tokens import token_classifier

CATALOG = [
    KnownModel("open_clip:ViT-B-32/openai", "clip", 151_277_313, "OpenAI CLIP ViT-B/32", "vit"),
    KnownModel("open_clip:ViT-B-16/openai", "clip", 149_620_737, "OpenAI CLIP ViT-B/16", "vit"),
    KnownModel("open_clip:ViT-L-14/openai", "clip", 427_616_513, "OpenAI CLIP ViT-L/14", "vit"),
    KnownModel("open_clip:RN50/openai", "clip", 102_007_137, "OpenAI CLIP ResNet-50 (attention pool)", "cnn"),
    KnownModel("open_clip:ViT-B-32/laion2b_s34b_b79k", "clip", 151_277_313, "LAION-2B ViT-B/32", "vit"),
    KnownModel("open_clip:ViT-B-16-SigLIP/webli", "clip", 203_155_970,
               "SigLIP ViT-B/16 (attention-pool readout, sigmoid scores)", "vit"),
    KnownModel("open_clip:EVA02-B-16/merged2b_s8b_b131k", "clip", 149_691_137,
               "EVA02-CLIP B/16 (rotary positions)", "vit"),
    KnownModel("open_clip:MobileCLIP-S1/datacompdr", "clip", 84_969_729,
               "MobileCLIP-S1 (FastViT hybrid image tower)", "hierarchical"),
    KnownModel("open_clip:coca_ViT-B-32/laion2b_s13b_b90k", "clip", 253_560_065,
               "CoCa ViT-B/32 (attentional-pooler readout)", "vit"),
]


# -- layouts ---------------------------------------------------------------------------------------------------------
def vit_layout(visual: nn.Module) -> ViTLayout:
    """open_clip VisionTransformer (model.visual): class-token, mean or (CoCa) attentional-pooler readout."""
    blocks = list(visual.transformer.resblocks)
    pool = visual.attn_pool
    if pool is not None and visual.attn_pool_contrastive is not None:
        raise UnknownArchitectureError(
            f"open_clip attentional pooling {visual.attn_pool_type!r} (two poolers) is not supported; the original "
            "CoCa pooler is (e.g. open_clip:coca_ViT-B-32).")
    if pool is not None:  # CoCa: probes attend over every token, ln_post and the projection act on the probes
        readout, final_norm, project = "attention_pool", None, _pooler_value_path(visual)
    else:
        readout, final_norm = ("mean" if visual.pool_type == "avg" else "cls"), visual.ln_post
        project = lambda tokens: visual.ln_post(tokens) @ visual.proj  # noqa: E731
    return ViTLayout(
        patch_embed=visual.conv1,
        blocks=blocks,
        ln1=[b.ln_1 for b in blocks],
        attn=[b.attn for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=final_norm,
        patch_size=square(visual.patch_size),
        image_size=square(visual.image_size),
        prefix_tokens=["cls"],  # open_clip always prepends one class token
        pos_embed=lambda: visual.positional_embedding.detach(),
        output=visual,
        output_name="image_embed",
        project_tokens=project,
        readout_projection=None if pool is not None else _project(nn.Identity(), visual.proj),
        readout=readout,
        pool=pool,
        # after the pooler, open_clip's own _global_pool: "tok" reads probe 0, "avg" the mean of probes 1..
        pool_probes=None if pool is None else {"tok": (0,), "avg": tuple(range(1, pool.query.shape[0]))}.get(
            visual.pool_type),
    )


def _value(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention's value projection of ``x`` (its own weights), heads concatenated."""
    weight = mha.in_proj_weight.chunk(3)[2] if mha._qkv_same_embed_dim else mha.v_proj_weight
    bias = None if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)[2]
    return torch.nn.functional.linear(x, weight, bias)


def _pooler_value_path(visual: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """CoCa per-token projection: the embedding the pooler gives when its probe attends to that token alone.

    A probe's output is sum_t a_t out_proj(v_t) (the weights sum to one), so a token's own path to the embedding
    is out_proj(v_t) followed by what the tower does to the pooled probe (ln_post, projection).
    """
    pool = visual.attn_pool
    return lambda tokens: visual.ln_post(pool.attn.out_proj(_value(pool.attn, pool.ln_k(tokens)))) @ visual.proj


def _pooled_index(pool_type: str, eos_id: int | None, appended_cls: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Where the tower pools, as open_clip's own ``text_global_pool`` picks it (a position per text)."""
    def at(position: Callable[[torch.Tensor], int]):
        return lambda ids: torch.full((ids.shape[0],), position(ids), dtype=torch.long, device=ids.device)

    if appended_cls:  # CoCa: a class token appended after the text is pooled, whatever pool_type says
        return at(lambda ids: ids.shape[-1])
    if pool_type == "argmax":  # OpenAI's tokenizer: the end-of-text token has the highest id
        return lambda ids: ids.argmax(dim=-1)
    if pool_type == "eos":  # mT5-style tokenizers (MetaCLIP 2): the tokenizer's own end-of-text id
        return lambda ids: (ids == eos_id).int().argmax(dim=-1)
    if pool_type == "last":  # SigLIP
        return at(lambda ids: ids.shape[-1] - 1)
    if pool_type == "first":
        return at(lambda ids: 0)
    raise UnknownArchitectureError(
        f"open_clip text towers with pool_type={pool_type!r} have no pooled token; clipscope supports "
        "'argmax', 'eos', 'last' and 'first' (e.g. open_clip:ViT-B-32).")


def _tokenizer_end_id(tokenizer) -> int | None:
    """The end-of-text id of an open_clip tokenizer: SimpleTokenizer's <end_of_text>, or the wrapped transformers
    tokenizer's separator / end-of-sequence id."""
    eot = getattr(tokenizer, "eot_token_id", None)
    inner = getattr(tokenizer, "tokenizer", None)
    return eot if eot is not None else getattr(inner, "sep_token_id", None) or getattr(inner, "eos_token_id", None)


def _project(norm: nn.Module, projection) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tower's final norm then its projection (a Linear, a bare matrix, or none) on any tokens."""
    if isinstance(projection, nn.Module):
        return lambda tokens: projection(norm(tokens))
    if projection is None:
        return norm
    return lambda tokens: norm(tokens) @ projection


def text_layout(model: nn.Module, tokenizer=None) -> TextLayout:
    """open_clip CLIP (text tower inline), CustomTextCLIP or CoCa (``model.text`` is a TextTransformer).

    Causality, pooling and projection are read from the tower: ``attn_mask`` is None for bidirectional towers
    (SigLIP, MobileCLIP, CLIPA: ``no_causal_mask``), ``pool_type``/``eos_id`` say which token is pooled.
    """
    tower = getattr(model, "text", model)
    if not hasattr(tower, "transformer") or not hasattr(tower, "token_embedding"):
        raise UnknownArchitectureError(
            f"open_clip text tower {type(tower).__name__} is not a TextTransformer or HFTextEncoder "
            "(supported: e.g. open_clip:ViT-B-32, open_clip:xlm-roberta-base-ViT-B-32).")
    inline = tower is model
    pool_type = model.text_pool_type if inline else tower.pool_type
    eos_id = model.text_eos_id if inline else getattr(tower, "eos_id", None)
    blocks = list(tower.transformer.resblocks)
    projection = tower.text_projection
    appended_cls = getattr(tower, "cls_emb", None) is not None
    return TextLayout(
        token_embed=tower.token_embedding, blocks=blocks,
        ln1=[b.ln_1 for b in blocks], attn=[b.attn for b in blocks], mlp=[b.mlp for b in blocks],
        final_norm=tower.ln_final, output=projection if isinstance(projection, nn.Module) else None,
        context_length=int(getattr(tower, "context_length", None) or model.context_length),
        vocab_size=int(getattr(tower, "vocab_size", None) or model.vocab_size),
        causal=tower.attn_mask is not None,
        pooled_index=_pooled_index(pool_type, eos_id, appended_cls),
        # where the pooled token is not the end of the text (SigLIP's last position, CoCa), the tokenizer's end id
        end_id=None if pool_type in ("argmax", "eos") and not appended_cls else _tokenizer_end_id(tokenizer),
        project_tokens=_project(tower.ln_final, projection),
    )


def hf_text_layout(tower: nn.Module, tokenizer) -> TextLayout:
    """open_clip CustomTextCLIP whose text tower is a Hugging Face encoder (``HFTextEncoder``, e.g. XLM-RoBERTa).

    Post-norm, bidirectional, fed a padding mask by the tower itself; pooled by its own pooler (mean or first
    token). The tokenizer's context length is the one the model is fed with, not the encoder's position table.
    """
    from open_clip.hf_model import ClsLastHiddenStatePooler, MeanPooler

    from models.backends.hf import encoder_text_stack

    if not isinstance(tower.pooler, (MeanPooler, ClsLastHiddenStatePooler)):
        raise UnknownArchitectureError(
            f"open_clip HF text tower pooler {type(tower.pooler).__name__} is not supported "
            "(supported: mean_pooler, cls_last_hidden_state_pooler, e.g. open_clip:xlm-roberta-base-ViT-B-32).")
    hf_tokenizer = getattr(tokenizer, "tokenizer", None)
    end_id = getattr(hf_tokenizer, "sep_token_id", None) or getattr(hf_tokenizer, "eos_token_id", None)
    mean = isinstance(tower.pooler, MeanPooler)
    stack = encoder_text_stack(tower.transformer)
    layout = TextLayout(
        token_embed=tower.transformer.get_input_embeddings(),
        blocks=stack.blocks, ln1=stack.ln1, attn=stack.attn, mlp=stack.mlp, causal=False,
        final_norm=None, output=tower.proj,
        context_length=int(tokenizer.context_length), vocab_size=int(tower.config.vocab_size),
        readout="mean" if mean else "token",
        end_id=end_id,
        # a post-norm encoder has no final norm; mean or first-token pooling commutes with a linear projection
        project_tokens=tower.proj if isinstance(tower.proj, (nn.Linear, nn.Identity)) else None,
    )
    if not mean:
        layout.pooled_index = lambda ids: torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    elif end_id is not None:  # mean pooled: the tokens shown run to the end-of-text token
        layout.pooled_index = lambda ids: (ids == end_id).int().argmax(dim=-1)
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


def image_tower(visual: nn.Module, preprocess: Preprocess, common: dict):
    """The adapter of open_clip's ``model.visual``: its own VisionTransformer, ModifiedResNet, or a timm trunk."""
    from open_clip.model import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        # CoCa's tower also returns its probe tokens; the image embedding is the first output
        forward = (lambda pixels: visual(pixels)[0]) if visual.output_tokens else visual
        return ViTAdapter(vit_layout(visual), forward=forward, module=visual, preprocess=preprocess, **common)
    if isinstance(visual, ModifiedResNet):
        return CNNAdapter(resnet_style_layout(visual, [], head_name="image_embed"), forward=visual,
                          module=visual, preprocess=preprocess, **common)
    if isinstance(visual, TimmModel):  # SigLIP, EVA02, PE-Core, MobileCLIP, ConvNeXt: a timm trunk + open_clip head
        from models.backends.timm import adapter_for

        adapter = adapter_for(visual.trunk, class_names=[], preprocess=preprocess, common=common, forward=visual,
                              output=visual, output_name="image_embed", project_tokens=timm_project_tokens(visual))
        if isinstance(adapter, ViTAdapter):  # after the trunk's final norm: its pooling heads, then open_clip's head
            adapter.layout.readout_projection = lambda y: visual.head(visual.trunk.head(visual.trunk.fc_norm(y)))
        return adapter
    raise UnknownArchitectureError(
        f"{common.get('model_id', 'this model')}: open_clip image tower {type(visual).__name__} is not supported "
        "(supported: VisionTransformer, ModifiedResNet, TimmModel, e.g. open_clip:ViT-B-32, open_clip:RN50, "
        "open_clip:ViT-B-16-SigLIP).")


def timm_project_tokens(visual: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A timm trunk's own norms and heads applied to every last-block token, for per-patch zero-shot.

    Class-token or mean readouts: each token through the final norms and heads. An attention-pool (MAP) readout
    mixes tokens inside the pool; a token's own path is the embedding the pool gives when its probe attends to that
    token alone: out = proj(v_t), then the pool's residual MLP and the heads. None for trunks without tokens.
    """
    trunk = visual.trunk
    if not hasattr(trunk, "blocks") or not hasattr(trunk, "fc_norm"):
        return None
    pool = getattr(trunk, "attn_pool", None)

    def heads(x: torch.Tensor) -> torch.Tensor:
        return visual.head(trunk.head(trunk.fc_norm(x)))

    if pool is None:
        if getattr(trunk, "global_pool", "") not in ("token", "avg"):
            return None
        return lambda tokens: heads(trunk.norm(tokens))
    if getattr(pool, "pos_embed", None) is not None or pool.pool != "token" or pool.latent.shape[1] != 1:
        return None

    def value_path(tokens: torch.Tensor) -> torch.Tensor:
        value = pool.kv(trunk.norm(tokens)).chunk(2, dim=-1)[1]   # kv's rows are (key | value)
        out = pool.proj(value)
        return heads(out + pool.mlp(pool.norm(out)) if pool.mlp is not None else out)
    return value_path


def _model_config(arch: str) -> dict | None:
    """The model config open_clip will build ``arch`` from, where it is known without a download."""
    import open_clip

    if arch.startswith("local-dir:"):
        return json.loads((Path(arch[len("local-dir:"):]).expanduser() / "open_clip_config.json").read_text()
                          ).get("model_cfg")
    if arch.startswith("hf-hub:"):  # only where the hub config is already cached (else open_clip fetches it)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(arch[len("hf-hub:"):].split("@")[0], "open_clip_config.json")
        return json.loads(Path(cached).read_text()).get("model_cfg") if isinstance(cached, str) else None
    return open_clip.get_model_config(arch)


def check_config(model_id: ModelId, cfg: dict | None) -> None:
    """Refuse what clipscope cannot map, from the config alone, before the model is built."""
    if not cfg:
        return
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    pooler = vision.get("attentional_pool")
    if isinstance(pooler, str):
        raise UnknownArchitectureError(
            f"{model_id.raw}: open_clip VisionTransformer with attentional_pool={pooler!r} (two poolers) is not "
            "supported; the original CoCa pooler is (e.g. open_clip:coca_ViT-B-32).")
    pool_type = text.get("pool_type", "argmax")
    if "hf_model_name" not in text and pool_type not in ("argmax", "eos", "last", "first"):
        raise UnknownArchitectureError(
            f"{model_id.raw}: open_clip TextTransformer with pool_type={pool_type!r} has no pooled token; "
            "supported: 'argmax', 'eos', 'last', 'first' (e.g. open_clip:ViT-B-32).")
    hf_pooler = text.get("hf_pooler_type", "mean_pooler")
    if "hf_model_name" in text and hf_pooler not in ("mean_pooler", "cls_last_hidden_state_pooler"):
        raise UnknownArchitectureError(
            f"{model_id.raw}: open_clip HFTextEncoder with hf_pooler_type={hf_pooler!r} is not supported; "
            "supported: mean_pooler, cls_last_hidden_state_pooler (e.g. open_clip:xlm-roberta-base-ViT-B-32).")


def load(model_id: ModelId, device, dtype):
    import open_clip
    from open_clip.hf_model import HFTextEncoder

    arch, pretrained = _resolve(model_id)
    check_config(model_id, _model_config(arch))
    with download_guard(model_id.raw):
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    model = model.to(device=device, dtype=dtype).eval()
    visual = model.visual
    preprocess = _preprocess(visual)
    common = common_kwargs(model_id, device, dtype)
    visual_adapter = image_tower(visual, preprocess, common)
    if isinstance(getattr(model, "text", None), HFTextEncoder):  # multilingual (XLM-RoBERTa) and other HF towers
        text = hf_text_layout(model.text, tokenizer)
    else:
        text = text_layout(model, tokenizer)
    decoder = getattr(tokenizer, "decoder", None)
    hf_tokenizer = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers tokenizer
    if decoder is not None:  # open_clip's SimpleTokenizer: byte-level BPE pieces, "</w>" ends a word
        text.token_text = lambda i: decoder.get(i, f"<{i}>").replace("</w>", " ").strip() or " "
    elif hasattr(hf_tokenizer, "convert_ids_to_tokens"):
        text.token_text = hf_tokenizer.convert_ids_to_tokens
    text.token_kind = token_classifier(tokenizer)
    return CLIPAdapter(
        visual=visual_adapter, text=text,
        encode_text_tokens=lambda tokens: model.encode_text(tokens, normalize=False), tokenize=tokenizer,
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
# timm trunks: a small registered model of the same timm class stands in for each (open_clip's TimmModel takes a
# timm model name, not its sizes), at its own input size, or a smaller one where the class takes any size
TINY_TIMM = {
    "convnext_base": ("test_convnext", None),                         # ConvNeXt
    "eva02_base_patch16_clip_224": ("eva02_tiny_patch14_224", None),  # Eva (rotary positions, SwiGLU)
    "fastvit_mci1": ("fastvit_mci0", 128),                            # FastVit (RepMixer stages, attention last)
    "fastvit_mci2": ("fastvit_mci0", 128),
    "vit_pe_core_base_patch16_224": ("vit_pe_core_tiny_patch16_384", None),  # Eva with an attention-pool head
    "vit_base_patch16_siglip_224": ("test_vit3", None),               # VisionTransformer with a MAP head
    "vit_so400m_patch14_siglip_224": ("test_vit3", None),
}

# the real text tower of open_clip's xlm-roberta-* models (transformers' xlm-roberta-base config)
XLM_ROBERTA_BASE = {
    "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 514, "type_vocab_size": 1,
    "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}


def _tiny_config(cfg: dict) -> dict:
    """The same classes as ``cfg`` at a size that builds and runs in a second on a CPU."""
    import timm

    cfg = json.loads(json.dumps(cfg))
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    cfg["embed_dim"] = 32
    if "timm_model_name" in vision:
        if vision["timm_model_name"] not in TINY_TIMM:
            raise UnknownArchitectureError(f"No tiny stand-in for timm trunk {vision['timm_model_name']!r}.")
        name, size = TINY_TIMM[vision["timm_model_name"]]
        vision.update(timm_model_name=name, image_size=size or timm.models.get_pretrained_cfg(name).input_size[-1])
        if vision.get("timm_proj") == "none":  # the trunk's own features are the embedding: keep their width
            cfg["embed_dim"] = timm.create_model(name, num_classes=0).num_features
    elif isinstance(vision.get("layers"), list):  # ModifiedResNet
        vision.update(layers=[1, 1, 1, 1], width=16, image_size=64)
    else:
        patch = vision.get("patch_size", 16)
        vision.update(layers=2, width=64, head_width=16, image_size=4 * patch)
    context = min(int(text.get("context_length", 77)), 16)
    if "hf_model_name" not in text:
        text.update(width=32, heads=4, layers=2, context_length=context)
    else:
        text.update(context_length=context)
    if "multimodal_cfg" in cfg:  # CoCa's captioning decoder
        cfg["multimodal_cfg"].update(width=32, heads=4, layers=1, context_length=context)
    return cfg


def _tokenizer_family(name: str) -> str:
    """Which special tokens a hub tokenizer has: SigLIP 2 uses Gemma's, XLM-R its own, SigLIP and mT5 T5's."""
    return "gemma" if "siglip2" in name.lower() else "xlm-roberta" if "xlm-roberta" in name.lower() else "t5"


def _local_text_files(cfg: dict, directory: Path, tiny: bool) -> None:
    """Point what the text tower would download at local files in ``directory``: a stand-in tokenizer (open_clip's
    local-dir loader reads the tokenizer from the model folder) and a Hugging Face text tower's config."""
    from models.backends.stand_in import byte_tokenizer

    text = cfg["text_cfg"]
    hub_tokenizer = text.get("hf_tokenizer_name") or text.get("hf_model_name")
    if not hub_tokenizer:
        return
    vocab = byte_tokenizer(directory, _tokenizer_family(hub_tokenizer))
    text["hf_tokenizer_name"] = str(directory)
    if "hf_model_name" in text:
        from transformers import AutoConfig

        if "xlm-roberta" not in text["hf_model_name"]:
            raise UnknownArchitectureError(f"No local config for HF text tower {text['hf_model_name']!r}.")
        sizes = dict(XLM_ROBERTA_BASE)
        if tiny:
            sizes.update(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=int(text["context_length"]) + 4)
        AutoConfig.for_model("xlm-roberta", **sizes).save_pretrained(directory / "text")
        text.update(hf_model_name=str(directory / "text"), hf_model_pretrained=False)
    elif tiny:
        text["vocab_size"] = vocab


def save_random(arch: str, directory: Path, tiny: bool = True) -> str:
    """Build open_clip architecture ``arch`` from its own config (random weights), write it as a local-dir.

    With ``tiny`` the same classes at a small size (timm trunks: a small model of the same class, TINY_TIMM).
    Tokenizers and text-tower configs that would be downloaded are written as local stand-ins beside the weights.
    """
    import open_clip
    from safetensors.torch import save_file

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise unknown_name("open_clip", arch, open_clip.list_models())
    cfg = _tiny_config(cfg) if tiny else json.loads(json.dumps(cfg))
    directory.mkdir(parents=True, exist_ok=True)
    _local_text_files(cfg, directory, tiny)
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


def _pooler_eager(site, args: tuple, kwargs: dict) -> torch.Tensor:
    """CoCa ``AttentionalPooler``: its own attention called as its forward calls it, with need_weights."""
    pool = site.module
    x = pool.ln_k(args[0] if args else kwargs["x"])
    probe = pool.ln_q(pool.query).unsqueeze(0).expand(x.shape[0], -1, -1)
    return pool.attn(probe, x, x, need_weights=True, average_attn_weights=False)[1]


def _hf_text_eager(adapter, tokens: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """A Hugging Face text tower's attention weights from one text forward with transformers' eager attention
    (which prepares its own additive padding mask and returns the weights); the implementation is put back."""
    encoder = adapter.module.text.transformer
    chosen = encoder.config._attn_implementation
    weights: dict[str, torch.Tensor] = {}

    def keep(module, args, output, name: str) -> None:
        weights.setdefault(name, output[1].detach())
    handles = [adapter.sites[name].module.register_forward_hook(
        lambda module, args, output, name=name: keep(module, args, output, name)) for name in names]
    encoder.set_attn_implementation("eager")
    try:
        adapter.encode_text(tokens)
    finally:
        encoder.set_attn_implementation(chosen)
        for handle in handles:
            handle.remove()
    return weights


class _KernelInputs(torch.overrides.TorchFunctionMode):
    """Keeps what one call hands to ``scaled_dot_product_attention`` (q, k, mask, scale)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls.append((args[0], args[1], kwargs.get("attn_mask", args[3] if len(args) > 3 else None),
                               kwargs.get("scale")))
        return func(*args, **kwargs)


def _open_clip_attention_eager(site, args: tuple, kwargs: dict) -> torch.Tensor:
    """open_clip's own ``Attention``: its eager branch cannot run on its 4-d heads (``torch.bmm``), so the reference
    is softmax(q k^T * scale + mask) of exactly what the module hands to its SDPA kernel."""
    with _KernelInputs() as kernel:
        site.module(*args, **kwargs)
    if len(kernel.calls) != 1:
        raise AssertionError(f"{type(site.module).__name__}: {len(kernel.calls)} SDPA calls in one forward.")
    q, k, mask, scale = kernel.calls[0]
    scores = (q.float() @ k.float().transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    return scores.softmax(dim=-1)


def eager_patterns(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every attention site's pattern from the module's own eager code: nn.MultiheadAttention (need_weights) and
    timm modules (fused_attn=False) called on the recorded inputs, HF text towers rerun with eager attention."""
    from open_clip.transformer import AttentionalPooler

    from models.backends.timm import eager_pattern
    from models.coverage import record_site_calls

    calls = record_site_calls(adapter, pixels, tokens)
    patterns, hf_text = {}, []
    with torch.no_grad():
        for name, (args, kwargs) in calls.items():
            site = adapter.sites[name]
            if isinstance(site.module, nn.MultiheadAttention):
                patterns[name] = _mha_eager(site, args, kwargs)
            elif isinstance(site.module, AttentionalPooler):
                patterns[name] = _pooler_eager(site, args, kwargs)
            elif hasattr(site.module, "use_fsdpa"):
                patterns[name] = _open_clip_attention_eager(site, args, kwargs)
            elif hasattr(site.module, "fused_attn"):
                patterns[name] = eager_pattern(site, args, kwargs)
            elif name.startswith("text.") and hasattr(getattr(site.module, "config", None), "_attn_implementation"):
                hf_text.append(name)
            else:
                raise AssertionError(f"{name}: no eager reference for {type(site.module).__name__}.")
        if hf_text:
            patterns.update(_hf_text_eager(adapter, tokens, hf_text))
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
