"""Inside a CNN: feature maps, filters and receptive fields (theoretical and effective), read from the real model.

Works on CNN classifiers and on CLIP's ResNet image tower (``model.visual``). Layer names are the adapter's
canonical ``stem`` / ``stages.N`` or ``module.<path>`` for any convolution.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from models.adapters.cnn import CNNAdapter
from models.receptive_field import ReceptiveField, trace_receptive_fields

SCALES = ("per unit", "per layer", "global")


def cnn_tower(model) -> CNNAdapter:
    """The CNN inside ``model``: itself, or a CLIP model's ResNet image tower; ValueError for anything else."""
    tower = model.image_tower
    if not tower.has_feature_maps:
        raise ValueError(f"{model.model_id} has no feature maps in its image tower: feature maps, filters and "
                         "receptive fields need a CNN (CAMs, prediction and the probes work on ViTs too).")
    return tower


def stage_names(tower: CNNAdapter) -> list[str]:
    """The stem (where the model has one) and every stage, in forward order."""
    return [name for name in tower.points if name == "stem" or (name.startswith("stages.") and name.count(".") == 1)]


def layer_choices(tower: CNNAdapter) -> list[str]:
    """Every layer a view can show: the stages first, then each convolution as ``module.<path>``."""
    convs = tower.conv_layers() if callable(getattr(tower, "conv_layers", None)) else []
    return stage_names(tower) + [f"module.{path}" for path in convs]


def layer_module(tower: CNNAdapter, name: str) -> nn.Module:
    """The native module whose output ``name`` refers to."""
    if name.startswith("module."):
        return tower.module.get_submodule(name[len("module."):])
    if name not in tower.points:
        raise ValueError(f"No layer {name!r} in {tower.model_id}; pick one of the stages or a convolution.")
    return tower.points[name].module


def module_path(tower: CNNAdapter, name: str) -> str:
    """Dotted path (inside the tower's module) of the layer ``name``."""
    if name.startswith("module."):
        return name[len("module."):]
    target = layer_module(tower, name)
    return next(path for path, module in tower.module.named_modules() if module is target)


# -- feature maps --------------------------------------------------------------------------------------------------
def capture_maps(tower: CNNAdapter, pixels: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The output of each named layer for the first image, (channels, rows, cols) float32 on the CPU."""
    return capture_maps_and_output(tower, pixels, names)[0]


def capture_maps_and_output(tower: CNNAdapter, pixels: torch.Tensor,
                            names: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """capture_maps, plus the model's own output of that same forward (logits, or a CLIP tower's embedding)."""
    with tower.capture(names) as cache:
        output = tower.forward(pixels)
    maps = {}
    for name in names:
        value = cache[name]
        if value.dim() != 4:
            raise ValueError(f"{name} gives a {tuple(value.shape)} tensor, not a (batch, channels, h, w) map.")
        maps[name] = value[0].detach().float().cpu()
    return maps, output


def pick_channels(maps: torch.Tensor, k: int = 16, channels: list[int] | None = None) -> list[int]:
    """The ``channels`` asked for (checked), or the ``k`` channels with the highest mean activation, highest first."""
    count = maps.shape[0]
    if channels:
        bad = [c for c in channels if not 0 <= c < count]
        if bad:
            raise ValueError(f"Channels {bad} do not exist: this layer has channels 0 to {count - 1}.")
        return list(dict.fromkeys(channels))
    means = maps.mean(dim=(1, 2))
    return means.argsort(descending=True)[:max(1, min(int(k), count))].tolist()


def value_range(maps: torch.Tensor) -> tuple[float, float]:
    return float(maps.min()), float(maps.max())


def scale_maps(maps: torch.Tensor, mode: str, layer_range: tuple[float, float] | None = None,
               global_range: tuple[float, float] | None = None) -> np.ndarray:
    """Maps (n, rows, cols) mapped to [0, 1] with one colour scale per unit, per layer or across all layers.

    ``layer_range`` is the (min, max) of the whole layer (all channels, not only those shown); ``global_range``
    that of every captured layer. A constant map becomes 0.
    """
    if mode not in SCALES:
        raise ValueError(f"Colour scale {mode!r}: use one of {', '.join(SCALES)}.")
    values = maps.float()
    if mode == "per unit":
        low = values.amin(dim=(1, 2), keepdim=True)
        high = values.amax(dim=(1, 2), keepdim=True)
    else:
        low, high = (layer_range if mode == "per layer" else global_range) or value_range(values)
        low, high = torch.tensor(low), torch.tensor(high)
    span = (high - low).clamp_min(1e-12)
    return ((values - low) / span).clamp(0, 1).numpy()


# -- filters -------------------------------------------------------------------------------------------------------
def first_conv(tower: CNNAdapter) -> tuple[str, nn.Conv2d]:
    """The first convolution that reads the RGB input, and its path."""
    for path, module in tower.module.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return path, module
    raise ValueError(f"{tower.model_id} has no convolution reading the 3 input channels.")


def rgb_kernel_tiles(weight: torch.Tensor) -> np.ndarray:
    """First-layer kernels (out, 3, k, k) as RGB tiles (out, k, k, 3) in [0, 1], 0.5 = a zero weight.

    Each kernel is scaled by its own largest absolute weight, so its pattern shows whatever its norm.
    """
    w = weight.detach().float().cpu()
    peak = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return (0.5 + 0.5 * w / peak).permute(0, 2, 3, 1).numpy()


def kernel_slices(conv: nn.Conv2d, out_channel: int) -> np.ndarray:
    """The (in_channels / groups, k, k) kernel of one output channel of any convolution, as stored."""
    if not 0 <= out_channel < conv.out_channels:
        raise ValueError(f"Output channel {out_channel} does not exist: this layer has 0 to {conv.out_channels - 1}.")
    return conv.weight[out_channel].detach().float().cpu().numpy()


# -- receptive fields ----------------------------------------------------------------------------------------------
_FIELDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def receptive_field(tower: CNNAdapter, name: str, input_size: tuple[int, int] | None = None,
                    ignore_gates: bool = False) -> ReceptiveField:
    """Theoretical receptive field of layer ``name`` (traced once per model and input size, then cached)."""
    size = tuple(input_size or tower.preprocess.size)
    per_model = _FIELDS.setdefault(tower, {})
    key = (size, ignore_gates)
    if key not in per_model:
        names = layer_choices(tower)
        paths = [module_path(tower, n) for n in names]
        with tower.lock, torch.no_grad():
            traced = trace_receptive_fields(tower.module, size, list(dict.fromkeys(paths)),
                                            forward=tower.forward, ignore_gates=ignore_gates,
                                            mixers=tower.token_mixers())
        per_model[key] = {n: traced[p] for n, p in zip(names, paths, strict=True)}
    if name not in per_model[key]:
        raise ValueError(f"No layer {name!r} in {tower.model_id}.")
    return per_model[key][name]


def unit_at_pixel(field: ReceptiveField, y: float, x: float) -> tuple[int, int]:
    """The unit of the layer's map whose receptive field is centred nearest to input pixel (y, x)."""
    def nearest(span, value: float, count: int) -> int:
        centre = (span.lo + span.hi) / 2 if not span.whole else 0.0
        return int(np.clip(round((value - centre) / span.jump), 0, count - 1))
    return nearest(field.rows, y, field.map_size[0]), nearest(field.cols, x, field.map_size[1])


def effective_receptive_field(tower: CNNAdapter, pixels: torch.Tensor, name: str, row: int, col: int,
                              channel: int | None = None) -> np.ndarray:
    """|d unit / d input| summed over colour channels, (height, width): where unit (row, col) of ``name`` really
    looks for this image (summed over the layer's channels unless one ``channel`` is given)."""
    pixels = pixels[:1].detach().clone().requires_grad_(True)
    with tower.capture([name], grad=True) as cache:
        tower.forward(pixels)
        value = cache[name][0]
        if not (0 <= row < value.shape[-2] and 0 <= col < value.shape[-1]):
            raise ValueError(f"Unit ({row}, {col}) is outside {name}'s {value.shape[-2]}x{value.shape[-1]} map.")
        unit = value[:, row, col] if channel is None else value[channel, row, col]
        (grad,) = torch.autograd.grad(unit.float().sum(), pixels)
    return grad[0].abs().sum(dim=0).float().cpu().numpy()


def effective_radius(erf: np.ndarray, centre: tuple[float, float], fraction: float = 0.9) -> float:
    """Radius in input pixels of the smallest disc around ``centre`` (y, x) holding ``fraction`` of the gradient
    mass of an effective receptive field: how far a unit really looks, to set against the theoretical half-size."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1].")
    total = float(erf.sum())
    if total <= 0:
        return 0.0
    rows, cols = np.indices(erf.shape)
    distance = np.hypot(rows - centre[0], cols - centre[1]).ravel()
    order = np.argsort(distance, kind="stable")
    cumulative = np.cumsum(erf.ravel()[order]) / total
    return float(distance[order][np.searchsorted(cumulative, fraction - 1e-12)])
