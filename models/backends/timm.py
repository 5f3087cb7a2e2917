"""timm: ``timm:NAME[.TAG][/none]`` and ``timm:local-dir:PATH`` (a directory written by timm's save_for_hf).

Owns timm's model classes clipscope maps, their layouts, the data config's preprocessing, class names,
the hub-cache offline check, catalog entries and coverage builders. :func:`adapter_for` is the ONE function that
adapts a timm model, whether the timm backend loaded it or it is another backend's trunk (open_clip ``TimmModel``):
VisionTransformer and Eva (EVA02, DINOv3, PE: rotary attention, ``models/adapters/attention_rotary.py``) become
ViTs, with the MAP head as an attention-pool readout (``models/adapters/attention_pool.py``); Swin and FastVit
become hierarchical; attention-free models with timm's ``feature_info`` become CNNs; the rest is refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from models.adapters.base import ModelAdapter
from models.adapters.cnn import CNNAdapter, CNNLayout, module_paths, resnet_style_layout
from models.adapters.hierarchical import (
    GLOBAL,
    PATCH_MERGE,
    HierarchicalAdapter,
    HierarchicalLayout,
    StageAttention,
    window_reach,
)
from models.adapters.vit import ViTAdapter, ViTLayout, channels_first_to_tokens, channels_last_to_tokens
from models.backends import Backend, KnownModel, common_kwargs, register, unknown_name
from models.errors import UnknownArchitectureError
from models.model_ids import ModelId
from models.network import download_guard
from models.preprocess import Preprocess, square

CATALOG = [
    KnownModel("timm:vit_small_patch16_224.augreg_in21k_ft_in1k", "vit", 22_050_664, "ViT-S/16 AugReg"),
    KnownModel("timm:vit_base_patch14_reg4_dinov2.lvd142m", "vit", 86_582_016, "DINOv2 ViT-B/14, 4 registers"),
    KnownModel("timm:vit_base_patch16_dinov3.lvd1689m", "vit", 85_641_216, "DINOv3 ViT-B/16 (rotary, 4 registers)"),
    KnownModel("timm:eva02_base_patch14_224.mim_in22k", "vit", 85_758_720, "EVA02-B/14 MIM (rotary)"),
    KnownModel("timm:vit_base_patch16_siglip_224.webli", "vit", 92_884_224, "SigLIP ViT-B/16 image tower (MAP head)"),
    KnownModel("timm:convnext_tiny.in12k_ft_in1k", "cnn", 28_589_128, "ConvNeXt-T IN-12k -> IN-1k"),
    KnownModel("timm:swin_tiny_patch4_window7_224.ms_in1k", "hierarchical", 28_288_354,
               "Swin-T: shifted 7x7 windows, channels-last stages"),
]


# -- layouts ---------------------------------------------------------------------------------------------------------
def _prefix_tokens(model: nn.Module) -> list[str]:
    """The tokens before the patches, in the order timm concatenates them: cls, dist (DeiT), reg0.. ."""
    prefix = ["cls"] if getattr(model, "cls_token", None) is not None else []
    if getattr(model, "dist_token", None) is not None:
        prefix.append("dist")
    registers = getattr(model, "reg_token", None)
    prefix += [f"reg{i}" for i in range(registers.shape[1] if registers is not None else 0)]
    if len(prefix) != model.num_prefix_tokens:
        raise UnknownArchitectureError(f"timm {type(model).__name__}: {model.num_prefix_tokens} prefix tokens, "
                                       f"clipscope found {prefix}.")
    return prefix


def _readout(model: nn.Module) -> str:
    """What the pooled output reads: the MAP head ("attention_pool"), the class token, or the patches' mean."""
    if getattr(model, "attn_pool", None) is not None:
        return "attention_pool"
    pool = getattr(model, "global_pool", "token")
    if pool in ("avg", "avgmax", "max"):
        return "mean"
    return "cls" if getattr(model, "cls_token", None) is not None else "mean"


def vit_layout(model: nn.Module, class_names: list[str], output: nn.Module | None = None,
               output_name: str | None = None,
               project_tokens: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ViTLayout:
    """timm VisionTransformer (registers, distilled DeiT, SigLIP's MAP head) and Eva (EVA02, DINOv3, PE: rotary).

    ``output`` / ``output_name``: the module whose output is the model's result and its canonical name; by default
    the model itself, "logits" (or "final_output" when it has no classifier).
    """
    blocks = list(model.blocks)
    prefix = _prefix_tokens(model)
    output_fmt = getattr(model.patch_embed, "output_fmt", None)
    transform = channels_last_to_tokens if str(output_fmt).endswith("NHWC") else channels_first_to_tokens
    classifier = getattr(model, "num_classes", 0) > 0   # (DeiT-distilled's get_classifier is a pair of heads)
    readout = _readout(model)
    input_size = model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    return ViTLayout(
        patch_embed=model.patch_embed,
        blocks=blocks,
        ln1=[b.norm1 for b in blocks],
        attn=[b.attn for b in blocks],
        mlp=[b.mlp for b in blocks],
        final_norm=None if isinstance(model.norm, nn.Identity) else model.norm,
        patch_size=square(model.patch_embed.patch_size),
        image_size=square(model.patch_embed.img_size or input_size),
        prefix_tokens=prefix,
        pos_embed=(lambda: model.pos_embed.detach()[0]) if model.pos_embed is not None else None,
        pos_embed_prefix_rows=0 if getattr(model, "no_embed_class", False) else len(prefix),
        patch_embed_transform=transform,
        output=output if output is not None else model,
        output_name=output_name or ("logits" if classifier else "final_output"),
        class_names=class_names if classifier and output is None else [],
        project_tokens=project_tokens,
        readout=readout,
        pool=model.attn_pool if readout == "attention_pool" else None,
        pool_skips_prefix=not getattr(model, "pool_include_prefix", True),
    )


def cnn_layout(model: nn.Module, class_names: list[str]) -> CNNLayout:
    """timm CNNs: stages are the modules timm's own feature_info names."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise UnknownArchitectureError(f"timm model {type(model).__name__} has no feature_info.")
    paths = [entry["module"] for entry in info]
    modules = [model.get_submodule(p) for p in paths]
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None or isinstance(head, nn.Identity):
        head = modules[-1]
        class_names = []
    return CNNLayout(stem=modules[0], stages=modules[1:], stage_paths=paths[1:], head=head,
                     head_name="logits" if class_names or not isinstance(head, nn.Identity) else "features",
                     class_names=class_names)


# -- hierarchical transformers (Swin) and hybrids (FastViT / MobileCLIP MCi): the hierarchical engineer's section --
def swin_layout(model: nn.Module, class_names: list[str]) -> HierarchicalLayout:
    """timm SwinTransformer: channels-last stages (``layers.S``, patch merging first), window attention per block."""
    from timm.models.swin_transformer import window_partition

    def block_partition(block):
        def partition(x):  # SwinTransformerBlock._attn: roll by -shift, pad to whole windows, partition
            height, width = x.shape[1:3]
            if any(block.shift_size):
                x = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
            pad_h = (block.window_size[0] - height % block.window_size[0]) % block.window_size[0]
            pad_w = (block.window_size[1] - width % block.window_size[1]) % block.window_size[1]
            x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            return window_partition(x, block.window_size).reshape(-1, block.window_area, x.shape[-1])
        return partition

    stages = list(model.layers)
    attention = [StageAttention(s, b, block.attn, block_partition(block),
                                "shifted window" if any(block.shift_size) else "window")
                 for s, stage in enumerate(stages) for b, block in enumerate(stage.blocks)]
    mixers = {block: window_reach(block.window_size) for stage in stages for block in stage.blocks}
    mixers.update({stage.downsample: PATCH_MERGE for stage in stages if not isinstance(stage.downsample, nn.Identity)})
    classifier = not isinstance(model.head.fc, nn.Identity)
    return HierarchicalLayout(stem=model.patch_embed, stages=stages, stage_paths=module_paths(model, stages),
                              head=model.head, head_name="logits" if classifier else "features",
                              class_names=class_names if classifier else [], attention=attention,
                              channels_last=True, mixers=mixers)


def fastvit_layout(model: nn.Module, class_names: list[str], output: nn.Module | None = None,
                   output_name: str | None = None) -> HierarchicalLayout:
    """timm FastVit (incl. MobileCLIP's MCi trunks): channels-first RepMixer stages, then global-attention stages.

    ``output`` / ``output_name``: the module whose output is the model's result when the FastVit is a tower's trunk
    (open_clip's ``TimmModel``: the whole ``model.visual``, "image_embed").
    """
    from timm.models.fastvit import AttentionBlock

    stages = list(model.stages)
    attention = [StageAttention(s, b, block.token_mixer)
                 for s, stage in enumerate(stages) for b, block in enumerate(stage.blocks)
                 if isinstance(block, AttentionBlock)]
    classifier = not isinstance(getattr(model.head, "fc", nn.Identity()), nn.Identity)
    head = output if output is not None else model.head
    name = output_name or ("logits" if classifier else "features")
    return HierarchicalLayout(stem=model.stem, stages=stages, stage_paths=module_paths(model, stages), head=head,
                              head_name=name, class_names=class_names if classifier and output is None else [],
                              attention=attention, mixers={entry.module: GLOBAL for entry in attention})


def hierarchical_layout(model: nn.Module, class_names: list[str]) -> HierarchicalLayout | None:
    """The hierarchical layout of a timm model, or None when it is not a Swin or FastVit."""
    from timm.models.fastvit import FastVit
    from timm.models.swin_transformer import SwinTransformer

    if isinstance(model, SwinTransformer):
        return swin_layout(model, class_names)
    if isinstance(model, FastVit):
        return fastvit_layout(model, class_names)
    return None


# -- loading ---------------------------------------------------------------------------------------------------------
def _class_names(model: nn.Module) -> list[str]:
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


def _has_attention(model: nn.Module) -> bool:
    """Does the model hold attention modules (anything with a head count)? Those are not read as a plain CNN."""
    return any(isinstance(getattr(m, "num_heads", None), int) for m in model.modules())


def adapter_for(model: nn.Module, *, class_names: list[str], preprocess: Preprocess, common: dict,
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None, output: nn.Module | None = None,
                output_name: str | None = None,
                project_tokens: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ModelAdapter:
    """The adapter of any timm model, alone (the timm backend) or as a tower's trunk (open_clip ``TimmModel``).

    VisionTransformer and Eva -> ViTAdapter; SwinTransformer and FastVit -> HierarchicalAdapter; attention-free
    models with timm's ``feature_info`` -> CNNAdapter. ``forward`` (default: the model) is what runs the pixels;
    the adapter's ``module`` is ``forward`` when it is a module. ``output`` / ``output_name`` name the module whose
    output is the result (default: the model, "logits"); ``project_tokens`` maps tokens into a CLIP joint space.
    """
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    forward = forward if forward is not None else model
    kwargs = dict(forward=forward, module=forward if isinstance(forward, nn.Module) else model,
                  preprocess=preprocess, **common)
    if isinstance(model, (VisionTransformer, Eva)):
        return ViTAdapter(vit_layout(model, class_names, output, output_name, project_tokens), **kwargs)
    hierarchical = hierarchical_layout(model, class_names)
    if hierarchical is not None:
        if output is not None:   # a tower's trunk: the tower's output is the result, no classes
            hierarchical = dataclasses.replace(hierarchical, head=output, head_name=output_name or "image_embed",
                                               class_names=[])
        return HierarchicalAdapter(hierarchical, **kwargs)
    if _has_attention(model):
        raise UnknownArchitectureError(
            f"{common.get('model_id', 'this timm model')}: timm {type(model).__name__} has attention layers "
            "clipscope does not map. Closest supported: timm VisionTransformer (vit_*), Eva (eva02_*, *_dinov3), "
            "SwinTransformer (swin_*), FastVit (fastvit_*), or an attention-free CNN (resnet*, convnext*).")
    if hasattr(model, "layer1") and hasattr(model, "fc"):
        layout = resnet_style_layout(model, class_names)
    else:
        layout = cnn_layout(model, class_names)
    if output is not None:
        layout = dataclasses.replace(layout, head=output, head_name=output_name or "image_embed", class_names=[])
    return CNNAdapter(layout, **kwargs)


def preprocess_of(model: nn.Module) -> Preprocess:
    """The model's own data config (input size, mean/std, crop, interpolation) as clipscope's Preprocess."""
    import timm

    data = timm.data.resolve_model_data_config(model)
    size = square(data["input_size"][1:])
    crop_pct = data.get("crop_pct") or 1.0
    return Preprocess(size=size, mean=tuple(data["mean"]), std=tuple(data["std"]),
                      resize_to=int(math.floor(min(size) / crop_pct)),
                      interpolation=data.get("interpolation", "bicubic"))


def load(model_id: ModelId, device, dtype):
    import timm

    name, _, weights = model_id.name.partition("/") if not model_id.name.startswith(
        ("hf-hub:", "local-dir:")) else (model_id.name, "", "")
    random_weights = weights.lower() in ("none", "random")
    if not name.startswith(("hf-hub:", "local-dir:")):
        if not timm.is_model(name.split(".")[0]):
            raise unknown_name("timm", name, timm.list_models())
    common = common_kwargs(model_id, device, dtype)
    if not name.startswith("hf-hub:"):   # a hub config would have to be downloaded first
        _refuse_unsupported(name, common)
    with download_guard(model_id.raw):
        model = timm.create_model(name, pretrained=not random_weights)
    model = model.to(device=device, dtype=dtype).eval()
    return adapter_for(model, class_names=_class_names(model), preprocess=preprocess_of(model), common=common)


def _refuse_unsupported(name: str, common: dict) -> None:
    """Adapt the architecture built on the meta device (no memory, no weights): an architecture clipscope cannot
    map is refused before its weights are downloaded or allocated. Anything else that fails here is left to the
    real build."""
    import timm

    try:
        with torch.device("meta"):
            skeleton = timm.create_model(name, pretrained=False)
        adapter_for(skeleton, class_names=[], preprocess=preprocess_of(skeleton), common=common)
    except UnknownArchitectureError:
        raise
    except Exception:  # noqa: BLE001 - e.g. an entrypoint that cannot run on meta: the real build decides
        return


# -- local directories, offline --------------------------------------------------------------------------------------
def claims_dir(path: Path) -> bool:
    """A directory written by timm's save_for_hf: config.json with an architecture and no model_type."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "architecture" in config and "model_type" not in config


def usable_offline(name: str) -> bool:
    import timm

    from models.backends.hf import hub_cached

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg else None
    return bool(repo) and any(hub_cached(repo, f) for f in ("model.safetensors", "pytorch_model.bin"))


# -- coverage: real configurations with random weights, and the eager reference ------------------------------------
TINY_TRANSFORMER = {"img_size": 32, "patch_size": 8, "depth": 2, "num_heads": 4, "embed_dim": 64}
TINY_ARGS = {   # timm model module -> small kwargs of the same classes
    "vision_transformer": TINY_TRANSFORMER, "deit": TINY_TRANSFORMER, "eva": TINY_TRANSFORMER,
    "convnext": {"depths": (1, 1, 1, 1), "dims": (16, 32, 48, 64)},
    "resnet": {"layers": (1, 1, 1, 1), "base_width": 16},
    "swin_transformer": {"img_size": 64, "patch_size": 4, "embed_dim": 32, "depths": (2, 2), "num_heads": (2, 4),
                         "window_size": 4},   # two blocks per stage: plain and shifted windows
}
TINY_CNN_SIZE = 64   # CNNs whose entrypoints take no size kwargs run their real configuration at this input size


def save_random(arch: str, directory: Path, tiny: bool = True) -> str:
    """Build timm architecture ``arch`` from its own entrypoint (random weights), write it with timm's save_for_hf.

    ``tiny``: the same classes with :data:`TINY_ARGS` (transformers: 2 blocks of width 64 on a 4x4 grid of
    8-pixel patches; CNNs: one block per stage or the real configuration at 64 px).
    """
    import timm
    from timm.models import is_model_in_modules, save_for_hf

    if not timm.is_model(arch):
        raise unknown_name("timm", arch, timm.list_models())
    args = next((a for module, a in TINY_ARGS.items() if is_model_in_modules(arch, [module])), {}) if tiny else {}
    model = timm.create_model(arch, pretrained=False, **args)
    if tiny:
        size = args.get("img_size", TINY_CNN_SIZE)
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size), "crop_pct": 1.0}
    save_for_hf(model, directory, model_args=dict(args), safe_serialization=True)
    return f"timm:local-dir:{directory}"


class SoftmaxRecorder(torch.overrides.TorchFunctionMode):
    """Keeps the output of every softmax computed inside it (the eager attention's pattern)."""

    def __init__(self):
        super().__init__()
        self.outputs: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") == "softmax":
            self.outputs.append(result)
        return result


def eager_pattern(site, args: tuple, kwargs: dict) -> torch.Tensor:
    """A timm attention module's own eager pattern for one recorded call: the module run again with
    ``fused_attn=False``, reading the softmax it computes (pool heads: padded with zeros on the prefix columns
    they are not given, as clipscope's ``pool.attn`` is)."""
    module = site.module
    fused = module.fused_attn
    module.fused_attn = False
    try:
        with torch.no_grad(), SoftmaxRecorder() as recorder:
            module(*args, **kwargs)
    finally:
        module.fused_attn = fused
    if len(recorder.outputs) != 1:
        raise AssertionError(f"{type(module).__name__}: {len(recorder.outputs)} softmax calls in one eager forward.")
    pattern = recorder.outputs[0]
    skipped = getattr(site, "skipped_prefix", 0)
    if skipped:
        pattern = torch.cat([pattern.new_zeros((*pattern.shape[:-1], skipped)), pattern], dim=-1)
    return pattern


def eager_patterns(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every timm attention site's pattern from the module's own eager code, called on the recorded inputs."""
    from models.coverage import record_site_calls

    calls = record_site_calls(adapter, pixels, tokens)
    return {name: eager_pattern(adapter.sites[name], args, kwargs) for name, (args, kwargs) in calls.items()
            if hasattr(adapter.sites[name].module, "fused_attn")}


register(Backend(
    name="timm", load=load,
    id_forms=("timm:NAME (e.g. timm:vit_small_patch16_224.augreg_in21k_ft_in1k), timm:local-dir:PATH",),
    claims_dir=claims_dir,
    local_name=lambda path: f"local-dir:{path}",
    is_local=lambda name: name.startswith("local-dir:") or Path(name).expanduser().exists(),
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
    save_random=save_random,
    eager_patterns=eager_patterns,
))
