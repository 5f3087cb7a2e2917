"""A loaded model's structure: module tree with output shapes for one input, and parameter counts per block."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.adapters.base import ModelAdapter


@dataclass
class ModuleRow:
    """One module of the tree, as the Model tab lists it."""

    name: str
    type: str
    depth: int
    output_shape: str
    parameters: int


def _shape_of(output) -> str:
    if torch.is_tensor(output):
        return "x".join(map(str, output.shape))
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return _shape_of(output[0])
    for attribute in ("logits", "last_hidden_state", "pooler_output"):
        value = getattr(output, attribute, None)
        if torch.is_tensor(value):
            return _shape_of(value)
    return ""


def module_tree(model: ModelAdapter, max_depth: int = 3) -> list[ModuleRow]:
    """Modules down to ``max_depth`` with their output shape for one blank input (and one prompt for CLIP)."""
    modules = [(name, module) for name, module in model.module.named_modules()
               if name and name.count(".") < max_depth]
    shapes: dict[str, str] = {}

    def record(name: str):
        def hook(module, args, output) -> None:  # must return None, or it would replace the output
            shapes.setdefault(name, _shape_of(output))
        return hook
    handles = [module.register_forward_hook(record(name)) for name, module in modules]
    try:
        pixels = torch.zeros(1, 3, *model.preprocess.size, device=model.device, dtype=model.dtype)
        if model.family == "clip":
            model.encode_image(pixels)
            model.encode_text(["a photo of a cat"])
        else:
            model.forward(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return [ModuleRow(name, type(module).__name__, name.count("."), shapes.get(name, ""),
                      sum(p.numel() for p in module.parameters())) for name, module in modules]


def block_parameters(model: ModelAdapter) -> list[tuple[str, int]]:
    """Parameter count of each canonical block or stage, plus everything else, summing to the model's total."""
    groups: list[tuple[str, nn.Module]] = []
    towers = [("", model.visual), ("text.", None)] if model.family == "clip" else [("", model)]
    for prefix, tower in towers:
        if tower is None:
            groups += [(f"text.blocks.{i}", block) for i, block in enumerate(model.text.blocks)]
        elif tower.family == "vit":
            groups += [(f"{prefix}blocks.{i}", block) for i, block in enumerate(tower.layout.blocks)]
        else:
            groups += [(f"{prefix}stages.{i}", stage) for i, stage in enumerate(tower.layout.stages)]
    counted = {id(p) for _, module in groups for p in module.parameters()}
    rest = sum(p.numel() for p in model.module.parameters() if id(p) not in counted)
    counts = [(name, sum(p.numel() for p in module.parameters())) for name, module in groups]
    return counts + [("everything else", rest)]
