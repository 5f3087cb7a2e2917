"""CNN adapter: stem, stages (one per spatial resolution level), pooled features and classifier head.

Canonical names: ``stem``, ``stages.N`` (batch, channels, h, w), ``logits`` (or ``image_embed`` for a CLIP ResNet
tower, whose head is an attention pool), and ``module.<path>`` for any conv layer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from models.adapters.base import ModelAdapter
from models.adapters.capture import HookPoint
from models.errors import UnknownArchitectureError


@dataclass
class CNNLayout:
    """The native modules of one CNN."""

    stem: nn.Module | None
    stages: list[nn.Module]
    stage_paths: list[str]
    head: nn.Module
    head_name: str = "logits"
    class_names: list[str] = field(default_factory=list)


class CNNAdapter(ModelAdapter):
    """A CNN classifier or CLIP's ResNet image tower."""

    family = "cnn"

    def __init__(self, layout: CNNLayout, forward: Callable[[torch.Tensor], torch.Tensor], **kwargs):
        super().__init__(**kwargs)
        self.layout = layout
        self._forward = forward
        self.class_names = list(layout.class_names)
        if layout.stem is not None:
            self.points["stem"] = HookPoint(layout.stem)
        for i, stage in enumerate(layout.stages):
            self.points[f"stages.{i}"] = HookPoint(stage)
        self.points[layout.head_name] = HookPoint(layout.head)

    @property
    def num_stages(self) -> int:
        return len(self.layout.stages)

    def conv_layers(self) -> list[str]:
        """Dotted paths of every convolution, for views that let the user pick any conv layer."""
        return [name for name, m in self.module.named_modules() if isinstance(m, nn.Conv2d)]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The native model's result: logits for classifiers, the embedding for a CLIP tower."""
        with self.lock, self.run_context():
            return self._forward(pixels.to(self.device, self.dtype))

    def stage_shapes(self, size: tuple[int, int] | None = None) -> dict[str, tuple[int, ...]]:
        """Output shape (channels, h, w) of the stem and every stage for one input of ``size``."""
        height, width = size or self.preprocess.size
        pixels = torch.zeros(1, 3, height, width, device=self.device, dtype=self.dtype)
        names = [n for n in self.points if n == "stem" or n.startswith("stages.")]
        with self.capture(names) as cache:
            self.forward(pixels)
        return {name: tuple(cache[name].shape[1:]) for name in names}

    def facts(self) -> dict:
        facts = super().facts()
        facts["stages"] = self.num_stages
        facts["stage shapes"] = "; ".join(f"{k}: {'x'.join(map(str, v))}" for k, v in self.stage_shapes().items())
        if self.class_names:
            facts["classes"] = len(self.class_names)
        return facts


# -- layouts shared by several backends --------------------------------------------------------------------------------
def module_paths(model: nn.Module, modules: list[nn.Module]) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(m)] for m in modules]


def resnet_style_layout(model: nn.Module, class_names: list[str], head_name: str = "logits") -> CNNLayout:
    """torchvision / timm ResNet-family and open_clip ModifiedResNet: layer1..layer4 after a stem."""
    stages = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
    if hasattr(model, "attnpool"):  # open_clip ModifiedResNet: a 3-conv stem ending in an average pool
        stem = model.avgpool
    else:
        stem = next((getattr(model, n) for n in ("maxpool", "act1", "relu") if hasattr(model, n)), None)
    head = getattr(model, "attnpool", None) or getattr(model, "fc", None)
    if head is None:
        raise UnknownArchitectureError(f"{type(model).__name__}: no classifier head found.")
    return CNNLayout(stem=stem, stages=stages, stage_paths=module_paths(model, stages), head=head,
                     head_name=head_name, class_names=class_names)


def by_resolution_layout(model: nn.Module, body: nn.Sequential, head: nn.Module, class_names: list[str],
                         input_size: tuple[int, int]) -> CNNLayout:
    """Any ``features``-style CNN (VGG, EfficientNet, MobileNet, ConvNeXt, DenseNet): one stage per resolution.

    A stage is the last child of ``body`` at each spatial resolution, found by one dry run.
    """
    sizes: dict[int, tuple[int, int]] = {}
    handles = [child.register_forward_hook(
        lambda m, a, out, i=i: sizes.__setitem__(i, tuple(out.shape[-2:]))) for i, child in enumerate(body)]
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    children = list(body)
    last_at_size = [i for i in range(len(children)) if i + 1 == len(children) or sizes[i + 1] != sizes[i]]
    stem = children[0]
    stages = [children[i] for i in last_at_size if i != 0]
    return CNNLayout(stem=stem, stages=stages, stage_paths=module_paths(model, stages), head=head,
                     class_names=class_names)
