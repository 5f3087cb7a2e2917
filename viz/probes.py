"""Inductive-bias probes: how predictions and feature maps follow a shifted image, and which cue (global shape or
local texture) a model follows on the bundled cue-conflict images.

A CNN's maps move with the image (translation equivariance, up to its stride); a ViT's tokens are tied to a fixed
patch grid, so a shift that is not a multiple of the patch size re-cuts every patch (patch-grid aliasing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models import shapes
from models.world.bundled_eval import zero_shot_prompt
from viz.cam import ScoreModel, image_tower, prompt_features
from viz.cnn import stage_names
from viz.outputs import output_vector


@dataclass
class ShiftProbe:
    """One model's response to the image shifted left by 0..k input pixels."""

    model_id: str
    shifts: list[int]
    output_kind: str           # "probability of the unshifted top-1 class" or "cosine to the unshifted embedding"
    output_similarity: list[float]
    feature_layer: str
    feature_stride: int        # input pixels per cell of that layer's map
    feature_change: list[float]  # ||F_s - F_0 moved by s / stride|| / ||F_0|| on the overlap


def shifted_crops(image: Image.Image, size: tuple[int, int], max_shift: int) -> list[Image.Image]:
    """Crops of ``size`` (h, w) from the image scaled (aspect kept) to cover (h, w + max_shift), the window moved
    right by 0..max_shift: the content moves left by s pixels, with real image content (no padding) entering."""
    height, width = size
    image = image.convert("RGB")
    scale = max(height / image.height, (width + max_shift) / image.width)
    resized = image.resize((max(width + max_shift, round(image.width * scale)),
                            max(height, round(image.height * scale))), Image.BICUBIC)
    left = (resized.width - width - max_shift) // 2
    top = (resized.height - height) // 2
    return [resized.crop((left + s, top, left + s + width, top + height)) for s in range(max_shift + 1)]


def _feature_grid(model, pixels: torch.Tensor) -> tuple[str, int, torch.Tensor, torch.Tensor]:
    """The last spatial map for a batch, (batch, channels, rows, cols), plus the model's output and the layer name."""
    tower = image_tower(model)
    if tower.has_feature_maps:
        name = [n for n in stage_names(tower) if n != "stem"][-1]
        with tower.capture([name]) as cache:
            output = tower.forward(pixels)
        grid = cache[name].float()
        stride = pixels.shape[-1] // grid.shape[-1]
    else:
        name = f"blocks.{tower.num_layers - 1}.resid_post"
        with tower.capture([name]) as cache:
            output = tower.forward(pixels)
        rows, cols = tower.grid(pixels)
        tokens = cache[name].float()
        prefix = tower.num_prefix_tokens
        grid = tokens[:, prefix:prefix + rows * cols].reshape(len(tokens), rows, cols, -1).permute(0, 3, 1, 2)
        stride = tower.patch_size[1]
    return name, stride, grid, output


def _move_left(grid: torch.Tensor, cells: float) -> torch.Tensor:
    """A map moved left by a fractional number of cells (linear interpolation); columns past the end are NaN."""
    whole, frac = int(np.floor(cells)), cells - np.floor(cells)
    cols = grid.shape[-1]
    out = torch.full_like(grid, float("nan"))
    keep = cols - whole - (1 if frac > 0 else 0)
    if keep <= 0:
        return out
    left = grid[..., whole:whole + keep]
    right = grid[..., whole + 1:whole + 1 + keep] if frac > 0 else left
    out[..., :keep] = (1 - frac) * left + frac * right
    return out


def equivariance_error(grids: torch.Tensor, shifts: list[int], stride: int) -> list[float]:
    """Relative distance of each shifted map from the unshifted map moved by the same amount (shift / stride cells)."""
    reference = grids[0]
    errors = []
    for grid, shift in zip(grids, shifts, strict=True):
        expected = _move_left(reference, shift / stride)
        valid = ~torch.isnan(expected[0])
        if not valid.any():
            errors.append(float("nan"))
            continue
        diff = (grid[:, valid] - expected[:, valid]).norm()
        errors.append(float(diff / expected[:, valid].norm().clamp_min(1e-12)))
    return errors


def shift_probe(model, image: Image.Image, max_shift: int = 16) -> ShiftProbe:
    """Run the image shifted by 0..max_shift pixels as one batch and measure output and feature-map changes."""
    if not 1 <= int(max_shift) <= 64:
        raise ValueError("The largest shift must be between 1 and 64 pixels.")
    tower = image_tower(model)
    crops = shifted_crops(image, tower.preprocess.size, int(max_shift))
    pixels = tower.pixels(torch.stack([tower.preprocess.normalize(crop) for crop in crops]))
    name, stride, grids, output = _feature_grid(model, pixels)
    output = output_vector(tower, output.float())
    if model.has_text or not tower.class_names:
        normed = torch.nn.functional.normalize(output, dim=-1)
        similarity = (normed @ normed[0]).tolist()
        kind = "cosine to the unshifted output"
    else:
        probs = output.softmax(dim=-1)
        similarity = probs[:, int(probs[0].argmax())].tolist()
        kind = "probability of the unshifted top-1 class"
    shifts = list(range(int(max_shift) + 1))
    return ShiftProbe(model.model_id, shifts, kind, similarity, name, int(stride),
                      equivariance_error(grids.cpu(), shifts, int(stride)))


# -- cue conflict --------------------------------------------------------------------------------------------------
@dataclass
class CueConflictResult:
    """Which cue one model followed on each cue-conflict image."""

    model_id: str
    shape_labels: list[str]
    texture_labels: list[str]
    predictions: list[str]     # the predicted "{colour} {shape}" class
    followed: list[str]        # "shape", "texture" or "neither"

    def fraction(self, cue: str) -> float:
        return self.followed.count(cue) / max(1, len(self.followed))

    @property
    def shape_bias(self) -> float:
        """shape / (shape + texture) decisions, as Geirhos et al. define it; NaN if no decision followed either."""
        shape, texture = self.followed.count("shape"), self.followed.count("texture")
        return shape / (shape + texture) if shape + texture else float("nan")


def _shape_classes(model) -> tuple[list[str], torch.Tensor | None]:
    """The "{colour} {shape}" classes a model can be scored on, with CLIP text features for them."""
    names = shapes.class_names()
    if model.has_text:
        return names, prompt_features(model, [zero_shot_prompt(*n.split(" ", 1)) for n in names])
    labels = image_tower(model).class_names
    missing = [n for n in names if n not in labels]
    if missing:
        raise ValueError(f"{model.model_id}'s classes do not include the bundled shapes classes (e.g. {missing[0]!r}); "
                         "cue-conflict needs a model trained on them (bundled:mini-cnn, bundled:mini-vit) or a CLIP.")
    return names, None


def cue_conflict(model, examples: list[shapes.CueConflictExample], batch_size: int = 64) -> CueConflictResult:
    """Classify cue-conflict images (silhouette of one shape filled with small shapes of another) and record
    whether the predicted shape is the silhouette's (shape cue), the motifs' (texture cue) or neither."""
    if not examples:
        raise ValueError("No cue-conflict images to classify.")
    names, text = _shape_classes(model)
    labels = image_tower(model).class_names if text is None else names
    columns = [labels.index(n) for n in names]
    scorer = ScoreModel(model, text)
    predictions = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            scores = scorer(model.pixels([e.image for e in batch]))[:, columns]
            predictions.extend(names[i] for i in scores.argmax(dim=-1).tolist())
    followed = []
    for example, predicted in zip(examples, predictions, strict=True):
        shape = predicted.split(" ", 1)[1]
        followed.append("shape" if shape == example.shape_label else
                        "texture" if shape == example.texture_label else "neither")
    return CueConflictResult(model.model_id, [e.shape_label for e in examples], [e.texture_label for e in examples],
                             predictions, followed)
