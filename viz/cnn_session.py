"""One image through one model for the CNN views: the stem and stage maps captured once, other layers on demand.

Switching layer, channels or colour scale reads stored maps; only a new convolution layer, a receptive-field unit
(a backward) or a CAM runs the model again.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

from models.receptive_field import ReceptiveField
from viz.cam import Prediction, class_activation_map, class_labels, image_scores, top_k
from viz.cnn import (
    capture_maps,
    capture_maps_and_output,
    effective_receptive_field,
    layer_choices,
    pick_channels,
    receptive_field,
    scale_maps,
    stage_names,
    unit_at_pixel,
    value_range,
)


class CNNSession:
    """The captured maps of one image; ViTs get prediction, CAMs and probes but no maps (``is_cnn`` is False)."""

    def __init__(self, model, image: Image.Image | torch.Tensor, max_cached_layers: int = 4):
        self.model = model
        self.tower = model.image_tower
        self.is_cnn = model.has_feature_maps
        self.source = None if torch.is_tensor(image) else image
        self.pixels = image if torch.is_tensor(image) else self.tower.pixels([image])
        self.image = self.tower.preprocess.unnormalize(self.pixels[0])   # (H, W, 3) uint8: what the model saw
        self._extra: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._max_cached = max_cached_layers
        self.maps: dict[str, torch.Tensor] = {}
        self._scores = None   # a classifier's logits from the same forward, so prediction needs no second one
        self._prompt_scores: dict[tuple[str, ...], torch.Tensor] = {}
        if self.is_cnn:
            self.maps, output = capture_maps_and_output(self.tower, self.pixels, stage_names(self.tower))
            if not model.has_text and output.dim() == 2:
                self._scores = output[0].detach().float().cpu()
        self.global_range = (min(value_range(m)[0] for m in self.maps.values()),
                             max(value_range(m)[1] for m in self.maps.values())) if self.maps else None

    # -- layers --------------------------------------------------------------------------------------------------
    def layers(self) -> list[str]:
        return layer_choices(self.tower) if self.is_cnn else []

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """(channels, rows, cols) of the input and every stage, as captured for this image."""
        height, width = self.pixels.shape[-2:]
        return {"input": (3, height, width), **{n: tuple(m.shape) for n, m in self.maps.items()}}

    def layer_maps(self, layer: str) -> torch.Tensor:
        """(channels, rows, cols) output of ``layer`` for this image (a stage from the first capture, else a new
        capture kept in a small LRU)."""
        self.require_cnn()
        if layer in self.maps:
            return self.maps[layer]
        if layer not in self._extra:
            if layer not in self.layers():
                raise ValueError(f"No layer {layer!r} in {self.model.model_id}.")
            self._extra[layer] = capture_maps(self.tower, self.pixels, [layer])[layer]
            while len(self._extra) > self._max_cached:
                self._extra.popitem(last=False)
        self._extra.move_to_end(layer)
        return self._extra[layer]

    def feature_maps(self, layer: str, k: int = 16, channels: list[int] | None = None,
                     scale: str = "per unit") -> tuple[np.ndarray, list[int]]:
        """The chosen channels of ``layer`` scaled to [0, 1] for display, and their indices."""
        maps = self.layer_maps(layer)
        chosen = pick_channels(maps, k, channels)
        scaled = scale_maps(maps[chosen], scale, layer_range=value_range(maps),
                            global_range=self._global_range(maps))
        return scaled, chosen

    def display_range(self, layer: str, scale: str) -> tuple[float, float] | None:
        """The activation values the ends of the colour scale stand for under ``scale`` ("per layer": the layer's
        min and max, "global": every captured layer's); None for "per unit" (each map has its own)."""
        if scale == "per unit":
            return None
        maps = self.layer_maps(layer)
        return value_range(maps) if scale == "per layer" else self._global_range(maps)

    def _global_range(self, extra: torch.Tensor) -> tuple[float, float]:
        low, high = value_range(extra)
        if self.global_range is None:
            return low, high
        return min(low, self.global_range[0]), max(high, self.global_range[1])

    # -- receptive fields ----------------------------------------------------------------------------------------
    def field(self, layer: str) -> ReceptiveField:
        self.require_cnn()
        return receptive_field(self.tower, layer, tuple(self.pixels.shape[-2:]))

    def unit_at(self, layer: str, y: float, x: float) -> tuple[int, int]:
        """The unit of ``layer`` whose field is centred nearest to input pixel (y, x)."""
        return unit_at_pixel(self.field(layer), y, x)

    def unit_at_source_pixel(self, layer: str, x: float, y: float) -> tuple[int, int]:
        """The unit nearest to pixel (x, y) of the image as uploaded (before resizing and cropping)."""
        if self.source is not None:
            x, y = self.tower.preprocess.source_to_input(x, y, *self.source.size)
        return self.unit_at(layer, y, x)

    def effective_field(self, layer: str, unit: tuple[int, int]) -> np.ndarray:
        self.require_cnn()
        return effective_receptive_field(self.tower, self.pixels, layer, *unit)

    # -- prediction and CAM --------------------------------------------------------------------------------------
    def scores(self, prompts: list[str] | None = None) -> torch.Tensor:
        """The image's output scores (classes,): from the stored forward for a CNN classifier, else one forward per
        set of prompts (kept)."""
        if self._scores is not None:
            return self._scores
        key = tuple(prompts or ())
        if key not in self._prompt_scores:
            self._prompt_scores[key] = image_scores(self.model, self.pixels, prompts)
        return self._prompt_scores[key]

    def prediction(self, prompts: list[str] | None = None, k: int = 5) -> Prediction:
        """Top-k classes: from the stored forward for a CNN classifier, else one forward (ViTs, CLIP prompts)."""
        return top_k(self.scores(prompts), class_labels(self.model, prompts), k, self.model.probability)

    def cam(self, target: int, method: str, layer: str | None, prompts: list[str] | None = None) -> np.ndarray:
        return class_activation_map(self.model, self.pixels, target, method, layer, prompts)

    def require_cnn(self) -> None:
        """ValueError with a clear message unless the model has a CNN image tower."""
        if not self.is_cnn:
            raise ValueError(f"{self.model.model_id} has no feature maps: feature maps, filters and receptive "
                             "fields need a CNN (CAMs, prediction and the probes work here).")
