"""viz.patches, viz.residual and viz.patch_figures against brute-force references written out loop by loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from viz.patch_figures import (
    attention_correlation_figure,
    filters_figure,
    mosaic,
    patch_pca_figure,
    position_similarity_figure,
    residual_figure,
    token_similarity_figure,
)
from viz.patches import (
    filters_to_rgb_tiles,
    patch_embed_weight,
    patch_filter_components,
    patch_pca_rgb,
    position_similarity,
    resize_pos_table,
    row_column_similarity,
    sincos_2d_table,
    token_similarity,
)
from viz.residual import attention_map_correlation, residual_names, residual_norms


def _cosine_loop(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b)))


# -- filter PCA ----------------------------------------------------------------------------------------------------
def test_filter_components_match_svd_and_are_orthonormal():
    weight = torch.randn(40, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    components, explained = patch_filter_components(weight, k=28)
    assert components.shape == (28, 3, 4, 4) and explained.shape == (28,)
    flat = components.reshape(28, -1).astype(np.float64)
    np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-5)
    data = weight.numpy().reshape(40, -1).astype(np.float64)
    _, singular, vt = np.linalg.svd(data - data.mean(axis=0), full_matrices=False)
    for i in range(28):
        sign = np.sign(flat[i] @ vt[i])
        np.testing.assert_allclose(flat[i] * sign, vt[i], atol=1e-4)
    np.testing.assert_allclose(explained, (singular ** 2 / np.sum(singular ** 2))[:28], rtol=1e-5)
    assert np.all(np.diff(explained) <= 1e-12)


def test_filter_components_cap_k_and_tiles_span_0_255():
    components, explained = patch_filter_components(torch.randn(5, 3, 2, 2), k=28)
    assert components.shape == (5, 3, 2, 2) and len(explained) == 5
    tiles = filters_to_rgb_tiles(components)
    assert tiles.shape == (5, 2, 2, 3) and tiles.dtype == np.uint8
    for tile in tiles:
        assert tile.min() == 0 and tile.max() == 255
    assert filters_to_rgb_tiles(np.zeros((1, 3, 2, 2))).max() == 0  # a constant component does not divide by 0


def test_patch_embed_weight_finds_the_conv_inside_a_wrapper():
    conv = torch.nn.Conv2d(3, 8, 4, stride=4)
    wrapper = torch.nn.Sequential(torch.nn.Identity(), conv)
    assert patch_embed_weight(wrapper).shape == (8, 3, 4, 4)
    assert patch_embed_weight(conv) is not None
    with pytest.raises(ValueError, match="No patch convolution"):
        patch_embed_weight(torch.nn.Linear(2, 2))


# -- position similarity --------------------------------------------------------------------------------------------
def test_position_similarity_equals_loop_reference_and_drops_prefix_rows():
    grid = (3, 4)
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(2 + 12, 6, generator=generator)  # two prefix rows (CLS, distillation)
    got = position_similarity(table, grid, prefix_rows=2)
    assert got.shape == (3, 4, 3, 4)
    patches = table[2:]
    for r1 in range(3):
        for c1 in range(4):
            for r2 in range(3):
                for c2 in range(4):
                    want = _cosine_loop(patches[r1 * 4 + c1], patches[r2 * 4 + c2])
                    assert got[r1, c1, r2, c2].item() == pytest.approx(want, abs=1e-5)
    flat = got.reshape(12, 12)
    torch.testing.assert_close(flat.diagonal(), torch.ones(12))
    torch.testing.assert_close(flat, flat.T)


def test_position_similarity_refuses_a_wrong_grid():
    with pytest.raises(ValueError, match="patch rows"):
        position_similarity(torch.randn(17, 4), (3, 3), prefix_rows=1)


def test_sincos_table_is_nearer_for_neighbours_than_for_far_positions():
    grid = (8, 8)
    table = sincos_2d_table(64, grid)
    assert table.shape == (64, 64)
    sim = position_similarity(table, grid, prefix_rows=0)
    torch.testing.assert_close(sim.reshape(64, 64).diagonal(), torch.ones(64))
    neighbours, far = [], []
    for r in range(8):
        for c in range(8):
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= r + dr < 8 and 0 <= c + dc < 8:
                    neighbours.append(sim[r, c, r + dr, c + dc].item())
            far.append(sim[r, c, 7 - r if r < 4 else 0, 7 - c if c < 4 else 0].item())
    assert np.mean(neighbours) > np.mean(far) + 0.1
    assert sim[0, 0, 0, 1] > sim[0, 0, 0, 4] > sim[0, 0, 0, 7]


def test_row_column_similarity_equals_loop_reference():
    sim = torch.randn(3, 4, 3, 4, generator=torch.Generator().manual_seed(2))
    groups = {"same row": [], "same column": [], "neither": []}
    for r1 in range(3):
        for c1 in range(4):
            for r2 in range(3):
                for c2 in range(4):
                    if (r1, c1) == (r2, c2):
                        continue
                    key = "same row" if r1 == r2 else "same column" if c1 == c2 else "neither"
                    groups[key].append(float(sim[r1, c1, r2, c2]))
    result = row_column_similarity(sim)
    assert set(result) == set(groups)
    for key, values in groups.items():
        assert result[key] == pytest.approx(np.mean(values), abs=1e-6)
    assert math.isnan(row_column_similarity(torch.ones(1, 3, 1, 3))["same column"])  # one row: no column pairs


def test_interpolation_to_another_grid():
    table = torch.cat([torch.randn(1, 32), sincos_2d_table(32, (6, 6))])
    sim = position_similarity(table, (6, 6), prefix_rows=1, target_grid=(4, 9))
    assert sim.shape == (4, 9, 4, 9)
    torch.testing.assert_close(sim.reshape(36, 36).diagonal(), torch.ones(36))
    same = position_similarity(table, (6, 6), prefix_rows=1, target_grid=(6, 6))
    torch.testing.assert_close(same, position_similarity(table, (6, 6), prefix_rows=1))
    constant = resize_pos_table(torch.ones(16, 3) * 2.5, (4, 4), (7, 5))  # bicubic keeps a constant constant
    torch.testing.assert_close(constant, torch.full((35, 3), 2.5))


# -- token maps ---------------------------------------------------------------------------------------------------
def test_token_similarity_equals_loop_reference():
    tokens = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    got = token_similarity(tokens, query=3)
    want = torch.tensor([_cosine_loop(tokens[3], tokens[t]) for t in range(7)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got[3].item() == pytest.approx(1.0)


def test_patch_pca_rgb_shape_range_and_islands():
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(2, 16, generator=generator) * 10
    labels = torch.tensor([0] * 6 + [1] * 6)
    tokens = centres[labels] + 0.01 * torch.randn(12, 16, generator=generator)
    rgb = patch_pca_rgb(tokens, (3, 4))
    assert rgb.shape == (3, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_allclose(rgb.reshape(12, 3).min(0), 0, atol=1e-12)
    np.testing.assert_allclose(rgb.reshape(12, 3).max(0), 1, atol=1e-12)
    first = rgb.reshape(12, 3)[:, 0]  # the first component separates the two clusters
    assert abs(first[:6].mean() - first[6:].mean()) > 0.9
    with pytest.raises(ValueError, match="grid"):
        patch_pca_rgb(tokens, (5, 5))


# -- residual stream ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vit_cache(tiny_ids):
    from models import load_model

    model = load_model(tiny_ids["hf_vit"], device="cpu")
    names = residual_names(model.num_layers) + [f"blocks.{i}.attn.pattern" for i in range(model.num_layers)]
    with model.capture(names) as cache:
        model.forward(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)))
    return model, {name: cache[name] for name in names}


def test_residual_norms_equal_loops_on_a_real_capture(tiny_vit_cache):
    model, cache = tiny_vit_cache
    norms = residual_norms(cache, model.num_layers)
    assert set(norms) == {"resid_post", "attn_out", "mlp_out"}
    for quantity, values in norms.items():
        assert values.shape == (model.num_layers,)
        for i in range(model.num_layers):
            x = cache[f"blocks.{i}.{quantity}"].numpy().astype(np.float64)
            lengths = [np.sqrt(np.sum(x[b, t] ** 2)) for b in range(x.shape[0]) for t in range(x.shape[1])]
            assert values[i] == pytest.approx(np.mean(lengths), rel=1e-5)


def test_attention_map_correlation_equals_corrcoef(tiny_vit_cache):
    model, cache = tiny_vit_cache
    generator = torch.Generator().manual_seed(6)
    random_patterns = [torch.randn(2, 3, 5, 5, generator=generator).softmax(-1) for _ in range(4)]
    real_patterns = [cache[f"blocks.{i}.attn.pattern"] for i in range(model.num_layers)]
    for patterns in (random_patterns, real_patterns):
        corr = attention_map_correlation(patterns)
        flat = np.stack([p.numpy().astype(np.float64).mean(axis=1).ravel() for p in patterns])
        np.testing.assert_allclose(corr, np.corrcoef(flat), atol=1e-9)
        np.testing.assert_allclose(np.diag(corr), 1.0)
        np.testing.assert_allclose(corr, corr.T)


# -- figures ------------------------------------------------------------------------------------------------------
def test_mosaic_layout():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    out = mosaic(tiles, columns=3, gap=1)
    assert out.shape == (2 * 2 + 1, 3 * 3 + 2)
    np.testing.assert_array_equal(out[3:5, 4:7], tiles[4])
    assert np.isnan(out[2]).all() and np.isnan(out[:, 3]).all() and np.isnan(out[3:, 8:]).all()


def test_filters_figure_is_one_image_mosaic():
    components, explained = patch_filter_components(torch.randn(64, 3, 4, 4), k=28)
    fig = filters_figure(filters_to_rgb_tiles(components), explained)
    assert len(fig.data) == 1 and fig.data[0].type == "image"
    assert np.asarray(fig.data[0].z).shape == (4 * 4 + 3, 7 * 4 + 6, 3)
    title = fig.layout.title.text
    assert "28" in title and f"{explained.sum():.1%}" in title


def test_position_similarity_figure_is_one_heatmap_with_nan_gaps():
    sim = position_similarity(sincos_2d_table(32, (3, 5)), (3, 5), prefix_rows=0)
    fig = position_similarity_figure(sim)
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (3 * 3 + 2, 5 * 5 + 4)
    np.testing.assert_allclose(z[4:7, 6:11], sim[1, 1].numpy(), atol=1e-6)  # tile (1, 1)
    assert np.isnan(z[3]).all() and np.isnan(z[:, 5]).all()
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1 and fig.data[0].reversescale
    assert fig.data[0].colorscale[0][1] == "rgb(103,0,31)"  # RdBu's first colour (reversed at draw time)
    assert "3x5" in fig.layout.title.text


def test_token_similarity_figure_marks_the_query():
    fig = token_similarity_figure(torch.rand(4, 6), (2, 5))
    assert len(fig.data) == 1 and np.asarray(fig.data[0].z).shape == (4, 6)
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1
    shape = fig.layout.shapes[0]
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (4.5, 5.5, 1.5, 2.5)
    assert "row 2" in fig.layout.title.text and "col 5" in fig.layout.title.text


def test_patch_pca_residual_and_correlation_figures():
    fig = patch_pca_figure(np.random.default_rng(0).random((3, 4, 3)))
    assert len(fig.data) == 1 and fig.data[0].type == "image" and np.asarray(fig.data[0].z).shape == (3, 4, 3)
    norms = {"resid_post": np.array([1.0, 2, 3]), "attn_out": np.array([0.5, 0.4, 0.3]), "mlp_out": np.ones(3)}
    fig = residual_figure(norms)
    assert [t.name for t in fig.data] == ["resid_post", "attn_out", "mlp_out"]
    np.testing.assert_array_equal(fig.data[0].x, [0, 1, 2])
    assert fig.layout.xaxis.title.text == "block index"
    fig = attention_correlation_figure(np.eye(4))
    assert len(fig.data) == 1 and np.asarray(fig.data[0].z).shape == (4, 4)
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1 and "4 blocks" in fig.layout.title.text


# -- real weights ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini_clip_position_similarity():
    from models import load_model, shapes

    model = load_model("bundled:mini-clip", device="cpu")
    vit = model.visual
    pixels = model.pixels([e.image for e in shapes.make_dataset(1, 0)])
    with model.capture(["pos_embed"]) as cache:
        model.encode_image(pixels)
    return position_similarity(cache["pos_embed"], vit.grid(), vit.layout.pos_embed_prefix_rows)


def test_mini_clip_position_similarity_peaks_on_the_diagonal(mini_clip_position_similarity):
    sim = mini_clip_position_similarity
    gh, gw = sim.shape[:2]
    flat = sim.reshape(gh * gw, gh * gw)
    torch.testing.assert_close(flat.diagonal(), torch.ones(gh * gw))
    torch.testing.assert_close(flat, flat.T)
    assert torch.equal(flat.argmax(dim=1), torch.arange(gh * gw))
    off_diagonal = flat[~torch.eye(gh * gw, dtype=torch.bool)]
    print(f"mini-clip {gh}x{gw}: diagonal 1.000, max off-diagonal {off_diagonal.max():.3f}, "
          f"mean off-diagonal {off_diagonal.mean():.3f}")
    assert off_diagonal.max() < 0.99


def test_mini_clip_neighbours_more_similar_than_far_corner(mini_clip_position_similarity):
    """Locality: a position's 4-neighbours are more alike than the farthest corner. Baseline: a position table
    with no spatial structure (a random one), where both means are equal in expectation (measured: 0.006 against
    0.018); mini-clip's fixed 2-D sine-cosine table measures 0.98 against 0.74."""
    sim = mini_clip_position_similarity
    gh, gw = sim.shape[:2]
    neighbours, corners = [], []
    for r in range(gh):
        for c in range(gw):
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= r + dr < gh and 0 <= c + dc < gw:
                    neighbours.append(sim[r, c, r + dr, c + dc].item())
            corners.append(sim[r, c, gh - 1 if r < gh / 2 else 0, gw - 1 if c < gw / 2 else 0].item())
    print(f"mini-clip {gh}x{gw}: 4-neighbours mean {np.mean(neighbours):.3f}, "
          f"farthest corner mean {np.mean(corners):.3f}")
    assert np.mean(neighbours) - np.mean(corners) >= 0.1


def test_mini_clip_position_table_shows_rows_and_columns(mini_clip_position_similarity):
    """What a ViT's position table shows (ViT paper, Fig. 7 centre): positions sharing a row or a column are more
    alike than positions sharing neither. mini-clip's table is the fixed 2-D sine-cosine one, half row, half
    column, which holds this by construction of its dimensions."""
    result = row_column_similarity(mini_clip_position_similarity)
    print(f"mini-clip position similarity: {result}")
    assert min(result["same row"], result["same column"]) > result["neither"] + 0.05  # measured: +0.078 (random: 0)
