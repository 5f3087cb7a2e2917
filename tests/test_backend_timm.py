"""The timm backend: one adapter_for for every timm model (ViT, Eva with rotary positions, MAP heads, CNNs), its
coverage builders, and rotary attention equal to timm's own eager computation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models.adapters.attention_rotary import TimmRotaryAttentionSite
from models.backends.timm import SoftmaxRecorder, adapter_for, eager_pattern, preprocess_of, save_random
from models.coverage import MATRIX, record_site_calls, run_row, select
from models.errors import UnknownArchitectureError
from models.registry import clear_cache, load_model

TOLERANCE = 1e-5
TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "num_heads": 4, "embed_dim": 64}
COMMON = {"model_id": "test", "backend": "timm", "device": "cpu", "dtype": torch.float32}


def _tiny(arch: str, **kwargs) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, **{**TINY, **kwargs}).eval()


def _adapter(model: nn.Module, **kwargs):
    return adapter_for(model, class_names=[], preprocess=preprocess_of(model), common=COMMON, **kwargs)


def _peak_attention(model: nn.Module) -> None:
    """Large q/k weights, so patterns are far from uniform and a missing rotation cannot pass unnoticed."""
    with torch.no_grad():
        for block in model.blocks:
            for name in ("qkv", "q_proj", "k_proj"):
                linear = getattr(block.attn, name, None)
                if linear is not None:
                    linear.weight.normal_(0.0, 0.5)


ROTARY_VARIANTS = {
    "eva02 separate q/k/v": ("eva02_base_patch14_224", {}),
    "eva02 fused qkv + q/v bias, q/k norm": ("eva02_base_patch14_224", {"qkv_fused": True, "qk_norm": True}),
    "dinov3 registers, half rotation": ("vit_base_patch16_dinov3", {}),
    "pe-core AttentionRope, grouped kv": ("vit_pe_core_base_patch16_224", {"qkv_fused": False, "num_kv_heads": 2,
                                                                           "attn_pool_num_heads": 4}),
}


@pytest.mark.parametrize("variant", list(ROTARY_VARIANTS))
def test_rotary_attention_equals_timms_eager_computation(variant):
    arch, kwargs = ROTARY_VARIANTS[variant]
    model = _tiny(arch, **kwargs)
    _peak_attention(model)
    adapter = _adapter(model)
    assert all(isinstance(adapter.sites[f"blocks.{i}.attn"], TimmRotaryAttentionSite) for i in range(2))
    pixels = torch.randn(2, 3, 32, 32)
    calls = record_site_calls(adapter, pixels, None)
    with adapter.capture([f"{name}.pattern" for name in calls]) as cache:
        adapter.run_image(pixels)
    for name, (args, kwargs_) in calls.items():
        theirs = eager_pattern(adapter.sites[name], args, kwargs_)
        assert (cache[f"{name}.pattern"] - theirs).abs().max() <= TOLERANCE, name
    site = adapter.sites["blocks.0.attn"]   # the rotation is applied (and matters) ...
    args, kwargs_ = calls["blocks.0.attn"]
    context = site.context_of(args, kwargs_)
    assert "rope" in context
    x = site.input_of(args, kwargs_)
    with torch.no_grad():
        q, k, _ = site.qkv(x, with_v=False, context={})
        unrotated = site.pattern(q, k, {})
    assert (unrotated - cache["blocks.0.attn.pattern"]).abs().max() > 1e-2
    with torch.no_grad():   # ... to the patches only: the prefix tokens' queries are not rotated
        q_rot, _, _ = site.qkv(x, with_v=False, context=context)
    prefix = adapter.num_prefix_tokens
    assert torch.equal(q_rot[:, :, :prefix], q[:, :, :prefix])
    assert not torch.allclose(q_rot[:, :, prefix:], q[:, :, prefix:])


@pytest.mark.parametrize("arch, site", [("eva02_base_patch14_224", "blocks.1.attn"),
                                        ("vit_base_patch16_siglip_224", "pool.attn")])
def test_pattern_gradient_equals_autograd_through_the_eager_softmax(arch, site):
    """Rotary block attention, and the MAP head (read at its output projection, before its MLP)."""
    model = _tiny(arch, num_classes=5)
    _peak_attention(model)
    with torch.no_grad():   # EVA scales its classifier by 1e-3 at init: a gradient worth comparing needs more
        model.head.weight.normal_(0.0, 1.0)
    adapter = _adapter(model)
    attention = adapter.sites[site].module
    attention.fused_attn = False
    pixels = torch.randn(2, 3, 32, 32)
    try:
        with adapter.capture([f"{site}.pattern"], grad=True) as cache, SoftmaxRecorder() as recorder:
            logits = adapter.run_image(pixels)
            softmax = recorder.outputs[0]
            softmax.retain_grad()
            logits[:, 2].sum().backward()
    finally:
        attention.fused_attn = True
    ours = cache.grad(f"{site}.pattern")
    assert ours.shape == softmax.shape
    assert float(softmax.grad.abs().max()) > 1e-4   # a real gradient, not two zeros
    assert torch.allclose(ours, softmax.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("arch, prefix, readout", [
    ("eva02_base_patch14_224", ["cls"], "mean"),
    ("vit_base_patch16_dinov3", ["cls", "reg0", "reg1", "reg2", "reg3"], "mean"),
    ("vit_base_patch14_reg4_dinov2", ["cls", "reg0", "reg1", "reg2", "reg3"], "cls"),
    ("deit_base_distilled_patch16_224", ["cls", "dist"], "cls"),
    ("vit_base_patch16_siglip_224", [], "attention_pool"),
])
def test_saved_tiny_models_load_as_vits_with_their_tokens_and_readout(tmp_path: Path, arch, prefix, readout):
    """timm's Eva is not a VisionTransformer: it still loads as a ViT (not a CNN), with its own prefix tokens."""
    model_id = save_random(arch, tmp_path / arch, tiny=True)
    adapter = load_model(model_id)
    try:
        assert adapter.family == "vit"
        assert adapter.prefix_tokens == prefix and adapter.readout == readout
        assert adapter.preprocess.size == (32, 32) and adapter.grid() == (4, 4)
        with adapter.capture(["blocks.1.attn.pattern"]) as cache:
            adapter.run_image(torch.randn(1, 3, 32, 32))
        assert cache["blocks.1.attn.pattern"].shape[-1] == 16 + len(prefix)
    finally:
        clear_cache()


def test_siglip_map_head_is_the_readout_and_its_output_is_the_pooled_features():
    model = _tiny("vit_base_patch16_siglip_224", num_classes=3)
    adapter = _adapter(model)
    pixels = torch.randn(2, 3, 32, 32)
    with adapter.capture(["final_norm", "pool", "pool.attn.pattern", "logits"]) as cache:
        logits = adapter.run_image(pixels)
    with torch.no_grad():
        assert torch.equal(cache["pool"], model.attn_pool(cache["final_norm"]))
        assert torch.equal(cache["logits"], logits) and torch.allclose(model(pixels), logits)
    assert cache["pool.attn.pattern"].shape == (2, 4, 1, 16)


def test_adapter_for_a_trunk_reads_the_towers_output():
    """open_clip TimmModel: the tower (trunk + projection) runs and is the output; the trunk's classes are not."""
    for arch, kwargs in (("vit_base_patch16_siglip_224", TINY), ("convnext_tiny", {"depths": (1, 1, 1, 1),
                                                                                  "dims": (8, 16, 16, 32)})):
        import timm

        trunk = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).eval()
        tower = nn.Sequential(trunk, nn.Linear(trunk.num_features, 6)).eval()
        adapter = adapter_for(trunk, class_names=["a", "b"], preprocess=preprocess_of(trunk), common=COMMON,
                              forward=tower, output=tower, output_name="image_embed")
        assert adapter.module is tower and adapter.class_names == []
        pixels = torch.randn(1, 3, 32, 32)
        with adapter.capture(["image_embed"]) as cache:
            embed = adapter.run_image(pixels)
        assert embed.shape == (1, 6) and torch.equal(cache["image_embed"], embed)


def test_attention_models_clipscope_does_not_map_are_refused_by_class():
    model = _tiny("cait_xxs24_224", depth_token_only=1)
    with pytest.raises(UnknownArchitectureError, match="Cait.*Closest supported"):
        _adapter(model)


def test_unsupported_architecture_is_refused_before_its_weights_exist(monkeypatch):
    import timm

    built = []
    create = timm.create_model

    def spy(*args, **kwargs):
        model = create(*args, **kwargs)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(timm, "create_model", spy)
    with pytest.raises(UnknownArchitectureError, match="cait_xxs24_224.*Cait"):
        load_model("timm:cait_xxs24_224/none")
    assert built == ["meta"]


TIMM_ROWS = [row for row in select(MATRIX, ["timm:"]) if row.family != "hierarchical"]


@pytest.mark.parametrize("row", TIMM_ROWS, ids=lambda row: row.arch)
def test_matrix_row_loads_as_its_family_with_attention_parity(tmp_path: Path, row):
    result = run_row(row, tmp_path, tiny=True)
    assert result.loads and result.right_family, result.failure
    assert not result.failure, result.traceback or result.failure
    if row.family == "vit":
        assert result.parity is not None and result.parity <= TOLERANCE and result.parity_sites >= 2
