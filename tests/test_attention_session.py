"""AttentionSession: one capture serves every view; each view equals a direct computation."""
from __future__ import annotations

import math

import pytest
import torch

from models import load_model, shapes
from viz.attention_session import AttentionSession


@pytest.fixture(scope="module")
def session():
    model = load_model("bundled:mini-clip", device="cpu")
    return AttentionSession(model, shapes.make_dataset(1, seed=5)[0].image)


def test_switching_views_never_runs_the_model_again(session):
    calls = []
    handle = session.vit.layout.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        for layer in range(session.vit.num_layers):
            for head in [*range(session.vit.num_heads), "mean", "max", "min"]:
                session.query_map(layer, head, session.token_of_patch(3, 4))
            session.all_heads(layer, 0)
            session.steps(layer, 1, 0, temperature=0.5)
        session.rollout_map("max", 0.5)
    finally:
        handle.remove()
    assert calls == []


def test_query_maps_are_rows_of_the_pattern(session):
    query = session.token_of_patch(2, 5)
    assert query == 1 + 2 * 8 + 5
    pattern = session.patterns[1]
    torch.testing.assert_close(session.query_map(1, 2, query), pattern[2, query, 1:].reshape(8, 8))
    torch.testing.assert_close(session.query_map(1, "mean", query), pattern[:, query, 1:].mean(0).reshape(8, 8))
    assert session.all_heads(1, query).shape == (session.vit.num_heads, 8, 8)
    assert set(session.prefix_attention(1, 0, query)) == {"cls"}


def test_click_coordinates_pick_the_patch_under_the_pointer(session):
    assert session.token_at_pixel(0, 0, 64, 64) == 1
    assert session.token_at_pixel(63.9, 63.9, 64, 64) == session.num_tokens - 1
    assert session.token_at_pixel(300, 20, 400, 400) == session.token_of_patch(0, 6)
    with pytest.raises(ValueError, match="outside"):
        session.token_of_patch(8, 0)


def test_steps_reproduce_the_captured_pattern_and_saturate_with_temperature(session):
    for layer, head, query in [(0, 0, 0), (3, 2, 17)]:
        steps = session.steps(layer, head, query)
        torch.testing.assert_close(steps.weights, session.patterns[layer][head, query], atol=1e-5, rtol=0)
        assert steps.scale == pytest.approx(1 / math.sqrt(steps.q.shape[0]))
        torch.testing.assert_close(steps.output, steps.weights @ steps.values)
    sharp, flat = session.steps(3, 2, 17, temperature=1e-3), session.steps(3, 2, 17, temperature=1e3)
    assert sharp.weights.max() > 0.99 and sharp.entropy < 0.05
    assert flat.entropy == pytest.approx(math.log(session.num_tokens), abs=0.01)


def test_relevancy_is_cached_and_prompt_dependent(session):
    red = session.relevancy("a red star")
    assert session.relevancy("a red star") is red
    assert red.shape == (8, 8)
    with pytest.raises(ValueError, match="needs a CLIP"):
        AttentionSession(load_model("bundled:mini-vit", device="cpu"),
                         shapes.make_dataset(1, seed=5)[0].image).relevancy("a red star")


def test_patch_zero_shot_equals_the_models_own_projection_of_patch_tokens(session):
    prompts = ["a red star", "a blue circle", "a green square"]
    sims = session.patch_zero_shot(prompts)
    assert sims.shape == (8, 8, 3)
    native = session.model.module  # open_clip: ln_post then @ proj, exactly as its pooled path
    tokens = session.last_tokens[0, 1:]
    with torch.no_grad():
        projected = native.visual.ln_post(tokens) @ native.visual.proj
        text = native.encode_text(session.model.tokenize(prompts))
    expected = torch.nn.functional.normalize(projected, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    torch.testing.assert_close(sims, expected.reshape(8, 8, 3), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least one prompt"):
        session.patch_zero_shot([])


def test_classifier_relevancy_for_a_class_on_mini_vit():
    model = load_model("bundled:mini-vit", device="cpu")
    example = shapes.make_dataset(1, seed=8, two_objects_prob=0.0)[0]
    session = AttentionSession(model, example.image)
    heat = session.relevancy(model.class_names.index(example.label))
    from models.world.bundled_eval import mask_on_grid
    cover = torch.from_numpy(mask_on_grid(example.mask, session.grid))
    assert float((heat * cover).sum() / heat.sum()) > float(cover.mean())


def test_clicks_on_the_source_image_map_through_resize_and_centre_crop():
    from PIL import Image

    model = load_model("bundled:mini-clip", device="cpu")
    wide = Image.new("RGB", (128, 64))          # resized to 128x64 -> 64: crop keeps x in [32, 96)
    session = AttentionSession(model, wide)
    assert session.token_at_source_pixel(32, 0) == session.token_of_patch(0, 0)
    assert session.token_at_source_pixel(95, 63) == session.token_of_patch(7, 7)
    assert session.token_at_source_pixel(64 + 4, 32) == session.token_of_patch(4, 4)
    with pytest.raises(ValueError, match="outside the centre crop"):
        session.token_at_source_pixel(10, 10)


def test_non_square_input_gives_a_non_square_grid_everywhere(tmp_path):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import tiny_models

    model = load_model(str(tiny_models.timm_model(tmp_path / "dyn", "vit_dynamic")))
    pixels = torch.randn(1, 3, 32, 48)
    session = AttentionSession(model, pixels)
    assert session.grid == (4, 6) and session.num_tokens == 1 + 24
    assert session.query_map(1, "mean", session.token_of_patch(3, 5)).shape == (4, 6)
    assert session.rollout_map().shape == (4, 6) and session.relevancy(0).shape == (4, 6)
    from viz.patches import patch_pca_rgb
    tokens = session.stream["blocks.1.resid_post"][0, 1:]
    assert patch_pca_rgb(tokens, session.grid).shape == (4, 6, 3)


@pytest.mark.parametrize("name", ["open_clip_vit", "hf_clip", "hf_vit", "hf_deit", "hf_dinov2_reg", "timm_vit",
                                  "timm_vit_reg", "timm_deit_distilled", "torchvision_vit"])
def test_every_vit_backend_serves_every_view(name, tiny_ids):
    from PIL import Image

    from viz.patches import position_similarity

    model = load_model(tiny_ids[name])
    session = AttentionSession(model, Image.new("RGB", (40, 32), (200, 30, 30)))
    grid = session.grid
    assert grid == (4, 4) and session.num_tokens == 16 + session.vit.num_prefix_tokens
    query = session.token_of_patch(2, 3)
    assert session.query_map(1, "max", query).shape == grid
    assert session.all_heads(0, query).shape == (session.vit.num_heads, *grid)
    torch.testing.assert_close(session.steps(1, 0, query).weights, session.patterns[1][0, query], atol=1e-5, rtol=0)
    assert session.rollout_map("mean", 0.3).shape == grid
    if model.family == "clip":
        assert session.relevancy("a red star").shape == grid
        assert session.patch_zero_shot(["a red star", "a dog"]).shape == (*grid, 2)
    elif session.vit.class_names:
        assert session.relevancy(0).shape == grid
    if session.pos_table is not None:
        rows = session.pos_table.shape[0] - session.vit.layout.pos_embed_prefix_rows
        assert rows == 16
        sim = position_similarity(session.pos_table, grid, session.vit.layout.pos_embed_prefix_rows)
        assert sim.shape == (*grid, *grid)
        if session.pos_table.abs().sum() > 0:  # transformers' DeiT initialises its table to zeros
            torch.testing.assert_close(torch.diagonal(sim.reshape(16, 16)), torch.ones(16), atol=1e-5, rtol=0)
