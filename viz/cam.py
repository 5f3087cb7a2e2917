"""Class activation maps (pytorch-grad-cam's methods) and top-k predictions, for CNNs, ViTs and CLIP models.

The CAM library needs a plain module from pixels to one score per class; :class:`ScoreModel` is that view of an
adapter: a classifier's logits, or for CLIP the logits against a set of text prompts. On a ViT the target layer is a
block's first norm and its tokens are reshaped to the model's own patch grid without the prefix tokens (gradients at
the last block reach the patches only there, not through CLS).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from viz.outputs import output_vector

CAM_METHODS = {
    "Grad-CAM": GradCAM,
    "HiResCAM": HiResCAM,
    "Grad-CAM++": GradCAMPlusPlus,
    "XGrad-CAM": XGradCAM,
    "LayerCAM": LayerCAM,
    "Eigen-CAM": EigenCAM,
    "EigenGrad-CAM": EigenGradCAM,
    "Score-CAM": ScoreCAM,
}


def image_tower(model):
    """The adapter that holds the image structure: the model itself, or a CLIP model's image tower."""
    return model.image_tower


class ScoreModel(nn.Module):
    """pixels -> (batch, classes) scores of an adapter, with autograd on: class logits, or CLIP prompt logits."""

    def __init__(self, model, text_features: torch.Tensor | None = None):
        super().__init__()
        self.adapter = model
        self.tower = image_tower(model)
        self.net = model.module  # registered so the CAM library finds the parameters and their device
        if model.has_text and text_features is None:
            raise ValueError("A CLIP model needs text prompts to score an image against.")
        self.text_features = text_features

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        with self.tower.gradients():
            output = self.tower.forward(pixels)
            if self.text_features is not None:
                return self.adapter.logits(output, self.text_features)
            output = output_vector(self.tower, output)
            if output.dim() != 2:
                raise ValueError(f"{self.adapter.model_id} gives {tuple(output.shape)} outputs, not class scores.")
            return output.float()


def prompt_features(model, prompts: list[str]) -> torch.Tensor:
    """CLIP text embeddings of ``prompts`` (used as they are, no template), the classes of a CLIP ScoreModel."""
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise ValueError("Type at least one text prompt (one per line) for a CLIP model.")
    with torch.no_grad():
        return model.encode_text(prompts)


def class_labels(model, prompts: list[str] | None = None) -> list[str]:
    """The names of a ScoreModel's classes: the prompts for CLIP, the names the weights carry, else 'class i'."""
    if model.has_text:
        return [p.strip() for p in prompts or [] if p and p.strip()]
    tower = image_tower(model)
    return list(tower.class_names)


@dataclass
class Prediction:
    """Top-k classes of one image: names and softmax probabilities, highest first."""

    labels: list[str]
    probabilities: list[float]
    indices: list[int]


def top_k(scores: torch.Tensor, labels: list[str], k: int = 5, probability: str = "softmax") -> Prediction:
    """The ``k`` most probable classes from one image's scores (classes,): a softmax over them, or (``"sigmoid"``,
    SigLIP's prompts) each score's own sigmoid."""
    scores = scores.detach().float().cpu()
    probs = scores.sigmoid() if probability == "sigmoid" else scores.softmax(dim=-1)
    k = max(1, min(int(k), probs.numel()))
    values, indices = probs.topk(k)
    names = [labels[i] if i < len(labels) else f"output {i}" for i in indices.tolist()]
    return Prediction(names, values.tolist(), indices.tolist())


def output_index(labels: list[str], target: str | int | None, scores: torch.Tensor) -> int:
    """The output a CAM or relevancy map explains: a label, an index ("7", "output 7"), or (None, "") the output
    with the highest score, so that models without class names get a useful default."""
    count = scores.shape[-1]
    text = "" if target is None else str(target).strip()
    if not text:
        return int(scores.reshape(-1, count)[0].argmax())
    if text in labels:
        return labels.index(text)
    number = text.split()[-1] if text.split()[0] in ("output", "class") else text
    if not number.isdigit():
        hint = f"e.g. {', '.join(labels[:5])}" if labels else "this model has no class names: give an output index"
        raise ValueError(f"Unknown class {text!r}; {hint} (0 to {count - 1}).")
    if not 0 <= int(number) < count:
        raise ValueError(f"Output {number} does not exist: this model has outputs 0 to {count - 1}.")
    return int(number)


def image_scores(model, pixels: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
    """The first image's scores (classes,): a classifier's logits, or a text model's logits over the prompts."""
    text = prompt_features(model, prompts or []) if model.has_text else None
    with torch.no_grad():
        return ScoreModel(model, text)(pixels[:1])[0].detach().float().cpu()


def predict(model, pixels: torch.Tensor, prompts: list[str] | None = None, k: int = 5) -> Prediction:
    """Top-k prediction of the first image: classifier softmax, or CLIP softmax over the prompts."""
    return top_k(image_scores(model, pixels, prompts), class_labels(model, prompts), k, model.probability)


def default_cam_layer(model) -> str:
    """The usual target: the last CNN stage (layer4 of a CLIP ResNet, before its attention pool), or the first norm
    of a ViT's last block."""
    tower = image_tower(model)
    if tower.has_feature_maps:
        from viz.cnn import stage_names
        return [n for n in stage_names(tower) if n != "stem"][-1]
    return f"blocks.{tower.num_layers - 1}.ln1"


def cam_layer_choices(model) -> list[str]:
    tower = image_tower(model)
    if tower.has_feature_maps:
        from viz.cnn import layer_choices
        return layer_choices(tower)
    return [f"blocks.{i}.ln1" for i in range(tower.num_layers)]


def _target_module(tower, layer: str) -> nn.Module:
    if layer.startswith("module."):
        return tower.module.get_submodule(layer[len("module."):])
    if layer not in tower.points:
        raise ValueError(f"No layer {layer!r} in {tower.model_id}.")
    return tower.points[layer].module


def _as_float32(reshape):
    """The library turns stored activations and gradients into numpy arrays, which have no bf16: cast them (after
    ``reshape``, if any) to float32 as they are stored. The model itself keeps running in its own precision."""
    def transform(tensor: torch.Tensor) -> torch.Tensor:
        return (reshape(tensor) if reshape is not None else tensor).float()
    return transform


def _map_reshape(tower, layer: str):
    """A named stage's own conversion of its module's output to (batch, channels, h, w) (channels-last Swin stages
    are permuted, flat-token stages put on their grid); None for layers already channels-first."""
    point = tower.points.get(layer)
    return point.transform if point is not None else None


def _vit_reshape(tower, pixels: torch.Tensor):
    """Tokens (batch, tokens, dim) -> (batch, dim, rows, cols) over the patch grid, prefix tokens dropped."""
    rows, cols = tower.grid(pixels)
    prefix = tower.num_prefix_tokens

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[0] != pixels.shape[0]:  # sequence-first layouts
            tokens = tokens.transpose(0, 1)
        patches = tokens[:, prefix:prefix + rows * cols]
        return patches.reshape(tokens.shape[0], rows, cols, -1).permute(0, 3, 1, 2)
    return reshape


def class_activation_map(model, pixels: torch.Tensor, target: int, method: str = "Grad-CAM",
                         layer: str | None = None, prompts: list[str] | None = None) -> np.ndarray:
    """A CAM (height, width) in [0, 1] at the input resolution for class ``target`` (a prompt's index for CLIP).

    Hooks are held only inside this call (the library's context manager releases them) and the parameter
    gradients the backward leaves behind are dropped, so repeated calls hold no memory.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; known: {', '.join(CAM_METHODS)}.")
    tower = image_tower(model)
    layer = layer or default_cam_layer(model)
    text = prompt_features(model, prompts or []) if model.has_text else None
    scores_model = ScoreModel(model, text)
    classes = len(class_labels(model, prompts)) or None
    if classes is not None and not 0 <= target < classes:
        raise ValueError(f"Class {target} does not exist: this model has classes 0 to {classes - 1}.")
    reshape = _as_float32(_map_reshape(tower, layer) if tower.has_feature_maps else _vit_reshape(tower, pixels))
    # the library hooks the shared model itself: hold the model's lock so no other request runs through its hooks
    with tower.lock:
        try:
            with CAM_METHODS[method](model=scores_model, target_layers=[_target_module(tower, layer)],
                                     reshape_transform=reshape) as cam:
                cam.batch_size = 64  # Score-CAM: masked copies of the image per forward
                maps = cam(input_tensor=pixels[:1].float().to(tower.device, tower.dtype),
                           targets=[ClassifierOutputTarget(int(target))])
        finally:
            scores_model.zero_grad(set_to_none=True)
    return np.nan_to_num(maps[0].astype(np.float32))
