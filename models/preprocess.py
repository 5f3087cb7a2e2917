"""The preprocessing that goes with a model's weights: resize, centre crop, scale to [0, 1], normalise.

Every backend's own settings (open_clip preprocess_cfg, transformers image processor, timm data config,
torchvision weights transforms) are converted into one :class:`Preprocess`, so the app and notebooks feed every
model exactly what its authors fed it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from models.images import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                   "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS}


@dataclass(frozen=True)
class Preprocess:
    """Image -> normalised tensor, as the weights expect.

    ``size`` is the (height, width) the model sees. ``resize_to`` is the length of the shorter side before the
    centre crop (None: resize straight to ``size``, no crop).
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_to: int | None = None
    interpolation: str = "bicubic"

    def to_rgb(self, image: Image.Image) -> Image.Image:
        """8-bit RGB view of any PIL image (see models.images.to_rgb): alpha over white, 16-bit scaled."""
        return to_rgb(image)

    def geometry(self, image: Image.Image) -> Image.Image:
        """Resize and crop only: the image exactly as the model sees it, before normalisation."""
        image = self.to_rgb(image)
        mode = _INTERPOLATIONS[self.interpolation]
        if self.resize_to is None:
            return TF.resize(image, list(self.size), interpolation=mode, antialias=True)
        image = TF.resize(image, self.resize_to, interpolation=mode, antialias=True)
        return TF.center_crop(image, list(self.size))

    def source_to_input(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Where pixel (x, y) of a (width x height) source image lands in the model's input (may fall outside)."""
        out_h, out_w = self.size
        if self.resize_to is None:
            return x * out_w / width, y * out_h / height
        scale = self.resize_to / min(width, height)
        resized_w, resized_h = width * scale, height * scale
        left, top = (resized_w - out_w) / 2, (resized_h - out_h) / 2
        return x * scale - left, y * scale - top

    def __call__(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """A (batch, 3, H, W) float32 tensor."""
        return self.normalize_batch(self.uint8_batch(images))

    def uint8_batch(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """The images resized and cropped, as one (batch, H, W, 3) uint8 tensor: channels last, as decoded.

        This half of the preprocessing runs no torch kernels (numpy only), so background decoding threads do not
        start a second pool of torch threads beside the forward's; and a GPU receives a quarter of the bytes of
        float32 pixels and normalises them itself (:meth:`normalize_batch`).
        """
        batch = [images] if isinstance(images, Image.Image) else list(images)
        if not batch:
            raise ValueError("Preprocess got no images.")
        for image in batch:
            if not isinstance(image, Image.Image):
                raise TypeError(f"Preprocess takes PIL images, got {type(image).__name__}.")
        return torch.from_numpy(np.stack([np.asarray(self.geometry(image)) for image in batch]))

    def normalize_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, H, W, 3) uint8 from :meth:`uint8_batch`, on any device -> (batch, 3, H, W) normalised float32
        on that device."""
        chw = TF.to_dtype(pixels.permute(0, 3, 1, 2), torch.float32, scale=True).contiguous()
        return TF.normalize(chw, list(self.mean), list(self.std))

    def normalize(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) tensor of an image taken as it is (no resize or crop): scaled to [0, 1] and normalised."""
        return self.normalize_batch(torch.from_numpy(np.array(self.to_rgb(image)))[None])[0]

    def unnormalize(self, pixels: torch.Tensor) -> np.ndarray:
        """(3, H, W) normalised tensor -> (H, W, 3) uint8 array, to draw what the model saw."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        rgb = (pixels.detach().float().cpu() * std + mean).clamp(0, 1)
        return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def square(size: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) from an int or a pair."""
    if isinstance(size, int):
        return (size, size)
    values = [int(v) for v in size]
    return (values[-2], values[-1]) if len(values) >= 2 else (values[0], values[0])
