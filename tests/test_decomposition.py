"""The image-embedding decomposition: its terms sum to ``encode_image`` on mini-clip and on every CLIP row of the
coverage matrix (tiny configurations); each head's term equals a hand-written computation from the native weights;
towers it cannot decompose raise a precise NotDecomposableError; the score shares add up to the score; mean-ablating
the early layers moves zero-shot accuracy less than mean-ablating the last one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.adapters.decompose import NotDecomposableError, can_decompose, decompose_image
from models.backends import BACKENDS
from models.coverage import MATRIX
from models.registry import clear_cache, load_model
from models.world import scenes
from viz import decomposition as D
from viz.zero_shot import encode_texts

TOLERANCE = 1e-4
CLIP_ROWS = [row for row in MATRIX if row.family == "clip"]
# the readout (or tower) each CLIP row that cannot be decomposed has, as its error message names it
NOT_DECOMPOSABLE = {
    "open_clip:RN50": "not a plain ViT", "open_clip:convnext_base_w": "not a plain ViT",
    "open_clip:MobileCLIP-S1": "not a plain ViT", "open_clip:MobileCLIP2-S2": "not a plain ViT",
    "open_clip:PE-Core-B-16": "attention pool readout", "open_clip:ViT-B-16-SigLIP": "attention pool readout",
    "open_clip:ViT-B-16-SigLIP2": "attention pool readout", "open_clip:ViT-SO400M-14-SigLIP": "attention pool readout",
    "open_clip:coca_ViT-B-32": "attention pool readout", "hf:SiglipModel": "attention pool readout",
    "hf:Siglip2Model": "attention pool readout",
}


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip")


@pytest.fixture(scope="module")
def scene_pixels(clip):
    return clip.pixels([example.image for example in scenes.make_scenes(6, seed=4242)])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def test_terms_sum_to_the_image_embedding_on_mini_clip(clip, scene_pixels):
    dec = decompose_image(clip, scene_pixels, tokens=True)
    assert relative(dec.total(), clip.encode_image(scene_pixels).float()) <= TOLERANCE
    assert dec.heads.shape == (6, 4, 4, 128) and dec.head_tokens.shape == (6, 4, 4, 65, 128)
    torch.testing.assert_close(dec.head_tokens.sum(dim=3), dec.heads, atol=1e-5, rtol=1e-4)
    # no single kind of term carries the embedding alone: the check above is not passed by one big term
    assert relative(dec.embeddings + dec.norm_bias, dec.embedding) > 0.5


def test_each_head_term_equals_a_hand_written_computation_from_the_native_weights(clip, scene_pixels):
    visual = clip.module.visual
    with clip.capture(["blocks.*.ln1", "blocks.3.resid_post"]) as cache:
        clip.encode_image(scene_pixels)
    cls = cache["blocks.3.resid_post"][:, 0]
    sigma = (cls.var(dim=-1, unbiased=False, keepdim=True) + visual.ln_post.eps).sqrt()
    dec = decompose_image(clip, scene_pixels)
    for layer in (0, 3):
        attn = visual.transformer.resblocks[layer].attn
        x = cache[f"blocks.{layer}.ln1"]
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        heads, width = attn.num_heads, x.shape[-1] // attn.num_heads
        for head in range(heads):
            part = slice(head * width, (head + 1) * width)
            weights = (q[:, :1, part] @ k[:, :, part].transpose(1, 2) / width ** 0.5).softmax(dim=-1)   # cls row
            written = (weights @ v[:, :, part])[:, 0] @ attn.out_proj.weight[:, part].T
            expected = (written - written.mean(dim=-1, keepdim=True)) / sigma * visual.ln_post.weight @ visual.proj
            torch.testing.assert_close(dec.heads[:, layer, head], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("row", CLIP_ROWS, ids=lambda row: row.label)
def test_every_clip_of_the_coverage_matrix_decomposes_or_names_why_not(row, tmp_path):
    torch.manual_seed(0)
    model = load_model(BACKENDS[row.backend].save_random(row.arch, tmp_path / "model", True))
    try:
        pixels = torch.randn(2, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(3))
        if row.label in NOT_DECOMPOSABLE:
            assert not can_decompose(model)
            with pytest.raises(NotDecomposableError, match=NOT_DECOMPOSABLE[row.label]):
                decompose_image(model, pixels)
        else:
            assert can_decompose(model)
            dec = decompose_image(model, pixels)
            assert relative(dec.total(), model.encode_image(pixels).float()) <= TOLERANCE
    finally:
        clear_cache()


def test_models_without_a_text_tower_are_refused(tmp_path):
    import tiny_models

    model = load_model(f"hf:{tiny_models.hf_vit(tmp_path / 'vit', 'vit')}")
    assert not can_decompose(model)
    with pytest.raises(NotDecomposableError, match="no text tower"):
        decompose_image(model, torch.zeros(1, 3, *model.preprocess.size))


def test_score_shares_add_up_to_the_score_and_per_patch_shares_to_the_head(clip, scene_pixels):
    dec = decompose_image(clip, scene_pixels[:1], tokens=True)
    text = clip.encode_text(["a red circle"])[0]
    shares = D.score_shares(dec, text, clip.logit_scale)
    expected = float(clip.logits(dec.embedding, text[None])[0, 0])
    assert shares.score == pytest.approx(expected, rel=1e-5)
    assert shares.total() == pytest.approx(shares.score, rel=1e-4, abs=1e-5)
    per_token = D.head_token_shares(dec, text, clip.logit_scale, 3, 1)
    assert per_token.shape == (65,) and per_token.sum() == pytest.approx(shares.heads[3, 1], rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="No head 9.0"):
        D.head_token_shares(dec, text, clip.logit_scale, 9, 0)


def test_mean_ablation_matches_a_brute_force_sum_and_early_layers_matter_less_than_the_last(clip):
    world = D.world_set(clip, n=72)
    dec = world.decomposition
    ablated = D.mean_ablated(dec, attention_layers=[1], mlp_layers=[0])
    attention = dec.heads[:, 1].sum(dim=1) + dec.attn_bias[:, 1]
    brute = (dec.embeddings + dec.norm_bias + dec.attention().sum(dim=1) - attention + attention.mean(dim=0)
             + dec.mlps[:, 1:].sum(dim=1) + dec.mlps[:, 0].mean(dim=0))
    torch.testing.assert_close(ablated, brute, atol=1e-4, rtol=1e-4)
    table = D.ablation_table(world)
    assert table.up_to[0] == table.clean and table.clean > 0.6            # chance is 1/36
    # the paper's claim, on mini-clip: the first layer's attention barely matters, the last one's does
    assert table.clean - table.layer_alone[0] < 0.05
    assert table.clean - table.layer_alone[-1] > 0.1
    assert table.up_to[-1] < 0.35 < table.up_to[1]
    text = encode_texts(clip, world.prompts)
    assert D.accuracy(dec.embedding, text, world.labels) == table.clean
    assert "depth d" in table.text() and len(table.rows()) == 5


def test_label_variance_share_against_a_hand_computed_case():
    outputs = torch.tensor([[1.0, 0.0], [3.0, 0.0], [10.0, 2.0], [12.0, 2.0]])
    # group means (2, 0) and (11, 2), grand mean (6.5, 1): between = 2 * (4.5^2 + 1) * 2; total adds 4 * 1
    between, total = 2 * 2 * (4.5 ** 2 + 1), 2 * 2 * (4.5 ** 2 + 1) + 4.0
    assert D.label_variance_share(outputs, ["a", "a", "b", "b"]) == pytest.approx(between / total)
    assert D.label_variance_share(outputs, ["a", "b", "c", "d"]) == pytest.approx(1.0)
    assert np.isclose(D.label_variance_share(torch.ones(3, 2), [0, 1, 1]), 0.0)


def test_head_names_are_parsed_and_bad_ones_refused():
    from viz.decomposition_views import parse_heads

    assert parse_heads("3.1, 2.2\n-1.0", 4, 4) == [(3, 1), (2, 2), (3, 0)]
    with pytest.raises(ValueError, match="layer.head"):
        parse_heads("three", 4, 4)
    with pytest.raises(ValueError, match="No head 4.0"):
        parse_heads("4.0", 4, 4)
    with pytest.raises(ValueError, match="No head 1.4"):
        parse_heads("1.4", 4, 4)


def test_layer_scales_are_part_of_each_term(tmp_path):
    """An open_clip ViT with LayerScale after attention and MLP (per-channel gammas, set at random here)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model_cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16,
                                                 "patch_size": 8, "ls_init_value": 0.1},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1}}
    native = open_clip.model.CLIP(**model_cfg)
    with torch.no_grad():
        for block in native.visual.transformer.resblocks:
            block.ls_1.gamma.uniform_(0.2, 2.0)
            block.ls_2.gamma.uniform_(0.2, 2.0)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                                 "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    model = load_model(f"open_clip:local-dir:{tmp_path}")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    dec = decompose_image(model, pixels)
    assert relative(dec.total(), model.encode_image(pixels).float()) <= TOLERANCE
    clear_cache()
