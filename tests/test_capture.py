"""Capture API: recomputed attention equals each backend's eager reference; resid_post reproduces the output path;
prefix tokens and shapes are right; no hook survives a capture, also when the forward raises."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models import CaptureError, load_model

ATOL = 1e-5
VIT_LIKE = ["open_clip_vit", "hf_clip", "hf_vit", "hf_deit", "hf_dinov2_reg", "timm_vit", "timm_vit_reg",
            "timm_deit_distilled", "torchvision_vit"]
PREFIX = {"open_clip_vit": ["cls"], "hf_clip": ["cls"], "hf_vit": ["cls"], "hf_deit": ["cls", "dist"],
          "hf_dinov2_reg": ["cls", "reg0", "reg1", "reg2", "reg3"], "timm_vit": ["cls"],
          "timm_vit_reg": ["cls", "reg0", "reg1", "reg2", "reg3"], "timm_deit_distilled": ["cls", "dist"],
          "torchvision_vit": ["cls"]}


def _pixels(model, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *model.preprocess.size, generator=generator)


def _run(model, pixels):
    return model.encode_image(pixels) if model.family == "clip" else model.forward(pixels)


def _vit(model):
    return model.visual if model.family == "clip" else model


# -- eager references, each computed with the backend's own attention code ------------------------------------------
def _mha_reference(blocks, ln1, attn, run, mask=None):
    """nn.MultiheadAttention with need_weights=True, average_attn_weights=False on each block's own input."""
    inputs, handles = {}, []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])))
    try:
        with torch.no_grad():
            run()
            patterns = []
            for i in range(len(blocks)):
                x = ln1[i](inputs[i])
                patterns.append(attn[i](x, x, x, need_weights=True, average_attn_weights=False, attn_mask=mask)[1])
    finally:
        for h in handles:
            h.remove()
    return patterns


def _hf_reference(path, kind, pixels=None, tokens=None):
    """transformers with attn_implementation='eager' and output_attentions=True."""
    import transformers

    if kind == "clip":
        model = transformers.CLIPModel.from_pretrained(path, attn_implementation="eager").eval()
        with torch.no_grad():
            if tokens is not None:
                return list(model.text_model(input_ids=tokens, output_attentions=True).attentions)
            return list(model.vision_model(pixel_values=pixels, output_attentions=True).attentions)
    auto = transformers.AutoModel if kind == "dinov2_reg" else transformers.AutoModelForImageClassification
    model = auto.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return list(model(pixel_values=pixels, output_attentions=True).attentions)


def _timm_reference(path, pixels):
    """timm with fused attention off: the softmax pattern is the input of attn_drop."""
    import timm

    model = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    patterns, handles = {}, []
    for i, block in enumerate(model.blocks):
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(
            lambda m, a, out, i=i: patterns.__setitem__(i, out)))
    with torch.no_grad():
        model(pixels)
    for h in handles:
        h.remove()
    return [patterns[i] for i in range(len(model.blocks))]


def _reference_patterns(name, path, model, pixels):
    native = model.module
    if name == "open_clip_vit":
        visual = native.visual
        blocks = list(visual.transformer.resblocks)
        return _mha_reference(blocks, [b.ln_1 for b in blocks], [b.attn for b in blocks], lambda: visual(pixels))
    if name == "torchvision_vit":
        blocks = list(native.encoder.layers)
        return _mha_reference(blocks, [b.ln_1 for b in blocks], [b.self_attention for b in blocks],
                              lambda: native(pixels))
    if name.startswith("timm"):
        return _timm_reference(path, pixels)
    kind = {"hf_clip": "clip", "hf_dinov2_reg": "dinov2_reg"}.get(name, "classifier")
    return _hf_reference(path, kind, pixels=pixels)


@pytest.mark.parametrize("name", VIT_LIKE)
def test_image_attention_equals_eager_reference(name, tiny_dirs, tiny_ids):
    model = load_model(tiny_ids[name])
    pixels = _pixels(model)
    with model.capture("blocks.*.attn.pattern") as cache:
        _run(model, pixels)
    reference = _reference_patterns(name, tiny_dirs[name], model, pixels)
    vit = _vit(model)
    assert len(reference) == vit.num_layers == len(cache.keys())
    for i, expected in enumerate(reference):
        got = cache[f"blocks.{i}.attn.pattern"]
        assert got.shape == expected.shape == (pixels.shape[0], vit.num_heads, got.shape[-1], got.shape[-1])
        torch.testing.assert_close(got, expected.float(), atol=ATOL, rtol=0)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["open_clip_vit", "hf_clip"])
def test_text_attention_is_causal_and_equals_eager_reference(name, tiny_dirs, tiny_ids):
    model = load_model(tiny_ids[name])
    tokens = model.tokenize(["a red circle", "a very small blue star on the left"])
    with model.capture("text.blocks.*.attn.pattern") as cache:
        model.encode_text(tokens)
    if name == "open_clip_vit":
        native = model.module
        blocks = list(native.transformer.resblocks)
        reference = _mha_reference(blocks, [b.ln_1 for b in blocks], [b.attn for b in blocks],
                                   lambda: native.encode_text(tokens), mask=native.attn_mask)
    else:
        reference = _hf_reference(tiny_dirs[name], "clip", tokens=tokens)
    for i, expected in enumerate(reference):
        got = cache[f"text.blocks.{i}.attn.pattern"]
        torch.testing.assert_close(got, expected.float(), atol=ATOL, rtol=0)
        assert torch.all(got.triu(1) == 0), "a text token attends to a later token"


@pytest.mark.parametrize("name", VIT_LIKE)
def test_prefix_tokens_grid_and_shapes(name, tiny_ids):
    model = load_model(tiny_ids[name])
    vit = _vit(model)
    assert vit.prefix_tokens == PREFIX[name]
    grid = vit.grid()
    assert grid == (4, 4)  # 32 px / patch 8, read from the model, not assumed
    pixels = _pixels(model, batch=2)
    with model.capture(["patch_embed", "blocks.0.resid_pre", "blocks.*.attn.q", "blocks.1.resid_post"]) as cache:
        _run(model, pixels)
    tokens = grid[0] * grid[1] + len(PREFIX[name])
    width = cache["blocks.0.resid_pre"].shape[-1]
    assert cache["patch_embed"].shape == (2, grid[0] * grid[1], width)
    assert cache["blocks.0.resid_pre"].shape == (2, tokens, width)
    assert cache["blocks.1.resid_post"].shape == (2, tokens, width)
    assert cache["blocks.0.attn.q"].shape == (2, vit.num_heads, tokens, width // vit.num_heads)


def _output_from_last_resid(name, model, resid):
    """Each backend's own head applied to the captured last residual stream."""
    native = model.module
    if name == "open_clip_vit":
        return native.visual.ln_post(resid[:, 0]) @ native.visual.proj
    if name == "hf_clip":
        return native.visual_projection(native.vision_model.post_layernorm(resid[:, 0]))
    if name in ("hf_vit",):
        return native.classifier(native.vit.layernorm(resid)[:, 0])
    if name == "hf_deit":
        hidden = native.deit.layernorm(resid)
        return (native.cls_classifier(hidden[:, 0]) + native.distillation_classifier(hidden[:, 1])) / 2
    if name == "hf_dinov2_reg":  # a feature extractor's output is its pooled features: the normed CLS token
        return native.layernorm(resid)[:, 0]
    if name.startswith("timm"):
        return native.forward_head(native.norm(resid))
    if name == "torchvision_vit":
        return native.heads(native.encoder.ln(resid)[:, 0])
    raise AssertionError(name)


@pytest.mark.parametrize("name", VIT_LIKE)
def test_last_resid_post_reproduces_the_models_output(name, tiny_ids):
    model = load_model(tiny_ids[name])
    pixels = _pixels(model)
    last = _vit(model).num_layers - 1
    with model.capture(f"blocks.{last}.resid_post") as cache:
        output = _run(model, pixels)
    with torch.no_grad():
        rebuilt = _output_from_last_resid(name, model, cache[f"blocks.{last}.resid_post"])
    torch.testing.assert_close(rebuilt, output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["hf_resnet", "hf_convnext", "timm_resnet", "torchvision_resnet",
                                  "torchvision_convnext", "open_clip_resnet"])
def test_cnn_stages_equal_native_intermediates_and_logits(name, tiny_ids):
    model = load_model(tiny_ids[name])
    cnn = model.visual if model.family == "clip" else model
    pixels = _pixels(model, batch=2)
    native_outputs, handles = {}, []
    for i, stage in enumerate(cnn.layout.stages):
        handles.append(stage.register_forward_hook(lambda m, a, out, i=i: native_outputs.__setitem__(i, out)))
    head = "image_embed" if model.family == "clip" else "logits"
    with model.capture(["stages.*", head]) as cache:
        output = _run(model, pixels)
    for h in handles:
        h.remove()
    assert cnn.num_stages >= 3
    for i in range(cnn.num_stages):
        assert torch.equal(cache[f"stages.{i}"], native_outputs[i])
    torch.testing.assert_close(cache[head], output)
    resolutions = [cache[f"stages.{i}"].shape[-1] for i in range(cnn.num_stages)]
    assert resolutions == sorted(resolutions, reverse=True) and len(set(resolutions)) == len(resolutions)


def _hook_counts(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


@pytest.mark.parametrize("name", VIT_LIKE + ["hf_resnet", "open_clip_resnet"])
def test_no_hook_survives_a_capture(name, tiny_ids):
    model = load_model(tiny_ids[name])
    before = _hook_counts(model.module)
    with model.capture(model.hook_names(), grad=True) as cache:
        out = _run(model, _pixels(model, batch=1).requires_grad_())
        out.float().sum().backward()
    assert len(cache.keys()) > 0
    assert _hook_counts(model.module) == before


def test_no_hook_survives_an_exception_inside_a_block(tiny_ids):
    model = load_model(tiny_ids["hf_vit"])
    before = _hook_counts(model.module)

    def explode(module, args):
        raise RuntimeError("boom inside block 1")
    trap = model.layout.blocks[1].register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with model.capture(["blocks.*.attn.pattern", "blocks.*.resid_post"]):
                model.forward(_pixels(model, batch=1))
    finally:
        trap.remove()
    assert _hook_counts(model.module) == before


def test_glob_selection_and_unknown_names(tiny_ids):
    model = load_model(tiny_ids["hf_vit"])
    with model.capture(["blocks.*.resid_post", "blocks.1.attn.*"]) as cache:
        model.forward(_pixels(model, batch=1))
    assert cache.keys() == ["blocks.0.resid_post", "blocks.1.resid_post", "blocks.1.attn.q", "blocks.1.attn.k",
                            "blocks.1.attn.v", "blocks.1.attn.scores", "blocks.1.attn.pattern"]
    with pytest.raises(CaptureError, match="blocks.0.attn.pattern"):
        cache["blocks.0.attn.pattern"]
    with pytest.raises(CaptureError, match="Close names"):
        model.capture("blocks.9.resid_post")
    with pytest.raises(CaptureError, match="No submodule"):
        model.capture("module.not.a.layer")


def test_any_submodule_by_path(tiny_ids):
    model = load_model(tiny_ids["torchvision_resnet"])
    convs = model.conv_layers()
    assert "layer1.0.conv1" in convs
    native = {}
    handle = model.module.layer1[0].conv1.register_forward_hook(lambda m, a, out: native.setdefault("x", out))
    with model.capture("module.layer1.0.conv1") as cache:
        model.forward(_pixels(model, batch=1))
    handle.remove()
    assert torch.equal(cache["module.layer1.0.conv1"], native["x"])


@pytest.mark.parametrize("name", ["hf_vit", "open_clip_vit", "timm_vit", "torchvision_vit"])
def test_pattern_gradient_equals_autograd_through_an_eager_pattern(name, tiny_dirs, tiny_ids):
    """dL/dA from the fast path equals autograd on a materialised eager pattern (HF eager attentions)."""
    model = load_model(tiny_ids[name])
    vit = _vit(model)
    pixels = _pixels(model, batch=2)
    last = vit.num_layers - 1
    with model.capture([f"blocks.{last}.attn.pattern", f"blocks.{last}.ln1", "final_norm"], grad=True) as cache:
        _run(model, pixels)
        cache["final_norm"][:, 0].pow(2).sum().backward()  # (torchvision zero-initialises its head)
    fast = cache.grad(f"blocks.{last}.attn.pattern")
    assert cache.grad(f"blocks.{last}.ln1").shape == cache[f"blocks.{last}.ln1"].shape

    # reference: rerun the attention module's math eagerly with A as a leaf that requires grad
    site = vit.sites[f"blocks.{last}.attn"]
    x = cache.attention_inputs[f"blocks.{last}.attn"].detach()
    with torch.enable_grad():
        q, k, v = site.qkv(x)
        pattern = site.pattern(q, k).detach().requires_grad_()
        heads = (pattern @ v.float()).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        grad_out = cache.attention_output_grads[f"blocks.{last}.attn"]
        grad_out = site.grad_output_batch_first(grad_out)
        weight, _ = site.output_projection()
        (heads @ weight.float().T * grad_out.float()).sum().backward()
    torch.testing.assert_close(fast, pattern.grad, atol=1e-6, rtol=1e-4)
    assert fast.abs().sum() > 0


def test_hf_pattern_gradient_matches_eager_attentions_grad(tiny_dirs, tiny_ids):
    """End to end against transformers' own eager attention probabilities with retain_grad."""
    import transformers

    model = load_model(tiny_ids["hf_vit"])
    pixels = _pixels(model, batch=2)
    with model.capture("blocks.*.attn.pattern", grad=True) as cache:
        logits = model.forward(pixels)
        logits[:, 2].sum().backward()
    eager = transformers.AutoModelForImageClassification.from_pretrained(
        tiny_dirs["hf_vit"], attn_implementation="eager").eval()
    out = eager(pixel_values=pixels, output_attentions=True)
    for attention in out.attentions:
        attention.retain_grad()
    out.logits[:, 2].sum().backward()
    for i, attention in enumerate(out.attentions):
        torch.testing.assert_close(cache.grad(f"blocks.{i}.attn.pattern"), attention.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["hf_vit", "hf_clip", "timm_vit_reg"])
def test_recorded_projections_equal_recomputation_from_the_input(name, tiny_ids):
    """Where the model computes Q/K/V in modules, capture reuses them; they equal a recomputation."""
    model = load_model(tiny_ids[name])
    with model.capture(["blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v"]) as cache:
        _run(model, _pixels(model))
    assert cache.attention_projections["blocks.1.attn"]
    site = model.sites["blocks.1.attn"]
    q, k, v = site.qkv(cache.attention_inputs["blocks.1.attn"])
    torch.testing.assert_close(cache["blocks.1.attn.q"], q)
    torch.testing.assert_close(cache["blocks.1.attn.k"], k)
    torch.testing.assert_close(cache["blocks.1.attn.v"], v)


@pytest.mark.parametrize("name", ["open_clip_vit", "hf_clip"])
def test_projecting_the_cls_token_reproduces_the_image_embedding(name, tiny_ids):
    model = load_model(tiny_ids[name])
    pixels = _pixels(model)
    last = model.visual.num_layers - 1
    with model.capture(f"blocks.{last}.resid_post") as cache:
        embedding = model.encode_image(pixels)
    projected = model.visual.project_tokens(cache[f"blocks.{last}.resid_post"][:, :1])[:, 0]
    torch.testing.assert_close(projected, embedding, atol=1e-5, rtol=1e-5)
