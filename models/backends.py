"""One loader per backend: build the native model with its authors' code and wrap it in a family adapter."""
from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from models.clip import CLIPAdapter, hf_text_layout, open_clip_hf_text_layout, open_clip_text_layout
from models.cnn import CNNAdapter, by_resolution_layout, hf_cnn_layout, resnet_style_layout, timm_cnn_layout
from models.errors import ModelIdError, ModelUnavailableOfflineError, UnknownArchitectureError
from models.model_ids import ModelId, detect_local_format
from models.network import download_guard, host_reachable
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, square
from models.vit import ViTAdapter, hf_vit_layout, open_clip_vit_layout, timm_vit_layout, torchvision_vit_layout

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def _unknown(kind: str, name: str, known: list[str]) -> UnknownArchitectureError:
    close = difflib.get_close_matches(name, known, n=5)
    return UnknownArchitectureError(f"{kind} does not know {name!r}. Close names: {', '.join(close) or 'none'}.")


def _common(model_id: ModelId, device, dtype) -> dict:
    return {"model_id": model_id.raw, "backend": model_id.backend, "device": device, "dtype": dtype}


# -- bundled ---------------------------------------------------------------------------------------------------------
def bundled_names() -> list[str]:
    """Names of the bundled models present in this checkout."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir() and any(p.glob("*.json")))


def bundled_path(name: str) -> Path:
    path = BUNDLED_DIR / name
    if name not in bundled_names():
        raise ModelIdError(f"Model id 'bundled:{name}': no bundled model of that name. "
                           f"Bundled: {', '.join(bundled_names()) or 'none built yet'} "
                           "(rebuild with `python -m models.train_bundled NAME`).")
    return path


def load_bundled(model_id: ModelId, device, dtype):
    path = bundled_path(model_id.name)
    backend = detect_local_format(path)
    inner = ModelId(backend, f"local-dir:{path}" if backend in ("open_clip", "timm") else str(path), model_id.raw)
    adapter = LOADERS[backend](inner, device, dtype)
    adapter.backend = f"bundled ({backend})"
    return adapter


# -- open_clip -------------------------------------------------------------------------------------------------------
def _open_clip_preprocess(visual: nn.Module) -> Preprocess:
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = square(cfg.get("size", visual.image_size))
    mode = cfg.get("resize_mode", "shortest")
    return Preprocess(size=size, mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                      resize_to=None if mode == "squash" else min(size),
                      interpolation=cfg.get("interpolation", "bicubic"))


def load_open_clip(model_id: ModelId, device, dtype):
    import open_clip
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    name = model_id.name
    if name.startswith(("hf-hub:", "local-dir:")):
        arch, pretrained = name, None
        if name.startswith("local-dir:"):
            local = Path(name[len("local-dir:"):]).expanduser()
            if not (local / "open_clip_config.json").exists():
                raise ModelIdError(f"Model id {model_id.raw!r}: {local} holds no open_clip_config.json.")
    else:
        arch, _, pretrained = name.partition("/")
        if arch not in open_clip.list_models():
            raise _unknown("open_clip", arch, open_clip.list_models())
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not pretrained:
            example = tags[0] if tags else "TAG"
            raise ModelIdError(f"Model id {model_id.raw!r}: name the weights, e.g. open_clip:{arch}/{example} "
                               f"(known for {arch}: {', '.join(tags) or 'none'}; 'none' for random weights).")
        if pretrained.lower() in ("none", "random"):  # the architecture with random weights
            pretrained = None
        elif pretrained not in tags and not Path(pretrained).exists():
            raise UnknownArchitectureError(
                f"open_clip has no weights {pretrained!r} for {arch}. Known: {', '.join(tags) or 'none'}.")
    with download_guard(model_id.raw):
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    model = model.to(device=device, dtype=dtype).eval()
    visual = model.visual
    preprocess = _open_clip_preprocess(visual)
    common = _common(model_id, device, dtype)
    if isinstance(visual, VisionTransformer):
        visual_adapter = ViTAdapter(open_clip_vit_layout(visual), forward=visual, module=visual,
                                    preprocess=preprocess, **common)
    elif isinstance(visual, ModifiedResNet):
        visual_adapter = CNNAdapter(resnet_style_layout(visual, [], head_name="image_embed"), forward=visual,
                                    module=visual, preprocess=preprocess, **common)
    else:
        raise UnknownArchitectureError(f"open_clip image tower {type(visual).__name__} is not supported yet.")
    if isinstance(getattr(model, "text", None), HFTextEncoder):  # multilingual (XLM-RoBERTa) and other HF towers
        text_layout = open_clip_hf_text_layout(model.text, tokenizer)
    else:
        text_layout = open_clip_text_layout(model)
    decoder = getattr(tokenizer, "decoder", None)
    if decoder is not None:  # open_clip's SimpleTokenizer: byte-level BPE pieces, "</w>" ends a word
        text_layout.token_text = lambda i: decoder.get(i, f"<{i}>").replace("</w>", " ").strip() or " "
    return CLIPAdapter(
        visual=visual_adapter, text=text_layout,
        encode_text_tokens=model.encode_text, tokenize=tokenizer,
        logit_scale=lambda: model.logit_scale,
        logit_bias=lambda: getattr(model, "logit_bias", None),
        count_tokens=_open_clip_token_counter(tokenizer),
        module=model, preprocess=preprocess, **common,
    )


def _open_clip_token_counter(tokenizer):
    """Untruncated token count (special tokens included) with an open_clip tokenizer, or None if unknown."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # SimpleTokenizer: <sot> text <eot>
        return lambda text: len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer / SigLipTokenizer wrap a transformers tokenizer
    if inner is not None:
        clean = getattr(tokenizer, "clean_fn", None) or (lambda text: text)
        return lambda text: len(inner(clean(text), truncation=False)["input_ids"])
    return None


# -- transformers ----------------------------------------------------------------------------------------------------
HF_VIT_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers", "clip_vision_model"}
HF_CNN_TYPES = {"resnet", "convnext", "convnextv2"}


def _hf_preprocess(name: str, config) -> Preprocess:
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


def load_hf(model_id: ModelId, device, dtype, attn_implementation: str | None = None):
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
        preprocess = _hf_preprocess(name, config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name) if model_type == "clip" else None
    model = model.to(device=device, dtype=dtype).eval()
    common = _common(model_id, device, dtype)
    if model_type == "clip":
        vision = model.vision_model
        visual = ViTAdapter(hf_vit_layout(model), forward=lambda px: model.visual_projection(
            vision(pixel_values=px).pooler_output), module=vision, preprocess=preprocess, **common)
        context = int(config.text_config.max_position_embeddings)

        def tokenize(texts):
            return tokenizer(list(texts), padding="max_length", truncation=True, max_length=context,
                             return_tensors="pt")["input_ids"]
        text_layout = hf_text_layout(model)
        eos = model.config.text_config.eos_token_id
        if eos != 2:  # transformers' own rule: the first end-of-text token (older configs: the highest id)
            text_layout.pooled_index = lambda ids: (ids == eos).int().argmax(dim=-1)
        text_layout.token_text = lambda i: tokenizer.convert_ids_to_tokens(i).replace("</w>", "")
        return CLIPAdapter(
            visual=visual, text=text_layout,
            encode_text_tokens=lambda ids: model.text_projection(model.text_model(input_ids=ids).pooler_output),
            tokenize=tokenize, logit_scale=lambda: model.logit_scale,
            count_tokens=lambda text: len(tokenizer(text, truncation=False)["input_ids"]),
            module=model, preprocess=preprocess, **common)
    if model_type in HF_VIT_TYPES:
        def forward(px):
            out = model(pixel_values=px)
            return out.logits if hasattr(out, "logits") else out.last_hidden_state
        return ViTAdapter(hf_vit_layout(model), forward=forward, module=model, preprocess=preprocess, **common)

    def forward(px):
        out = model(pixel_values=px)
        return out.logits if hasattr(out, "logits") else out.pooler_output
    return CNNAdapter(hf_cnn_layout(model), forward=forward, module=model, preprocess=preprocess, **common)


# -- timm ------------------------------------------------------------------------------------------------------------
def _timm_class_names(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if cfg.get("label_names"):
        return list(cfg["label_names"])
    num_classes = getattr(model, "num_classes", 0)
    if num_classes in (1000, 11821, 21841, 21843):
        from timm.data import ImageNetInfo, infer_imagenet_subset
        subset = infer_imagenet_subset(model)
        if subset:
            return list(ImageNetInfo(subset).label_descriptions())
    return [str(i) for i in range(num_classes)] if num_classes else []


def load_timm(model_id: ModelId, device, dtype):
    import timm
    from timm.models.vision_transformer import VisionTransformer

    name, _, weights = model_id.name.partition("/") if not model_id.name.startswith(
        ("hf-hub:", "local-dir:")) else (model_id.name, "", "")
    random_weights = weights.lower() in ("none", "random")
    if not name.startswith(("hf-hub:", "local-dir:")):
        if not timm.is_model(name.split(".")[0]):
            raise _unknown("timm", name, timm.list_models())
    with download_guard(model_id.raw):
        model = timm.create_model(name, pretrained=not random_weights)
    model = model.to(device=device, dtype=dtype).eval()
    data = timm.data.resolve_model_data_config(model)
    size = square(data["input_size"][1:])
    crop_pct = data.get("crop_pct") or 1.0
    preprocess = Preprocess(size=size, mean=tuple(data["mean"]), std=tuple(data["std"]),
                            resize_to=int(math.floor(min(size) / crop_pct)),
                            interpolation=data.get("interpolation", "bicubic"))
    common = _common(model_id, device, dtype)
    class_names = _timm_class_names(model)
    if isinstance(model, VisionTransformer):
        return ViTAdapter(timm_vit_layout(model, class_names), forward=model, module=model,
                          preprocess=preprocess, **common)
    if hasattr(model, "layer1") and hasattr(model, "fc"):
        layout = resnet_style_layout(model, class_names)
    else:
        layout = timm_cnn_layout(model, class_names)
    return CNNAdapter(layout, forward=model, module=model, preprocess=preprocess, **common)


# -- torchvision -----------------------------------------------------------------------------------------------------
TORCHVISION_CONFIG = "torchvision_config.json"


def _torchvision_adapter(model: nn.Module, class_names: list[str], preprocess: Preprocess, common: dict):
    from torchvision.models import VisionTransformer

    if isinstance(model, VisionTransformer):
        return ViTAdapter(torchvision_vit_layout(model, class_names), forward=model, module=model,
                          preprocess=preprocess, **common)
    if hasattr(model, "layer1") and hasattr(model, "fc"):
        layout = resnet_style_layout(model, class_names)
    elif hasattr(model, "features") and isinstance(model.features, nn.Sequential):
        if "swin" in type(model).__name__.lower():
            raise UnknownArchitectureError("torchvision Swin (channels-last, windowed attention) is not supported yet.")
        head = getattr(model, "classifier", None) or getattr(model, "head", None)
        layout = by_resolution_layout(model, model.features, head, class_names, preprocess.size)
    else:
        raise UnknownArchitectureError(f"torchvision {type(model).__name__} is not supported yet.")
    return CNNAdapter(layout, forward=model, module=model, preprocess=preprocess, **common)


def load_torchvision(model_id: ModelId, device, dtype):
    import torchvision

    if Path(model_id.name).is_dir():
        return _load_torchvision_dir(model_id, device, dtype)
    arch, _, weights_name = model_id.name.partition("/")
    known = torchvision.models.list_models()
    if arch not in known:
        raise _unknown("torchvision", arch, known)
    weights = None
    if weights_name.lower() not in ("none", "random"):
        enum = torchvision.models.get_model_weights(arch)
        try:
            weights = enum[weights_name or "DEFAULT"]
        except KeyError:
            raise UnknownArchitectureError(f"torchvision has no weights {weights_name!r} for {arch}. "
                                           f"Known: {', '.join(w.name for w in enum)}, or 'none' for random.") from None
    if weights is not None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not cached.exists() and not host_reachable("download.pytorch.org"):
            raise ModelUnavailableOfflineError(
                f"Model {model_id.raw!r}: weights {weights.url} are not in {cached.parent} and download.pytorch.org "
                "cannot be reached. Load it once on a machine with network and copy that file here, or use "
                f"'torchvision:{arch}/none' for random weights.")
    model = torchvision.models.get_model(arch, weights=weights).to(device=device, dtype=dtype).eval()
    if weights is not None:
        t = weights.transforms()
        preprocess = Preprocess(size=square(t.crop_size), mean=tuple(t.mean), std=tuple(t.std),
                                resize_to=min(t.resize_size), interpolation=t.interpolation.value)
        class_names = list(weights.meta.get("categories", []))
    else:
        size = (model.image_size, model.image_size) if hasattr(model, "image_size") else (224, 224)
        preprocess = Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_to=int(size[0] * 256 / 224),
                                interpolation="bilinear")
        class_names = []
    return _torchvision_adapter(model, class_names, preprocess, _common(model_id, device, dtype))


def _load_torchvision_dir(model_id: ModelId, device, dtype):
    """A directory with torchvision_config.json (arch, builder kwargs, class names, preprocess) + safetensors."""
    import torchvision
    from safetensors.torch import load_file

    path = Path(model_id.name)
    config = json.loads((path / TORCHVISION_CONFIG).read_text())
    arch, kwargs = config["arch"], config.get("kwargs", {})
    if arch in torchvision.models.list_models():
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    elif arch == "VisionTransformer":  # a custom-sized ViT (the builders fix the sizes)
        model = getattr(torchvision.models, arch)(**kwargs)
    else:
        raise UnknownArchitectureError(f"{path / TORCHVISION_CONFIG}: torchvision has no architecture {arch!r}.")
    model.load_state_dict(load_file(path / "model.safetensors"))
    pre = config.get("preprocess", {})
    size = square(pre.get("size", 224))
    preprocess = Preprocess(size=size, mean=tuple(pre.get("mean", IMAGENET_MEAN)),
                            std=tuple(pre.get("std", IMAGENET_STD)), resize_to=pre.get("resize_to"),
                            interpolation=pre.get("interpolation", "bilinear"))
    model = model.to(device=device, dtype=dtype).eval()
    class_names = list(config.get("class_names", []))
    return _torchvision_adapter(model, class_names, preprocess, _common(model_id, device, dtype))


LOADERS = {"bundled": load_bundled, "open_clip": load_open_clip, "hf": load_hf, "timm": load_timm,
           "torchvision": load_torchvision}
