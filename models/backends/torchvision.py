"""torchvision: ``torchvision:NAME[/WEIGHTS]`` and directories holding torchvision_config.json + safetensors.

Owns torchvision's model classes clipscope maps (``SUPPORTED_CLASSES``; others are refused by the class their
builder returns, before building), their layouts, the weights' transforms as preprocessing, the torch-hub offline
check, catalog entries, and the coverage matrix's hooks: ``save_random`` (a builder's real configuration, or the same
class small from ``TINY``) and ``eager_patterns`` (each attention module's own eager weights).
"""
from __future__ import annotations

import difflib
import inspect
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import convnext, efficientnet, maxvit, regnet, resnet, swin_transformer, vgg

from models.adapters.cnn import CNNAdapter, CNNLayout, by_resolution_layout, module_paths, resnet_style_layout
from models.adapters.hierarchical import (
    GLOBAL,
    PATCH_MERGE,
    HierarchicalAdapter,
    HierarchicalLayout,
    StageAttention,
    window_reach,
)
from models.adapters.vit import ViTAdapter, ViTLayout
from models.backends import Backend, KnownModel, common_kwargs, register, unknown_name
from models.errors import ModelUnavailableOfflineError, UnknownArchitectureError
from models.model_ids import ModelId
from models.network import host_reachable
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, square

TORCHVISION_CONFIG = "torchvision_config.json"
CATALOG = [
    KnownModel("torchvision:vit_b_16/IMAGENET1K_V1", "vit", 86_567_656, "torchvision ViT-B/16"),
    KnownModel("torchvision:resnet50/IMAGENET1K_V2", "cnn", 25_557_032, "torchvision ResNet-50"),
    KnownModel("torchvision:resnet18/IMAGENET1K_V1", "cnn", 11_689_512, "torchvision ResNet-18"),
    KnownModel("torchvision:convnext_tiny/IMAGENET1K_V1", "cnn", 28_589_128, "torchvision ConvNeXt-T"),
    KnownModel("torchvision:swin_t/IMAGENET1K_V1", "hierarchical", 28_288_354, "torchvision Swin-T (shifted windows)"),
    KnownModel("torchvision:maxvit_t/IMAGENET1K_V1", "hierarchical", 30_919_624,
               "torchvision MaxViT-T (block and grid attention)"),
]
# The torchvision classes clipscope maps: the class a builder returns -> the family it loads as. Any other class
# (detection, segmentation, video, quantized, GoogLeNet ...) is refused by name before the model is built.
SUPPORTED_CLASSES = {
    "VisionTransformer": "vit",
    "ResNet": "cnn", "RegNet": "cnn", "ConvNeXt": "cnn", "EfficientNet": "cnn", "MobileNetV2": "cnn",
    "MobileNetV3": "cnn", "DenseNet": "cnn", "VGG": "cnn", "AlexNet": "cnn", "SqueezeNet": "cnn",
    "SwinTransformer": "hierarchical", "MaxVit": "hierarchical",
}


# -- layouts ---------------------------------------------------------------------------------------------------------
def vit_layout(model: nn.Module, class_names: list[str]) -> ViTLayout:
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


def regnet_layout(model: nn.Module, class_names: list[str]) -> CNNLayout:
    """torchvision RegNet: a stem, then ``trunk_output`` holding one AnyStage per resolution level."""
    stages = list(model.trunk_output)
    return CNNLayout(stem=model.stem, stages=stages, stage_paths=module_paths(model, stages), head=model.fc,
                     class_names=class_names)


def features_layout(model: nn.Module, class_names: list[str], input_size: tuple[int, int]) -> CNNLayout:
    """``features`` + ``classifier`` CNNs (VGG, EfficientNet, MobileNet, ConvNeXt, DenseNet, AlexNet, SqueezeNet).

    Two in-place operations would overwrite what a hook recorded: a ReLU(inplace) right after the first conv (VGG,
    AlexNet, SqueezeNet) rewrites the stem's output, so the stem is read after that ReLU; DenseNet's forward applies
    ``relu(inplace=True)`` to ``norm5``'s output, so its last stage is read at ``denseblock4``.
    """
    children = list(model.features)
    if type(model).__name__ == "DenseNet" and isinstance(children[-1], nn.BatchNorm2d):
        children = children[:-1]
    layout = by_resolution_layout(model, nn.Sequential(*children), model.classifier, class_names, input_size)
    if len(children) > 1 and getattr(children[1], "inplace", False):
        layout.stem = children[1]
        if layout.stages[0] is layout.stem:  # the stem is alone at its resolution (AlexNet, SqueezeNet): not a stage
            layout.stages, layout.stage_paths = layout.stages[1:], layout.stage_paths[1:]
    return layout


# -- hierarchical transformers (Swin, MaxViT): the hierarchical engineer's section -----------------------------------
def swin_layout(model: nn.Module, class_names: list[str]) -> HierarchicalLayout:
    """torchvision SwinTransformer (swin_t, V2 too): ``features`` alternates block stages and patch merging, all
    channels-last; each ShiftedWindowAttention windows the map itself (its site repeats that partition)."""
    children = list(model.features)
    merging = (swin_transformer.PatchMerging, swin_transformer.PatchMergingV2)
    stages = [c for c in children[1:] if not isinstance(c, merging)]
    attention = [StageAttention(s, b, block.attn) for s, stage in enumerate(stages) for b, block in enumerate(stage)]
    mixers = {entry.module: window_reach(entry.module.window_size) for entry in attention}
    mixers.update({child: PATCH_MERGE for child in children if isinstance(child, merging)})
    return HierarchicalLayout(stem=children[0], stages=stages, stage_paths=module_paths(model, stages),
                              head=model.head, class_names=class_names, attention=attention, channels_last=True,
                              mixers=mixers)


def maxvit_layout(model: nn.Module, class_names: list[str]) -> HierarchicalLayout:
    """torchvision MaxVit: each layer is MBConv, then block (window) attention, then grid attention, channels-first.

    Blocks of stage S count its attention layers: 2L is layer L's window attention, 2L + 1 its grid attention.
    """
    def layer_partition(layer):
        def partition(x):  # PartitionAttentionLayer.forward: partition_op, then the grid's axis swap
            windows = layer.partition_swap(layer.partition_op(x.permute(0, 3, 1, 2), layer.p))
            return windows.reshape(-1, windows.shape[-2], windows.shape[-1])
        return partition

    stages = list(model.blocks)
    attention, mixers = [], {}
    for s, stage in enumerate(stages):
        layers = [part for layer in stage.layers for part in (layer.layers.window_attention,
                                                              layer.layers.grid_attention)]
        attention += [StageAttention(s, b, layer.attn_layer[1], layer_partition(layer), layer.partition_type)
                      for b, layer in enumerate(layers)]
        mixers.update({layer: window_reach(layer.p) if layer.partition_type == "window" else GLOBAL
                       for layer in layers})
    return HierarchicalLayout(stem=model.stem, stages=stages, stage_paths=module_paths(model, stages),
                              head=model.classifier, class_names=class_names, attention=attention, mixers=mixers)


def hierarchical_layout(model: nn.Module, class_names: list[str]) -> HierarchicalLayout:
    """The layout of a torchvision Swin or MaxVit."""
    if isinstance(model, tv_models.SwinTransformer):
        return swin_layout(model, class_names)
    if isinstance(model, tv_models.MaxVit):
        return maxvit_layout(model, class_names)
    raise UnknownArchitectureError(f"torchvision {type(model).__name__} is not a Swin or MaxVit.")


def window_softmax(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """The attention weights a Swin / MaxViT attention module computes in its own eager code on one call: the
    output of the softmax inside it (torchvision returns none), read with a torch function mode."""
    from torch.overrides import TorchFunctionMode

    seen: list[torch.Tensor] = []

    class KeepSoftmax(TorchFunctionMode):
        def __torch_function__(self, func, types, func_args=(), func_kwargs=None):
            out = func(*func_args, **(func_kwargs or {}))
            if func is torch.nn.functional.softmax:
                seen.append(out)
            return out

    with KeepSoftmax():
        module(*args, **kwargs)
    if len(seen) != 1:
        raise RuntimeError(f"{type(module).__name__}: expected one softmax in its forward, saw {len(seen)}.")
    weights = seen[0]
    return weights.reshape(-1, *weights.shape[-3:])   # MaxViT: (B, G, heads, P, P) -> (B * G, heads, P, P)


def _supported_class(cls: type) -> str | None:
    """The name of the first class in ``cls``'s bases that clipscope maps, or None."""
    return next((c.__name__ for c in cls.__mro__ if c.__name__ in SUPPORTED_CLASSES), None)


def _adapter(model: nn.Module, class_names: list[str], preprocess: Preprocess, common: dict):
    kind = _supported_class(type(model))
    if kind is None:
        raise UnknownArchitectureError(f"{common['model_id']}: torchvision {type(model).__name__} is not supported. "
                                       f"Supported classes: {', '.join(SUPPORTED_CLASSES)}.")
    if kind == "VisionTransformer":
        return ViTAdapter(vit_layout(model, class_names), forward=model, module=model,
                          preprocess=preprocess, **common)
    if SUPPORTED_CLASSES[kind] == "hierarchical":
        return HierarchicalAdapter(hierarchical_layout(model, class_names), forward=model, module=model,
                                   preprocess=preprocess, **common)
    if kind == "ResNet":
        layout = resnet_style_layout(model, class_names)
    elif kind == "RegNet":
        layout = regnet_layout(model, class_names)
    else:
        layout = features_layout(model, class_names, preprocess.size)
    return CNNAdapter(layout, forward=model, module=model, preprocess=preprocess, **common)


def builds_class(arch: str) -> str:
    """The class a torchvision builder returns, read from its signature (nothing is built)."""
    returned = inspect.signature(tv_models.get_model_builder(arch)).return_annotation
    return getattr(returned, "__name__", str(returned))


def check_supported(model_id: str, arch: str) -> None:
    """Refuse a builder whose class clipscope does not map, before building it, naming the closest that works."""
    cls = builds_class(arch)
    if cls in SUPPORTED_CLASSES:
        return
    supported = [a for a in tv_models.list_models() if builds_class(a) in SUPPORTED_CLASSES]
    kind = tv_models.get_model_builder(arch).__module__.removeprefix("torchvision.models.")
    # a backbone named inside the id (fasterrcnn_resnet50_fpn, quantized_resnet50) first, then similar names
    inside = sorted((a for a in supported if a in arch), key=len, reverse=True)[:1]
    similar = [a for a in difflib.get_close_matches(arch, supported, n=3, cutoff=0.3) if a not in inside]
    close = (inside + similar)[:3]
    raise UnknownArchitectureError(
        f"{model_id}: torchvision {arch!r} builds {cls} ({kind}), which clipscope does not map. Closest supported: "
        f"{', '.join(f'torchvision:{c}' for c in close) or 'none'} (classes: {', '.join(SUPPORTED_CLASSES)}).")


# -- loading ---------------------------------------------------------------------------------------------------------
def load(model_id: ModelId, device, dtype):
    if Path(model_id.name).is_dir():
        return _load_dir(model_id, device, dtype)
    arch, _, weights_name = model_id.name.partition("/")
    known = tv_models.list_models()
    if arch not in known:
        raise unknown_name("torchvision", arch, known)
    check_supported(model_id.raw, arch)
    weights = None
    if weights_name.lower() not in ("none", "random"):
        enum = tv_models.get_model_weights(arch)
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
    model = tv_models.get_model(arch, weights=weights).to(device=device, dtype=dtype).eval()
    if weights is not None:
        preprocess = weights_preprocess(weights)
        class_names = list(weights.meta.get("categories", []))
    else:
        size = (model.image_size, model.image_size) if hasattr(model, "image_size") else (224, 224)
        preprocess = Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_to=int(size[0] * 256 / 224),
                                interpolation="bilinear")
        class_names = []
    return _adapter(model, class_names, preprocess, common_kwargs(model_id, device, dtype))


def _efficientnet(blocks: list[list], norm_eps: float | None = None, **kwargs) -> nn.Module:
    """EfficientNet from JSON: ``blocks`` rows are [kind, expand_ratio, kernel, stride, in, out, layers]."""
    kinds = {"MBConv": efficientnet.MBConvConfig, "FusedMBConv": efficientnet.FusedMBConvConfig}
    setting = [kinds[kind](*args) for kind, *args in blocks]
    if norm_eps is not None:  # EfficientNetV2 uses BatchNorm with eps 1e-3
        kwargs["norm_layer"] = partial(nn.BatchNorm2d, eps=norm_eps)
    return efficientnet.EfficientNet(setting, **kwargs)


# Classes a torchvision_config.json may name with constructor arguments, for sizes the builders fix; block
# settings are plain JSON lists.
CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "VisionTransformer": tv_models.VisionTransformer,
    "ResNet": lambda block, layers, **kw: tv_models.ResNet(getattr(resnet, block), layers, **kw),
    "ConvNeXt": lambda block_setting, **kw: tv_models.ConvNeXt(
        [convnext.CNBlockConfig(*b) for b in block_setting], **kw),
    "EfficientNet": _efficientnet,
    "DenseNet": tv_models.DenseNet,
    "VGG": lambda cfg, batch_norm=False, **kw: tv_models.VGG(vgg.make_layers(cfg, batch_norm), **kw),
    "RegNet": lambda block_params, **kw: tv_models.RegNet(regnet.BlockParams(**block_params), **kw),
    "SwinTransformer": tv_models.SwinTransformer,
    "MaxVit": lambda input_size, **kw: tv_models.MaxVit(tuple(input_size), **kw),
}


def build(arch: str, kwargs: dict) -> nn.Module:
    """A torchvision model with random weights: a builder by name (``resnet50``) or a class with its sizes."""
    if arch in tv_models.list_models():
        return tv_models.get_model(arch, weights=None, **kwargs)
    return CONSTRUCTORS[arch](**kwargs)


def build_with_weights(arch: str, kwargs: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """``build`` holding ``state`` as its weights, skipping the random initialisation they replace (parameters are
    made on the meta device, then take the loaded tensors). Builders that compute their configuration with tensors
    (RegNet's ``BlockParams.from_init_params``) cannot run on the meta device and are built normally."""
    try:
        with torch.device("meta"):
            model = build(arch, kwargs)
    except NotImplementedError:
        model = build(arch, kwargs)
    model.load_state_dict(state, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise UnknownArchitectureError(f"torchvision {arch}: {', '.join(left[:3])} are not saved with the weights.")
    return model


def weights_preprocess(weights, size: int | None = None) -> Preprocess:
    """The preprocessing of torchvision ``weights`` (their transforms), optionally scaled to a ``size`` px crop."""
    t = weights.transforms()
    crop, resize = square(t.crop_size), min(t.resize_size)
    if size is not None:
        crop, resize = (size, size), round(size * resize / crop[0])
    return Preprocess(size=crop, mean=tuple(t.mean), std=tuple(t.std), resize_to=resize,
                      interpolation=t.interpolation.value)


def _load_dir(model_id: ModelId, device, dtype):
    """A directory with torchvision_config.json (arch, builder kwargs, class names, preprocess) + safetensors."""
    from safetensors.torch import load_file

    path = Path(model_id.name)
    config = json.loads((path / TORCHVISION_CONFIG).read_text())
    arch, kwargs = config["arch"], config.get("kwargs", {})
    if arch in tv_models.list_models():
        check_supported(model_id.raw, arch)
    elif arch not in CONSTRUCTORS:
        raise UnknownArchitectureError(
            f"{path / TORCHVISION_CONFIG}: torchvision has no architecture {arch!r}. Use a builder name "
            f"(e.g. resnet50) or one of the classes {', '.join(CONSTRUCTORS)} with its constructor arguments.")
    model = build_with_weights(arch, kwargs, load_file(path / "model.safetensors"))
    pre = config.get("preprocess", {})
    size = square(pre.get("size", 224))
    preprocess = Preprocess(size=size, mean=tuple(pre.get("mean", IMAGENET_MEAN)),
                            std=tuple(pre.get("std", IMAGENET_STD)), resize_to=pre.get("resize_to"),
                            interpolation=pre.get("interpolation", "bilinear"))
    model = model.to(device=device, dtype=dtype).eval()
    class_names = list(config.get("class_names", []))
    return _adapter(model, class_names, preprocess, common_kwargs(model_id, device, dtype))


# -- offline ---------------------------------------------------------------------------------------------------------
def usable_offline(name: str) -> bool:
    arch, _, weights = name.partition("/")
    url = tv_models.get_model_weights(arch)[weights or "DEFAULT"].url
    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists()


# -- coverage: real configurations with random weights, and the eager reference ------------------------------------
# arch -> (class or builder, its arguments, input size): the same class as the real builder, small. Each keeps the
# real model's resolution levels (every stride), so its CNN stages are the same levels as the full model's.
TINY: dict[str, tuple[str, dict, int]] = {
    "vit_b_16": ("VisionTransformer", {"image_size": 64, "patch_size": 16, "num_layers": 2, "num_heads": 4,
                                       "hidden_dim": 64, "mlp_dim": 128}, 64),
    "resnet50": ("ResNet", {"block": "Bottleneck", "layers": [1, 1, 1, 1], "width_per_group": 16}, 64),
    "convnext_tiny": ("ConvNeXt", {"block_setting": [[16, 32, 1], [32, 64, 1], [64, 128, 1], [128, None, 1]],
                                   "stochastic_depth_prob": 0.1}, 64),
    "efficientnet_b0": ("EfficientNet", {"blocks": [
        ["MBConv", 1, 3, 1, 8, 8, 1], ["MBConv", 6, 3, 2, 8, 16, 1], ["MBConv", 6, 5, 2, 16, 16, 1],
        ["MBConv", 6, 3, 2, 16, 24, 1], ["MBConv", 6, 5, 1, 24, 24, 1], ["MBConv", 6, 5, 2, 24, 32, 1],
        ["MBConv", 6, 3, 1, 32, 40, 1]], "dropout": 0.2}, 64),
    "efficientnet_v2_s": ("EfficientNet", {"blocks": [
        ["FusedMBConv", 1, 3, 1, 8, 8, 1], ["FusedMBConv", 4, 3, 2, 8, 16, 1], ["FusedMBConv", 4, 3, 2, 16, 16, 1],
        ["MBConv", 4, 3, 2, 16, 24, 1], ["MBConv", 6, 3, 1, 24, 32, 1], ["MBConv", 6, 3, 2, 32, 40, 1]],
        "dropout": 0.2, "last_channel": 160, "norm_eps": 1e-3}, 64),
    "mobilenet_v3_large": ("mobilenet_v3_large", {"width_mult": 0.25}, 64),
    "densenet121": ("DenseNet", {"growth_rate": 8, "block_config": [2, 2, 2, 2], "num_init_features": 16,
                                 "bn_size": 4}, 64),
    # VGG's classifier is fixed at 512 x 7 x 7 -> 4096 -> 4096: only the convolutions can be small
    "vgg16": ("VGG", {"cfg": [8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 64, 64, 64, "M", 64, 64, 512, "M"]}, 64),
    "regnet_y_400mf": ("RegNet", {"block_params": {
        "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "group_widths": [8, 8, 8, 8],
        "bottleneck_multipliers": [1.0, 1.0, 1.0, 1.0], "strides": [2, 2, 2, 2], "se_ratio": 0.25}}, 64),
    # Swin at 64 px: stage grids 16, 8, 4, 2 with 4x4 windows (shifted, then unshifted where the window covers the
    # grid, then padded); MaxViT: grids 16, 8, 4, 2 cut into 2x2 windows and a 2x2-dilated grid
    "swin_t": ("SwinTransformer", {"patch_size": [4, 4], "embed_dim": 16, "depths": [2, 2, 2, 2],
                                   "num_heads": [2, 2, 2, 2], "window_size": [4, 4]}, 64),
    "maxvit_t": ("MaxVit", {"input_size": [64, 64], "stem_channels": 8, "partition_size": 2,
                            "block_channels": [16, 16, 32, 32], "block_layers": [1, 1, 1, 1], "head_dim": 8,
                            "stochastic_depth_prob": 0.1}, 64),
}
TINY_CLASSES = 10


def save_random(arch: str, directory: Path, tiny: bool = True) -> str:
    """Build torchvision ``arch`` with random weights (its builder's real configuration, or with ``tiny`` the same
    class small) and write the directory ``_load_dir`` opens: torchvision_config.json + model.safetensors.

    Class names and preprocessing come from the architecture's default weights (their categories and transforms).
    """
    from safetensors.torch import save_file

    known = tv_models.list_models()
    if arch not in known:
        raise unknown_name("torchvision", arch, known)
    check_supported(f"torchvision:{arch}", arch)
    if tiny and arch not in TINY:
        raise UnknownArchitectureError(f"torchvision {arch!r} has no tiny configuration (models/backends/torchvision.py"
                                       f" TINY knows {', '.join(TINY)}).")
    name, kwargs, size = json.loads(json.dumps(TINY[arch])) if tiny else (arch, {}, None)
    weights = tv_models.get_model_weights(arch).DEFAULT
    categories = list(weights.meta["categories"])
    if tiny:
        kwargs["num_classes"] = TINY_CLASSES
    preprocess = weights_preprocess(weights, size)
    model = build(name, kwargs).eval()
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "model.safetensors")
    (directory / TORCHVISION_CONFIG).write_text(json.dumps({
        "arch": name, "kwargs": kwargs, "class_names": categories[:kwargs.get("num_classes", len(categories))],
        "preprocess": {"size": list(preprocess.size), "resize_to": preprocess.resize_to,
                       "mean": list(preprocess.mean), "std": list(preprocess.std),
                       "interpolation": preprocess.interpolation}}))
    return f"torchvision:{directory}"


def _eager_pattern(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """One attention module's own eager weights for its recorded call, per head; None for kinds without one."""
    if isinstance(module, nn.MultiheadAttention):  # ViT: the same call with need_weights, heads not averaged
        return module(*args, **{**kwargs, "need_weights": True, "average_attn_weights": False})[1]
    if isinstance(module, (swin_transformer.ShiftedWindowAttention, maxvit.RelativePositionalMultiHeadAttention)):
        return window_softmax(module, args, kwargs)
    return None


def eager_patterns(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every attention site's pattern from torchvision's own eager code, called on the recorded inputs."""
    from models.coverage import record_site_calls

    patterns = {}
    with torch.no_grad():
        for name, (args, kwargs) in record_site_calls(adapter, pixels, tokens).items():
            pattern = _eager_pattern(adapter.sites[name].module, args, kwargs)
            if pattern is not None:
                patterns[name] = pattern
    return patterns


register(Backend(
    name="torchvision", load=load,
    id_forms=("torchvision:NAME[/WEIGHTS] (e.g. torchvision:resnet50/IMAGENET1K_V2)",),
    claims_dir=lambda path: (path / TORCHVISION_CONFIG).exists(),
    usable_offline=usable_offline,
    catalog=lambda: list(CATALOG),
    save_random=save_random,
    eager_patterns=eager_patterns,
))
