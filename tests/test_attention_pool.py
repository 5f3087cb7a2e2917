"""Attention-pool readouts (timm AttentionPoolLatent, HF SigLIP head, open_clip CoCa AttentionalPooler): the probe's
pattern recomputed by clipscope equals each module's own eager computation, and so does its gradient."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.adapters.attention_pool import HFProbePoolSite, OpenClipPoolerSite, TimmLatentPoolSite, pool_site
from models.backends.timm import SoftmaxRecorder, eager_pattern
from models.errors import UnknownArchitectureError

TOLERANCE = 1e-5


def _peaked(module: nn.Module, std: float = 0.4) -> nn.Module:
    """Random weights large enough that patterns are far from uniform (a wrong pattern cannot pass by chance)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, std)
        for norm in module.modules():   # q/k norms: gains well above one, so normalised q.k stays large
            if isinstance(norm, nn.LayerNorm):
                norm.weight.normal_(2.0, 0.2)
    return module.eval().requires_grad_(False)


def _recompute(site, x: torch.Tensor, context: dict | None = None):
    q, k, v = site.qkv(x, with_v=True, context=context or {})
    return site.pattern(q, k, context or {}), v


def _timm_pool(**kwargs) -> nn.Module:
    from timm.layers import AttentionPoolLatent

    return _peaked(AttentionPoolLatent(32, num_heads=4, **kwargs))


@pytest.mark.parametrize("kwargs", [{}, {"qk_norm": True, "latent_len": 3}, {"pos_embed": "abs", "feat_size": 6},
                                    {"out_features": 0}])
def test_timm_latent_pool_equals_eager(kwargs):
    pool = _timm_pool(**kwargs)
    site = pool_site(pool)
    assert isinstance(site, TimmLatentPoolSite)
    x = torch.randn(2, 6, 32)
    ours, _ = _recompute(site, x)
    theirs = eager_pattern(site, (x,), {})
    assert ours.shape == (2, 4, kwargs.get("latent_len", 1), 6)
    assert float(theirs.amax()) > 0.5   # peaked: the check is not comparing two near-uniform rows
    assert (ours - theirs).abs().max() <= TOLERANCE


def test_timm_latent_pool_mask_is_the_calls_own():
    pool = _timm_pool()
    site = pool_site(pool)
    x = torch.randn(2, 6, 32)
    mask = torch.zeros(2, 1, 1, 6)
    mask[..., :2] = float("-inf")
    context = site.context_of((x,), {"attn_mask": mask})
    ours, _ = _recompute(site, x, context)
    theirs = eager_pattern(site, (x,), {"attn_mask": mask})
    assert (ours[..., :2] == 0).all()
    assert (ours - theirs).abs().max() <= TOLERANCE


def test_timm_latent_pool_gradient_equals_autograd():
    """dL/dA read at the head's own output projection equals autograd through the module's eager softmax."""
    pool = _timm_pool(qk_norm=True, latent_len=2)
    site = pool_site(pool)
    x = torch.randn(2, 6, 32, requires_grad=True)   # the weights are frozen: the graph starts at the tokens
    weights = torch.randn(32)
    outputs = {}
    handle = site.output_module().register_forward_hook(lambda m, a, out: outputs.setdefault("out", out))
    pool.fused_attn = False
    try:
        with SoftmaxRecorder() as recorder:
            result = pool(x)
    finally:
        pool.fused_attn = True
        handle.remove()
    softmax = recorder.outputs[0]
    softmax.retain_grad()
    outputs["out"].retain_grad()
    (result @ weights).square().sum().backward()
    with torch.no_grad():
        _, v = _recompute(site, x)
        ours = site.pattern_grad(v, outputs["out"].grad)
    assert (ours - softmax.grad).abs().max() <= TOLERANCE * max(1.0, float(softmax.grad.abs().max()))


def _reconstructed_output(site, x: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """out = concat_h(A_h V_h) W_o^T + b with clipscope's own pattern and V: the head's attention output."""
    _, _, v = site.qkv(x, with_v=True)
    weight, _ = site.output_projection()
    heads = (pattern @ v).transpose(1, 2).flatten(2)
    return heads @ weight.T + site.output_module().out_proj.bias


def _check_multihead_pool(site, head: nn.Module, x: torch.Tensor, query: torch.Tensor, keys: torch.Tensor):
    ours, _ = _recompute(site, x)
    attention = site.output_module()
    out, theirs = attention(query, keys, keys, need_weights=True, average_attn_weights=False)
    assert float(theirs.amax()) > 0.5
    assert (ours - theirs).abs().max() <= TOLERANCE
    # the pattern, V and the output projection are the module's own: they rebuild its output,
    pattern = ours.clone().requires_grad_(True)
    rebuilt = _reconstructed_output(site, x, pattern)
    assert torch.allclose(rebuilt, out, rtol=1e-5, atol=1e-5)
    # and the pattern gradient from dL/d(output) is autograd's
    grad_output = torch.randn_like(rebuilt)
    (rebuilt * grad_output).sum().backward()
    _, _, v = site.qkv(x, with_v=True)
    assert torch.allclose(site.pattern_grad(v, grad_output), pattern.grad, rtol=1e-5, atol=1e-5)


def test_hf_siglip_pooling_head_equals_eager():
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

    config = SiglipVisionConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64)
    head = _peaked(SiglipMultiheadAttentionPoolingHead(config))
    site = pool_site(head)
    assert isinstance(site, HFProbePoolSite) and site.output_module() is head.attention
    x = torch.randn(2, 7, 32)
    _check_multihead_pool(site, head, x, head.probe.expand(2, -1, -1), x)


@pytest.mark.parametrize("context_dim", [32, 24])   # 24: separate q/k/v projection weights in nn.MultiheadAttention
def test_open_clip_attentional_pooler_equals_eager(context_dim):
    from open_clip.transformer import AttentionalPooler

    pooler = _peaked(AttentionalPooler(32, context_dim, n_head=4, n_queries=5))
    site = pool_site(pooler)
    assert isinstance(site, OpenClipPoolerSite)
    x = torch.randn(2, 7, context_dim)
    query = pooler.ln_q(pooler.query).unsqueeze(0).expand(2, -1, -1)
    ours, _ = _recompute(site, x)
    assert ours.shape == (2, 4, 5, 7)
    _check_multihead_pool(site, pooler, x, query, pooler.ln_k(x))


def test_pool_given_patches_only_covers_every_token_with_zero_prefix_columns():
    """timm's pool_include_prefix=False: the head sees patches only, pool.attn still spans prefix + patches."""
    import timm

    from models.backends.timm import adapter_for, preprocess_of

    model = timm.create_model("vit_base_patch16_siglip_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                              num_heads=4, embed_dim=32, class_token=True, reg_tokens=2).eval()
    assert not model.pool_include_prefix
    adapter = adapter_for(model, class_names=[], preprocess=preprocess_of(model),
                          common={"model_id": "test", "backend": "timm", "device": "cpu", "dtype": torch.float32})
    assert adapter.readout == "attention_pool" and adapter.prefix_tokens == ["cls", "reg0", "reg1"]
    pixels = torch.randn(2, 3, 32, 32)
    with adapter.capture(["pool.attn.pattern", "pool", "blocks.0.resid_post"]) as cache:
        features = adapter.run_image(pixels)
    pattern = cache["pool.attn.pattern"]
    assert pattern.shape == (2, 4, 1, cache["blocks.0.resid_post"].shape[1])
    assert (pattern[..., :3] == 0).all()
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, 1))
    assert torch.equal(cache["pool"], features)   # no classifier: the pooled output is the model's result
    from models.coverage import record_site_calls

    args, kwargs = record_site_calls(adapter, pixels, None)["pool.attn"]
    assert (eager_pattern(adapter.sites["pool.attn"], args, kwargs) - pattern).abs().max() <= TOLERANCE


def test_unrecognised_pool_head_names_the_class():
    with pytest.raises(UnknownArchitectureError, match="Linear"):
        pool_site(nn.Linear(3, 3))
