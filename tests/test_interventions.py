"""Ablation and activation patching (models/adapters/interventions.py) against brute force: a hand-written block
forward with one head removed, the mean over a reference set computed by hand, image B's activations patched into
image A's forward; outside every context the model is bit-identical to one that was never touched."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.adapters.interventions import InterventionError
from models.errors import CaptureError
from models.registry import clear_cache, load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402

TOLERANCE = 1e-5


def _pixels(model, count: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, *model.preprocess.size, generator=generator)


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip")


@pytest.fixture(scope="module")
def vit():
    return load_model("bundled:mini-vit")


@pytest.fixture(scope="module")
def cnn():
    return load_model("bundled:mini-cnn")


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory):
    path = tiny_models.timm_model(tmp_path_factory.mktemp("timm_vit"), "vit")
    return load_model(f"timm:local-dir:{path}")


def _split(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, width = t.shape
    return t.reshape(batch, tokens, heads, width // heads).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, dim = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * dim)


def _attend(q, k, v, heads: int, removed: int | None, replacement: torch.Tensor | None = None) -> torch.Tensor:
    """concat_h(softmax(Q_h K_h^T / sqrt(d)) V_h) with head ``removed`` zeroed (or set to ``replacement``)."""
    q, k, v = _split(q, heads), _split(k, heads), _split(v, heads)
    mixed = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1) @ v
    if removed is not None:
        mixed[:, removed] = 0 if replacement is None else replacement
    return _merge(mixed)


def _open_clip_block(block, x: torch.Tensor, removed: int, replacement=None) -> torch.Tensor:
    """open_clip ResidualAttentionBlock (nn.MultiheadAttention inside), written out by hand."""
    attn = block.attn
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    out = F.linear(_attend(q, k, v, attn.num_heads, removed, replacement), attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _hf_vit_layer(layer, x: torch.Tensor, removed: int) -> torch.Tensor:
    """transformers ViTLayer (pre-norm, q/k/v/o projections), written out by hand."""
    attn = layer.attention
    y = layer.layernorm_before(x)
    out = attn.o_proj(_attend(attn.q_proj(y), attn.k_proj(y), attn.v_proj(y), attn.num_attention_heads, removed))
    x = x + out
    return x + layer.mlp(layer.layernorm_after(x))


def _timm_block(block, x: torch.Tensor, removed: int) -> torch.Tensor:
    """timm VisionTransformer Block (fused qkv, no q/k norm), written out by hand."""
    attn = block.attn
    q, k, v = attn.qkv(block.norm1(x)).chunk(3, dim=-1)
    x = x + block.ls1(attn.proj(_attend(q, k, v, attn.num_heads, removed)))
    return x + block.ls2(block.mlp(block.norm2(x)))


def _hf_clip_layer(layer, x: torch.Tensor, removed: int) -> torch.Tensor:
    """transformers CLIPEncoderLayer (q/k/v/out projections), written out by hand."""
    attn = layer.self_attn
    y = layer.layer_norm1(x)
    x = x + attn.out_proj(_attend(attn.q_proj(y), attn.k_proj(y), attn.v_proj(y), attn.num_heads, removed))
    return x + layer.mlp(layer.layer_norm2(x))


def _block_under_ablation(model, layer: int, name: str, pixels: torch.Tensor, **ablate) -> tuple:
    """(the block's input, its output) with ``name`` ablated: the block reads the clean input (earlier blocks are
    untouched), so the hand-written forward of that input must give the output."""
    with model.ablate([name], **ablate), model.capture([f"blocks.{layer}.resid_pre", f"blocks.{layer}.resid_post"]) \
            as cache:
        model.run_image(pixels)
    return cache[f"blocks.{layer}.resid_pre"], cache[f"blocks.{layer}.resid_post"]


@pytest.mark.parametrize("layer,head", [(0, 0), (2, 3)])
def test_mini_clip_head_zeroed_equals_a_hand_written_block(clip, layer, head):
    pixels = _pixels(clip)
    x, ablated = _block_under_ablation(clip, layer, f"blocks.{layer}.attn.head.{head}", pixels)
    block = clip.visual.layout.blocks[layer]
    with torch.no_grad():
        expected = _open_clip_block(block, x, head)
        clean = _open_clip_block(block, x, None)
    assert (ablated - expected).abs().max() < TOLERANCE
    assert (clean - expected).abs().max() > 100 * TOLERANCE   # the head mattered: the test can fail


def test_mini_clip_head_mean_ablated_equals_the_hand_computed_reference_mean(clip):
    layer, head, pixels, reference = 1, 2, _pixels(clip, 2), _pixels(clip, 5, seed=7)
    x, ablated = _block_under_ablation(clip, layer, f"blocks.{layer}.attn.head.{head}", pixels, mode="mean",
                                       reference=reference)
    block = clip.visual.layout.blocks[layer]
    with clip.capture([f"blocks.{layer}.resid_pre"]) as cache:
        clip.run_image(reference)
    with torch.no_grad():
        attn = block.attn
        q, k, v = F.linear(block.ln_1(cache[f"blocks.{layer}.resid_pre"]), attn.in_proj_weight,
                           attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (_split(t, attn.num_heads) for t in (q, k, v))
        mean = ((q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1) @ v)[:, head].mean(dim=0)
        expected = _open_clip_block(block, x, head, replacement=mean)
        zeroed = _open_clip_block(block, x, head)
    assert (ablated - expected).abs().max() < TOLERANCE
    assert (zeroed - expected).abs().max() > 100 * TOLERANCE   # the mean is not zero: a zero ablation fails this


def test_mini_vit_head_zeroed_equals_a_hand_written_hf_layer(vit):
    layer, head = 1, 2
    x, ablated = _block_under_ablation(vit, layer, f"blocks.{layer}.attn.head.{head}", _pixels(vit))
    native = vit.layout.blocks[layer]
    with torch.no_grad():
        expected, clean = _hf_vit_layer(native, x, head), _hf_vit_layer(native, x, None)
    assert (ablated - expected).abs().max() < TOLERANCE
    assert (clean - expected).abs().max() > 100 * TOLERANCE


def test_timm_head_zeroed_equals_a_hand_written_block(timm_vit):
    layer, head = 1, 1
    x, ablated = _block_under_ablation(timm_vit, layer, f"blocks.{layer}.attn.head.{head}", _pixels(timm_vit))
    native = timm_vit.layout.blocks[layer]
    with torch.no_grad():
        expected, clean = _timm_block(native, x, head), _timm_block(native, x, None)
    assert (ablated - expected).abs().max() < TOLERANCE
    assert (clean - expected).abs().max() > 100 * TOLERANCE


def test_hf_clip_head_zeroed_equals_a_hand_written_layer(tmp_path):
    model = load_model(f"hf:{tiny_models.hf_clip(tmp_path / 'hf_clip')}")
    layer, head = 1, 3
    x, ablated = _block_under_ablation(model, layer, f"blocks.{layer}.attn.head.{head}", _pixels(model))
    native = model.visual.layout.blocks[layer]
    with torch.no_grad():
        expected, clean = _hf_clip_layer(native, x, head), _hf_clip_layer(native, x, None)
    assert (ablated - expected).abs().max() < TOLERANCE
    assert (clean - expected).abs().max() > 100 * TOLERANCE


def test_whole_attention_and_mlp_outputs_are_zeroed_and_mean_replaced(clip):
    pixels, reference = _pixels(clip), _pixels(clip, 4, seed=3)
    names = ["blocks.1.attn_out", "blocks.2.mlp_out"]
    with clip.capture(names) as clean_ref:
        clip.run_image(reference)
    with clip.ablate(names), clip.capture(names + ["blocks.2.resid_post", "blocks.2.resid_pre"]) as zeroed:
        clip.run_image(pixels)
    assert all(torch.count_nonzero(zeroed[n]) == 0 for n in names)
    with clip.capture(names) as outer, clip.ablate(names):   # a capture entered first reads the ablated tensors too
        clip.run_image(pixels)
    assert all(torch.count_nonzero(outer[n]) == 0 for n in names)
    # block 2 adds nothing from its MLP: output = input + attention out
    with clip.ablate(names, mode="mean", reference=reference), clip.capture(names) as meaned:
        clip.run_image(pixels)
    for name in names:
        expected = clean_ref[name].mean(dim=0, keepdim=True).expand_as(meaned[name])
        assert (meaned[name] - expected).abs().max() < TOLERANCE


def test_patching_every_token_of_a_layer_from_b_makes_a_give_bs_output(clip, vit, timm_vit):
    for model in (clip, vit, timm_vit):
        image_a, image_b = _pixels(model, 1, seed=1), _pixels(model, 1, seed=2)
        with model.capture(["blocks.1.resid_post"]) as source:
            out_b = model.run_image(image_b)
        out_a = model.run_image(image_a)
        with model.patch({"blocks.1.resid_post": source}):
            patched = model.run_image(image_a)
        assert (patched - out_b).abs().max() < TOLERANCE, model.model_id
        assert (out_a - out_b).abs().max() > 100 * TOLERANCE


def test_patching_chosen_tokens_replaces_only_those_tokens(clip):
    image_a, image_b = _pixels(clip, 1, seed=1), _pixels(clip, 1, seed=2)
    name = "blocks.2.resid_post"
    with clip.capture([name]) as source:
        clip.run_image(image_b)
    with clip.capture([name]) as clean:
        clip.run_image(image_a)
    tokens = [0, 5, 9]
    with clip.patch({name: source[name]}, tokens=tokens), clip.capture([name]) as patched:
        clip.run_image(image_a)
    others = [t for t in range(clean[name].shape[1]) if t not in tokens]
    assert torch.equal(patched[name][:, tokens], source[name][:, tokens])
    assert torch.equal(patched[name][:, others], clean[name][:, others])


def test_patching_cells_of_a_cnn_stage_map(cnn):
    image_a, image_b = _pixels(cnn, 1, seed=1), _pixels(cnn, 1, seed=2)
    with cnn.capture(["stages.1"]) as source:
        cnn.run_image(image_b)
    with cnn.capture(["stages.1"]) as clean:
        cnn.run_image(image_a)
    width = clean["stages.1"].shape[-1]
    with cnn.patch({"stages.1": source}, tokens=[0, width + 2]), cnn.capture(["stages.1"]) as patched:
        cnn.run_image(image_a)
    expected = clean["stages.1"].clone()
    for row, col in ((0, 0), (1, 2)):
        expected[:, :, row, col] = source["stages.1"][:, :, row, col]
    assert torch.equal(patched["stages.1"], expected)


def test_batched_row_masks_equal_one_ablation_at_a_time(clip):
    pixels = _pixels(clip, 1)
    heads = [f"blocks.{layer}.attn.head.{head}" for layer in (0, 3) for head in (0, 2)]
    rows = {name: [i == j for j in range(len(heads))] for i, name in enumerate(heads)}
    with clip.ablate(heads, rows=rows):
        batched = clip.run_image(pixels.expand(len(heads), -1, -1, -1))
    for i, name in enumerate(heads):
        with clip.ablate([name]):
            alone = clip.run_image(pixels)
        assert (batched[i] - alone[0]).abs().max() < TOLERANCE, name


def test_cnn_channel_and_stage_ablation(cnn):
    pixels = _pixels(cnn)
    with cnn.capture(["stages.2", "stages.1"]) as clean:
        out = cnn.run_image(pixels)
    with cnn.ablate(["stages.2.channel.17"]), cnn.capture(["stages.2"]) as ablated:
        changed = cnn.run_image(pixels)
    expected = clean["stages.2"].clone()
    expected[:, 17] = 0
    assert torch.equal(ablated["stages.2"], expected)
    assert not torch.equal(changed, out)
    with cnn.ablate(["stages.1"], mode="mean", reference=_pixels(cnn, 3, seed=4)), cnn.capture(["stages.1"]) as meaned:
        cnn.run_image(pixels)
    assert (meaned["stages.1"][0] - meaned["stages.1"][1]).abs().max() < TOLERANCE   # one mean map for every image
    with pytest.raises(InterventionError, match="channels"):
        with cnn.ablate(["stages.2.channel.100000"]):
            cnn.run_image(pixels)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.module.modules())


def test_outside_the_contexts_outputs_are_bit_identical_to_an_untouched_model(clip):
    pixels, reference = _pixels(clip), _pixels(clip, 3, seed=5)
    hooks = _hooks(clip)
    with clip.capture(["blocks.1.resid_post"]) as source:
        clip.run_image(pixels[:1])
    with clip.ablate(["blocks.*.attn.head.1", "blocks.2.mlp_out"], mode="mean", reference=reference):
        clip.run_image(pixels)
    with clip.patch({"blocks.1.resid_post": source}, tokens=[0]):
        clip.run_image(pixels)
    with pytest.raises(RuntimeError, match="boom"):
        with clip.ablate(["blocks.0.attn.head.0"]):
            clip.run_image(pixels)
            raise RuntimeError("boom")
    assert _hooks(clip) == hooks
    after = clip.run_image(pixels)
    clear_cache()
    untouched = load_model("bundled:mini-clip")
    assert untouched is not clip
    assert torch.equal(after, untouched.run_image(pixels))


def test_the_model_lock_is_held_inside_the_context(clip):
    got = []
    with clip.ablate(["blocks.0.mlp_out"]):
        thread = threading.Thread(target=lambda: got.append(clip.lock.acquire(blocking=False)))
        thread.start()
        thread.join()
    assert got == [False]
    assert clip.lock.acquire(blocking=False)
    clip.lock.release()


def test_precise_errors_for_bad_names_modes_and_sources(clip):
    with pytest.raises(CaptureError, match="Close names"):
        clip.ablate(["blocks.1.atn.head.1"])
    with pytest.raises(CaptureError, match="No hook matches 'blocks.1.attn.head.7'"):   # 4 heads: 0..3
        clip.ablate(["blocks.1.attn.head.7"])
    with pytest.raises(CaptureError, match="recomputed"):
        clip.ablate(["blocks.1.attn.pattern"])
    with pytest.raises(InterventionError, match="mode"):
        clip.ablate(["blocks.1.mlp_out"], mode="half")
    with pytest.raises(InterventionError, match="reference"):
        clip.ablate(["blocks.1.mlp_out"], mode="mean")
    with pytest.raises(InterventionError, match="does not hold"):
        clip.patch({"blocks.1.resid_post": {"blocks.2.resid_post": torch.zeros(1)}})
    with pytest.raises(InterventionError, match="out of range"):
        with clip.patch({"blocks.1.resid_post": torch.zeros(1, 65, 192)}, tokens=[70]):
            pass
    assert "blocks.3.attn.head.3" in clip.intervention_names()
    assert "text.blocks.0.attn.head.0" in clip.intervention_names()


# -- one row of the coverage matrix per attention implementation kind ------------------------------------------------
KIND_ROWS = ["torchvision:vit_b_16", "open_clip:coca_ViT-B-32", "open_clip:MobileCLIP-S1", "open_clip:EVA02-B-16",
             "open_clip:xlm-roberta-base-ViT-B-32", "hf:CLIPModel", "hf:SiglipModel", "hf:DINOv3ViTModel",
             "hf:SwinForImageClassification", "timm:vit_base_patch16_siglip_224", "timm:swin_tiny_patch4_window7_224",
             "torchvision:maxvit_t", "torchvision:swin_t"]


def _module_path(model, module) -> str:
    return "module." + next(name for name, m in model.module.named_modules() if m is module)


def _head_contribution(site, cache, name: str, head: int) -> torch.Tensor | None:
    """(mixed_h W_o,h^T): what removing head h takes from the output projection, from the site's recomputation;
    None where the output path is not linear in the heads (an inner norm)."""
    try:
        weight, head_scale = site.output_projection()
    except Exception:  # noqa: BLE001 - a kind with an inner norm or gate: no linear reference
        return None
    pattern, v = cache[f"{name}.pattern"], cache[f"{name}.v"]
    mixed = (pattern[..., -v.shape[-2]:].float() @ v.float())[:, head]
    if head_scale is not None:
        mixed = mixed * head_scale.detach().float().reshape(-1)[head]
    return mixed @ weight.detach().float()[:, head * site.head_dim:(head + 1) * site.head_dim].T


@pytest.mark.parametrize("label", KIND_ROWS)
def test_ablating_one_head_of_every_attention_kind_changes_its_output_by_that_head_and_exit_restores(label, tmp_path):
    from models.backends import BACKENDS

    backend, arch = label.split(":", 1)
    torch.manual_seed(0)
    _check_one_head_of_each_kind(load_model(BACKENDS[backend].save_random(arch, tmp_path / "row", True)), label)


def test_open_clip_own_attention_with_head_scales(tmp_path):
    """open_clip's own Attention (CustomResidualAttentionBlock, learned per-head scales): no matrix row uses it."""
    import json

    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16,
                                              "patch_size": 8, "block_type": "custom", "scale_heads": True},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1}}
    native = open_clip.model.CLIP(**config)
    for name, parameter in native.named_parameters():
        if name.endswith("head_scale"):   # away from their initial ones, so that a wrong scale shows
            parameter.data.uniform_(0.5, 1.5)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    model = load_model(f"open_clip:local-dir:{tmp_path}")
    assert model.sites["blocks.0.attn"].kind == "OpenClipAttentionSite"
    _check_one_head_of_each_kind(model, "open_clip custom blocks")


def _check_one_head_of_each_kind(model, label: str) -> None:
    """For one site of every attention kind of ``model``: removing its last head takes exactly that head's
    contribution from the output projection (where the path is linear), and the model is restored after."""
    pixels = _pixels(model)
    tokens = model.tokenize(["a red circle", "two blue squares"]) if model.has_text else None
    kinds = {}
    for name, site in model.sites.items():
        kinds.setdefault(site.kind, (name, site))
    hooks = _hooks(model)
    for kind, (name, site) in kinds.items():
        def run(name=name):
            return model.encode_text(tokens) if name.startswith("text.") else model.run_image(pixels)
        head = site.num_heads - 1
        output = _module_path(model, site.output_module())
        with model.capture([output, f"{name}.pattern", f"{name}.v"]) as clean:
            before = run()
        if kind == "TorchvisionWindowAttentionSite":
            with pytest.raises(InterventionError, match="cannot be removed"):
                with model.ablate([f"{name}.head.{head}"]):
                    pass
            continue
        with model.ablate([f"{name}.head.{head}"]), model.capture([output]) as ablated:
            run()
        removed = (site.grad_output_batch_first(clean[output]) - site.grad_output_batch_first(ablated[output])).float()
        assert removed.abs().max() > 0, f"{label} {kind}: ablating {name}.head.{head} changed nothing"
        expected = _head_contribution(site, clean, name, head)
        if expected is not None:
            assert (removed - expected).abs().max() < 1e-4 * max(1.0, float(expected.abs().max())), f"{label} {kind}"
        assert torch.equal(run(), before), f"{label} {kind}: not restored"
    assert _hooks(model) == hooks
    clear_cache()


# -- viz: the sweep, comparisons, patching along the depth, their figures and views ----------------------------------
@pytest.fixture(scope="module")
def scene():
    from models.world import scenes

    return scenes.make_scenes(1, 90_210, split="any")[0].image


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_batched_head_sweep_equals_one_head_per_forward(clip, scene, mode):
    from viz.interventions import head_importance, head_importance_one_at_a_time, reference_images

    reference = reference_images(4) if mode == "mean" else None
    batched = head_importance(clip, scene, mode=mode, reference=reference, batch=6)   # 16 heads: 3 forwards
    loop = head_importance_one_at_a_time(clip, scene, mode=mode, reference=reference)
    assert batched.sites == [f"blocks.{i}.attn" for i in range(4)] and batched.drop.shape == (4, 4)
    assert np.abs(batched.drop - loop.drop).max() < 1e-4
    assert batched.target == loop.target and np.abs(batched.drop).max() > 0.01


def test_head_sweep_targets_a_chosen_label_and_draws_a_layer_by_head_map(vit, scene):
    from viz.intervention_figures import head_importance_figure
    from viz.interventions import head_importance

    importance = head_importance(vit, scene, target="blue star")
    assert importance.target_label == "blue star" and importance.target == vit.class_names.index("blue star")
    figure = head_importance_figure(importance)
    heatmap = figure.data[0]
    assert heatmap.type == "heatmap" and np.asarray(heatmap.z).shape == (4, 4)
    assert list(heatmap.y) == [f"layer {i}" for i in range(4)] and heatmap.zmid == 0
    assert "“blue star”" in figure.layout.title.text and "zero-ablated alone" in figure.layout.title.text
    last = head_importance(vit, scene, target="blue star", layers=[-1])
    assert last.sites == ["blocks.3.attn"] and np.abs(last.drop[0] - importance.drop[3]).max() < 1e-4
    with pytest.raises(ValueError, match="not one of the labels"):
        head_importance(vit, scene, target="a unicorn")
    with pytest.raises(ValueError, match="out of range"):
        head_importance(vit, scene, layers=[4])


def test_compare_ablation_reports_both_forwards_and_draws_them(clip, scene):
    from viz.intervention_figures import comparison_figure
    from viz.interventions import compare_ablation

    comparison = compare_ablation(clip, scene, ["blocks.*.attn_out"], mode="zero")
    assert comparison.clean_probabilities.sum() == pytest.approx(1, abs=1e-6)
    assert comparison.changed_probabilities.sum() == pytest.approx(1, abs=1e-6)
    assert np.abs(comparison.delta).max() > 0.01
    figure = comparison_figure(comparison, k=3)
    assert [trace.name for trace in figure.data] == ["clean", "ablated"]
    assert len(figure.data[0].y) >= 3 and "zero-ablated blocks.*.attn_out" in figure.layout.title.text
    with pytest.raises(ValueError, match="Tick at least one"):
        compare_ablation(clip, scene, [])


def test_patching_every_token_at_any_layer_gives_the_source_prediction(clip, scene):
    from viz.intervention_views import source_scene
    from viz.interventions import Scorer, patch_every_layer

    source = source_scene()
    sweep = patch_every_layer(clip, scene, source)
    scorer = Scorer(clip)
    own = scorer.probabilities(scorer.logits(clip.pixels([source])))[0]
    assert sweep.own_label != sweep.source_label   # the test can fail: the two images disagree
    assert np.abs(sweep.source - own.max()).max() < 1e-4
    cls = patch_every_layer(clip, scene, source, tokens=[0])
    assert cls.source[-1] == pytest.approx(own.max(), abs=1e-4)   # the last block's CLS is all the readout reads
    assert cls.source[0] < sweep.source[0]   # the first block's CLS alone carries less of the source


def test_token_sets_cover_the_prefix_and_the_patches_under_a_box(clip):
    from viz.interventions import token_indices

    assert token_indices(clip, "all") is None and token_indices(clip, "prefix") == [0]
    quarter = token_indices(clip, "box", (0.0, 0.0, 0.5, 0.5))
    assert quarter == [1 + r * 8 + c for r in range(4) for c in range(4)]
    with pytest.raises(ValueError, match="no patch centre"):
        token_indices(clip, "box", (0.0, 0.0, 0.01, 0.01))


def test_the_views_run_on_clip_vit_and_cnn(clip, vit, cnn, scene):
    from viz.views import Subject, run_view, views_for

    for model in (clip, vit):
        subject = Subject(model, scene)
        assert {v.name for v in views_for(model, "Ablate & patch")} == {"poke.ablate", "poke.sweep", "poke.patch"}
        assert "part(s) zero-ablated" in run_view("poke.ablate", subject)["notice"]
        assert run_view("poke.sweep", subject)["importance"].data[0].type == "heatmap"
        patched = run_view("poke.patch", subject, tokens="prefix", layer=3)
        assert "CLS" in patched["notice"] and len(patched["bars"].data) == 3
    assert {v.name for v in views_for(cnn, "Ablate & patch")} == {"poke.ablate"}
    figures = run_view("poke.ablate", Subject(cnn, scene), names=["stages.2.channel.3", "stages.1"])
    assert "2 part(s) zero-ablated" in figures["notice"]
