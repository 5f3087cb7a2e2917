"""Pattern gradients through attention with an inner norm (EVA02-CLIP's sub-LN: proj(norm(concat_h A_h V_h))): the
output path is not linear, so dL/dA is read at the norm's input, and must equal autograd on the eager softmax."""
from __future__ import annotations

import pytest
import torch

from models.adapters.base import ModelAdapter  # noqa: F401  (the adapters register their attention kinds)
from models.backends.timm import adapter_for
from models.preprocess import Preprocess

timm = pytest.importorskip("timm")


def _eager_pattern_grads(model, pixels, target):
    """Each block's softmax as timm's own eager path computes it (fused_attn off), with its gradient."""
    patterns = {}
    handles = []
    for i, block in enumerate(model.blocks):
        block.attn.fused_attn = False

        def keep(module, args, output, i=i):
            output.retain_grad()
            patterns[i] = output
        handles.append(block.attn.attn_drop.register_forward_hook(keep))
    try:
        target(model(pixels)).backward()
    finally:
        for handle in handles:
            handle.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
    return [patterns[i].grad for i in range(len(model.blocks))]


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_tiny_patch16_224"])
def test_pattern_gradient_through_an_inner_norm_equals_autograd(name):
    torch.manual_seed(0)
    extra = {"scale_attn_inner": True} if name.startswith("eva") else {"scale_attn_norm": True}
    model = timm.create_model(name, pretrained=False, img_size=28 if name.startswith("eva") else 32, depth=2,
                              num_classes=5, **extra).eval()
    assert not isinstance(model.blocks[0].attn.norm, torch.nn.Identity)
    size = model.patch_embed.img_size
    adapter = adapter_for(model, class_names=[], preprocess=Preprocess(size=tuple(size), mean=(0.5,) * 3,
                                                                        std=(0.5,) * 3),
                          common={"model_id": name, "backend": "timm", "device": torch.device("cpu"),
                                  "dtype": torch.float32})
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    names = [f"blocks.{i}.attn.pattern" for i in range(len(model.blocks))]
    with adapter.capture(names, grad=True) as cache:
        adapter.run_image(pixels)[:, 2].sum().backward()
    reference = _eager_pattern_grads(model, pixels, lambda out: out[:, 2].sum())
    for name_, expected in zip(names, reference, strict=True):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(cache.grad(name_), expected, atol=1e-6, rtol=1e-4)
