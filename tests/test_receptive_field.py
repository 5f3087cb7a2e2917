"""Theoretical receptive fields against hand computation and against the exact support of a linear network's
gradient; effective receptive fields inside the theoretical ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import transformers
from torch import nn

from models import load_model, shapes
from models.receptive_field import ReceptiveFieldError, trace_receptive_fields
from viz.cnn import effective_receptive_field, layer_choices, receptive_field


def chain(layers: list[tuple[int, int, int]], size: int = 1, jump: int = 1) -> tuple[int, int]:
    """Hand recurrence along one path of (kernel, stride, dilation) layers: size += (k - 1) * d * jump."""
    for kernel, stride, dilation in layers:
        size += (kernel - 1) * dilation * jump
        jump *= stride
    return size, jump


def test_resnet18_every_stage_by_hand():
    model = torchvision.models.resnet18().eval()
    names = ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    fields = trace_receptive_fields(model, (224, 224), names)
    stem = [(7, 2, 1)]
    pool = [(3, 2, 1)]
    basic = [(3, 1, 1)] * 4          # two basic blocks of two 3x3 convolutions
    down = [(3, 2, 1)] + [(3, 1, 1)] * 3  # the first conv of stages 2-4 has stride 2
    path = {"conv1": stem, "maxpool": stem + pool, "layer1": stem + pool + basic,
            "layer2": stem + pool + basic + down, "layer3": stem + pool + basic + down * 2,
            "layer4": stem + pool + basic + down * 3}
    expected_sizes = {"conv1": 7, "maxpool": 11, "layer1": 43, "layer2": 99, "layer3": 211, "layer4": 435}
    expected_jumps = {"conv1": 2, "maxpool": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    for name in names:
        assert chain(path[name]) == (expected_sizes[name], expected_jumps[name])  # the hand computation itself
        assert fields[name].size == (expected_sizes[name],) * 2, name
        assert fields[name].jump == (expected_jumps[name],) * 2, name
    assert fields["layer4"].map_size == (7, 7)
    # unit 0 of conv1 (padding 3) covers input pixels -3..3; centres step by the jump
    assert (fields["conv1"].rows.lo, fields["conv1"].rows.hi) == (-3, 3)
    assert fields["layer4"].box(3, 3) == (0, 0, 223, 223)   # 435 px clipped to the image


def test_adapter_stage_names_match_the_module_paths():
    model = load_model("torchvision:resnet18/none", device="cpu")
    sizes = {name: receptive_field(model, name).size[0] for name in ("stem", "stages.0", "stages.3")}
    assert sizes == {"stem": 11, "stages.0": 43, "stages.3": 435}
    assert receptive_field(model, "module.layer2.0.downsample.0").size == (43, 43)  # 1x1 stride-2 shortcut
    assert receptive_field(model, "module.layer2.0.conv1").jump == (8, 8)


def test_vgg11_and_convnext_by_hand():
    vgg = torchvision.models.vgg11().eval()
    conv, pool = (3, 1, 1), (2, 2, 1)
    expected = chain([conv, pool, conv, pool, conv, conv, pool, conv, conv, pool, conv, conv])
    assert trace_receptive_fields(vgg, (224, 224), ["features.18"])["features.18"].size[0] == expected[0] == 134
    # ConvNeXt-T: 4x4/4 stem, stages of 3-3-9-3 blocks with 7x7 depthwise convs, 2x2/2 downsampling between
    stages = [[(4, 4, 1)] + [(7, 1, 1)] * 3, [(2, 2, 1)] + [(7, 1, 1)] * 3, [(2, 2, 1)] + [(7, 1, 1)] * 9,
              [(2, 2, 1)] + [(7, 1, 1)] * 3]
    expected = chain([layer for stage in stages for layer in stage])
    assert expected == (1688, 32)
    tv = trace_receptive_fields(torchvision.models.convnext_tiny().eval(), (224, 224), ["features.7"])["features.7"]
    assert (tv.size[0], tv.jump[0]) == expected
    # transformers' ConvNext goes channels-last (permute) inside each block: the trace follows the axes
    hf = transformers.ConvNextModel(transformers.ConvNextConfig()).eval()
    field = trace_receptive_fields(hf, (224, 224), ["encoder.stages.3"])["encoder.stages.3"]
    assert (field.size[0], field.jump[0]) == expected


class LinearNet(nn.Module):
    """Convolutions and average pools only, with positive weights: the exact support of d unit / d input is the
    theoretical receptive field (clipped), a brute-force reference. A residual add and a concatenation included."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 5, stride=2, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=1, padding=2, dilation=2)
        self.shortcut = nn.Conv2d(4, 4, 1)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.c = nn.Conv2d(8, 6, (3, 5), stride=(1, 2), padding=(0, 3))
        for conv in (self.a, self.b, self.shortcut, self.c):
            nn.init.uniform_(conv.weight, 0.1, 1.0)

    def forward(self, x):
        x = self.a(x)
        x = self.b(x) + self.shortcut(x)
        x = self.pool(x)
        return self.c(torch.cat([x, x.flip(1)], dim=1))


def gradient_box(model: nn.Module, layer: str, unit: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    pixels = torch.rand(1, 3, size, size, requires_grad=True)
    out = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, o: out.setdefault("v", o))
    model(pixels)
    handle.remove()
    out["v"][0, :, unit[0], unit[1]].sum().backward()
    support = pixels.grad[0].abs().sum(0) > 0
    rows, cols = np.nonzero(support.numpy())
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


@pytest.mark.parametrize("layer", ["a", "b", "pool", "c"])
def test_trace_equals_the_gradient_support_of_a_linear_network(layer):
    torch.manual_seed(0)
    model = LinearNet().eval()
    field = trace_receptive_fields(model, (61, 61), [layer])[layer]
    rows, cols = field.map_size
    for unit in [(0, 0), (rows // 2, cols // 2), (rows - 1, cols - 1), (0, cols - 1)]:
        assert field.box(*unit) == gradient_box(model, layer, unit, 61), (layer, unit)


def test_squeeze_excitation_gates_make_the_field_global_unless_ignored():
    model = torchvision.models.mobilenet_v3_small().eval()
    gated = trace_receptive_fields(model, (224, 224), ["features.12"])["features.12"]
    local = trace_receptive_fields(model, (224, 224), ["features.12"], ignore_gates=True)["features.12"]
    assert gated.is_global and gated.box(0, 0) == (0, 0, 223, 223)
    assert not local.is_global and local.jump == (32, 32)
    # the first block has no gate yet
    first = trace_receptive_fields(model, (224, 224), ["features.0"])["features.0"]
    assert not first.is_global and first.size == (3, 3)


def test_a_layer_after_the_map_is_flattened_is_refused():
    model = torchvision.models.resnet18().eval()
    with pytest.raises(ReceptiveFieldError, match="not a feature map"):
        trace_receptive_fields(model, (64, 64), ["fc"])


@pytest.mark.parametrize("model_id", ["torchvision:resnet18/none", "bundled:mini-cnn"])
def test_effective_field_lies_inside_the_theoretical_field(model_id):
    torch.manual_seed(0)
    model = load_model(model_id, device="cpu")
    image = shapes.make_dataset(1, seed=99)[0].image
    pixels = model.pixels([image])
    names = [n for n in layer_choices(model) if not n.startswith("module.")]
    checked = 0
    for name in names:
        field = receptive_field(model, name)
        rows, cols = field.map_size
        for unit in [(rows // 2, cols // 2), (0, 0), (rows - 1, cols - 1)]:
            erf = effective_receptive_field(model, pixels, name, *unit)
            top, left, bottom, right = field.box(*unit)
            outside = erf.copy()
            outside[top:bottom + 1, left:right + 1] = 0
            assert erf.sum() > 0, (name, unit)
            assert outside.max() == 0, (name, unit)
            checked += 1
    assert checked >= 3 * len(names)
