"""CNN views: feature maps against the model's own intermediate outputs, channel choice and colour scales against
plain references, filters, predictions, CAMs (every method, a ViT's against Grad-CAM written out, CLIP ResNets, hooks
released). Whether a CAM points at the object is a truth test: tests/test_truth.py."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torch import nn

from models import load_model, shapes
from viz.cam import CAM_METHODS, class_activation_map, default_cam_layer, predict
from viz.cnn import (
    capture_maps,
    effective_radius,
    first_conv,
    kernel_slices,
    layer_choices,
    pick_channels,
    rgb_kernel_tiles,
    scale_maps,
    stage_names,
)
from viz.cnn_session import CNNSession


@pytest.fixture(scope="module")
def mini_cnn():
    return load_model("bundled:mini-cnn", device="cpu")


@pytest.fixture(scope="module")
def image():
    return shapes.make_dataset(1, seed=11, two_objects_prob=0.0)[0].image


def test_stage_maps_equal_the_models_own_hidden_states(mini_cnn, image):
    pixels = mini_cnn.pixels([image])
    maps = capture_maps(mini_cnn, pixels, stage_names(mini_cnn))
    with torch.no_grad():
        hidden = mini_cnn.module(pixels, output_hidden_states=True).hidden_states
    # transformers' hidden_states: the embedder output, then each stage's
    assert torch.equal(maps["stem"], hidden[0][0])
    for i in range(mini_cnn.num_stages):
        assert torch.equal(maps[f"stages.{i}"], hidden[i + 1][0])


def test_any_conv_layer_equals_a_plain_forward_hook():
    model = load_model("torchvision:resnet18/none", device="cpu")
    pixels = torch.randn(1, 3, 96, 96)
    name = "module.layer3.1.conv2"
    seen = {}
    handle = model.module.layer3[1].conv2.register_forward_hook(lambda m, a, o: seen.setdefault("out", o.clone()))
    maps = capture_maps(model, pixels, [name, "stages.1"])
    handle.remove()
    assert torch.equal(maps[name], seen["out"][0])
    net = model.module
    with torch.no_grad():
        expected = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(pixels))))))
    torch.testing.assert_close(maps["stages.1"], expected[0])
    assert "module.layer3.1.conv2" in layer_choices(model)


def test_top_k_channels_and_chosen_channels():
    maps = torch.randn(10, 4, 4)
    brute = sorted(range(10), key=lambda c: -float(maps[c].mean()))[:3]
    assert pick_channels(maps, k=3) == brute
    assert pick_channels(maps, channels=[7, 2, 7]) == [7, 2]
    with pytest.raises(ValueError, match="channels 0 to 9"):
        pick_channels(maps, channels=[10])


def test_colour_scales_per_unit_per_layer_and_global():
    maps = torch.tensor([[[0.0, 2.0]], [[1.0, 5.0]]])  # two 1x2 maps
    np.testing.assert_allclose(scale_maps(maps, "per unit"), [[[0, 1]], [[0, 1]]])
    np.testing.assert_allclose(scale_maps(maps, "per layer", layer_range=(0.0, 5.0)), [[[0, 0.4]], [[0.2, 1]]])
    np.testing.assert_allclose(scale_maps(maps, "global", global_range=(-5.0, 5.0)), [[[0.5, 0.7]], [[0.6, 1.0]]])
    with pytest.raises(ValueError, match="Colour scale"):
        scale_maps(maps, "rainbow")


def test_session_shows_the_requested_channels(mini_cnn, image):
    session = CNNSession(mini_cnn, image)
    scaled, chosen = session.feature_maps("stages.1", channels=[5, 1, 3], scale="per layer")
    stage = session.layer_maps("stages.1")
    assert chosen == [5, 1, 3] and scaled.shape == (3, *stage.shape[1:])
    low, high = float(stage.min()), float(stage.max())
    np.testing.assert_allclose(scaled, ((stage[[5, 1, 3]] - low) / (high - low)).numpy(), atol=1e-6)
    assert session.shapes()["input"] == (3, 128, 128)
    assert [s[0] for n, s in session.shapes().items() if n.startswith("stages.")] == [32, 64, 128]
    assert [s[1] for n, s in session.shapes().items() if n.startswith("stages.")] == [32, 16, 8]


def test_effective_radius_against_brute_force():
    rng = np.random.default_rng(3)
    erf = rng.random((9, 11)) ** 4
    centre = (4.0, 6.0)
    radius = effective_radius(erf, centre, 0.9)
    rows, cols = np.indices(erf.shape)
    distance = np.hypot(rows - centre[0], cols - centre[1])
    held = [erf[distance <= r].sum() / erf.sum() for r in sorted(set(distance.ravel()))]
    brute = sorted(set(distance.ravel()))[next(i for i, h in enumerate(held) if h >= 0.9 - 1e-12)]
    assert radius == pytest.approx(brute)
    point = np.zeros((5, 5))
    point[1, 3] = 2.0
    assert effective_radius(point, (1, 3)) == 0.0 and effective_radius(np.zeros((3, 3)), (1, 1)) == 0.0


def test_first_layer_filters_and_any_kernel(mini_cnn):
    path, conv = first_conv(mini_cnn)
    tiles = rgb_kernel_tiles(conv.weight)
    assert tiles.shape == (conv.out_channels, *conv.kernel_size, 3)
    w = conv.weight[0].detach()
    np.testing.assert_allclose(tiles[0], (0.5 + 0.5 * w / w.abs().max()).permute(1, 2, 0).numpy(), atol=1e-6)
    deeper = mini_cnn.module.get_submodule(mini_cnn.conv_layers()[-1])
    np.testing.assert_array_equal(kernel_slices(deeper, 4), deeper.weight[4].detach().numpy())
    with pytest.raises(ValueError, match="Output channel"):
        kernel_slices(deeper, deeper.out_channels)


def test_prediction_is_the_softmax_of_the_models_own_logits(mini_cnn, image):
    pixels = mini_cnn.pixels([image])
    prediction = predict(mini_cnn, pixels, k=5)
    with torch.no_grad():
        probs = mini_cnn.module(pixels).logits.softmax(-1)[0]
    top = probs.topk(5)
    assert prediction.indices == top.indices.tolist()
    np.testing.assert_allclose(prediction.probabilities, top.values.numpy(), rtol=1e-5)
    assert prediction.labels == [mini_cnn.class_names[i] for i in top.indices.tolist()]
    assert prediction.labels[0] == shapes.make_dataset(1, seed=11, two_objects_prob=0.0)[0].label


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_cam_method_gives_a_map_at_the_input_resolution(mini_cnn, image, method):
    pixels = mini_cnn.pixels([image])
    cam = class_activation_map(mini_cnn, pixels, 0, method)
    assert cam.shape == tuple(mini_cnn.preprocess.size) and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0 + 1e-6


def _grad_cam_by_hand(tokens: torch.Tensor, grads: torch.Tensor, grid, size, drop: int) -> np.ndarray:
    """Grad-CAM written out: drop ``drop`` leading tokens, put the rest on the grid, weight each channel by its mean
    gradient, ReLU, scale to [0, 1], resize bilinearly (cv2, as the library does) and scale again."""
    import cv2

    rows, cols = grid
    acts = tokens[0, drop:drop + rows * cols].reshape(rows, cols, -1).double()
    weights = grads[0, drop:drop + rows * cols].reshape(rows, cols, -1).double().mean(dim=(0, 1))
    cam = torch.relu((acts * weights).sum(-1)).numpy()
    cam = (cam - cam.min()) / (1e-7 + (cam - cam.min()).max())
    cam = cv2.resize(np.float32(cam), (size[1], size[0]))
    cam = cam - cam.min()
    return cam / (1e-7 + cam.max())


def test_cam_on_a_vit_uses_the_patch_grid_without_the_cls_token():
    """The library's Grad-CAM on mini-vit equals Grad-CAM written out from the last block's first-norm tokens and
    their gradients, CLS dropped, on the model's 8x8 grid (so it is an upsampled grid map); the same map built with
    the CLS token kept (every patch shifted by one) differs, so the check can tell. Whether the map points at the
    object, and beats a centre blob, is a truth test (tests/test_truth.py)."""
    from models.world.scenes import make_scene

    vit = load_model("bundled:mini-vit", device="cpu")
    scene = make_scene(12, n_objects=1, split="any")
    pixels = vit.pixels([scene.image])
    layer = default_cam_layer(vit)
    assert layer == f"blocks.{vit.num_layers - 1}.ln1"
    target = vit.class_names.index(scene.label)
    cam = class_activation_map(vit, pixels, target, "Grad-CAM")
    assert cam.shape == (64, 64)
    with vit.capture([layer], grad=True) as cache:
        vit.forward(pixels)[0, target].backward()
    tokens, grads = cache[layer].detach(), cache.grad(layer).detach()
    grid, prefix = vit.grid(pixels), vit.num_prefix_tokens
    assert tokens.shape[1] == prefix + grid[0] * grid[1] and prefix == 1
    np.testing.assert_allclose(cam, _grad_cam_by_hand(tokens, grads, grid, cam.shape, prefix), atol=1e-5)
    assert np.abs(cam - _grad_cam_by_hand(tokens, grads, grid, cam.shape, 0)).max() > 0.1


def test_cam_on_a_clip_resnet_targets_layer4_with_a_prompt(tiny_ids):
    clip = load_model(tiny_ids["open_clip_resnet"], device="cpu")
    assert default_cam_layer(clip) == f"stages.{clip.visual.num_stages - 1}"
    assert clip.visual.points[default_cam_layer(clip)].module is clip.visual.module.layer4
    pixels = torch.randn(1, 3, *clip.preprocess.size)
    prompts = ["a red circle", "a blue star"]
    cam = class_activation_map(clip, pixels, 1, "Grad-CAM", prompts=prompts)
    assert cam.shape == tuple(clip.preprocess.size)
    prediction = predict(clip, pixels, prompts, k=2)
    assert sorted(prediction.labels) == sorted(prompts)
    with pytest.raises(ValueError, match="prompt"):
        class_activation_map(clip, pixels, 0, "Grad-CAM", prompts=[])


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))


def test_repeated_cams_release_hooks_and_hold_no_memory(mini_cnn, image):
    pixels = mini_cnn.pixels([image])
    hooks = _hooks(mini_cnn.module)
    for _ in range(3):  # warm-up
        class_activation_map(mini_cnn, pixels, 1, "Grad-CAM")
    before = _live_tensors()
    for i in range(50):
        class_activation_map(mini_cnn, pixels, i % 36, ("Grad-CAM", "Grad-CAM++", "LayerCAM")[i % 3])
    after = _live_tensors()
    assert _hooks(mini_cnn.module) == hooks
    assert all(p.grad is None for p in mini_cnn.module.parameters())
    print(f"live tensors before / after 50 CAMs: {before} / {after}")
    assert after <= before


def test_errors_are_precise(mini_cnn, image):
    pixels = mini_cnn.pixels([image])
    with pytest.raises(ValueError, match="Unknown CAM method"):
        class_activation_map(mini_cnn, pixels, 0, "Magic-CAM")
    with pytest.raises(ValueError, match="classes 0 to 35"):
        class_activation_map(mini_cnn, pixels, 36)
    with pytest.raises(ValueError, match="need a CNN"):
        CNNSession(load_model("bundled:mini-vit", device="cpu"), image).layer_maps("stages.0")


BACKENDS = ["hf_resnet", "hf_convnext", "timm_resnet", "torchvision_resnet", "torchvision_convnext",
            "open_clip_resnet", "torchvision:vgg11/none", "torchvision:mobilenet_v3_small/none",
            "timm:efficientnet_b0/none"]


@pytest.mark.parametrize("which", BACKENDS)
def test_every_cnn_view_runs_on_every_backend(which, tiny_ids):
    """Maps, filters, receptive fields (theoretical and effective) and a CAM on each supported CNN family."""
    torch.manual_seed(0)
    model = load_model(tiny_ids.get(which, which), device="cpu")
    image = shapes.make_dataset(1, seed=8)[0].image
    session = CNNSession(model, image)
    stages = [n for n in session.layers() if not n.startswith("module.")]
    assert len(stages) >= 3 and any(n.startswith("module.") for n in session.layers())
    for name in stages:
        assert session.maps[name].dim() == 3
    conv = session.layers()[-1]
    scaled, chosen = session.feature_maps(conv, k=4)
    assert scaled.shape[0] == len(chosen) == min(4, session.layer_maps(conv).shape[0])
    first_conv(session.tower)
    last = stages[-1]
    field = session.field(last)
    unit = (field.map_size[0] // 2, field.map_size[1] // 2)
    erf = session.effective_field(last, unit)
    top, left, bottom, right = field.box(*unit)
    outside = erf.copy()
    outside[top:bottom + 1, left:right + 1] = 0
    assert erf.sum() > 0 and outside.max() == 0
    prompts = ["a photo of a cat", "a photo of a dog"] if model.family == "clip" else None
    cam = session.cam(0, "Grad-CAM", None, prompts)
    assert cam.shape == tuple(session.pixels.shape[-2:])


def test_session_prediction_reuses_the_analysis_forward(mini_cnn, image):
    session = CNNSession(mini_cnn, image)
    calls = []
    handle = mini_cnn.module.register_forward_hook(lambda *args: calls.append(1))
    try:
        prediction = session.prediction(k=5)
    finally:
        handle.remove()
    assert not calls
    assert prediction == predict(mini_cnn, session.pixels, k=5)
