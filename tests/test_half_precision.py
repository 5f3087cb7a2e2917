"""bf16 and fp16 models (what a GPU user runs with ``--dtype``) give the same views as float32.

The CPU runs both half precisions, so every view is checked here without a GPU: each one runs in bf16 and fp16 on
the bundled models and is compared with the float32 result of the same model. Tolerances are those of the format
(bf16 keeps 8 bits of mantissa, fp16 11), loose enough for rounding and tight enough to catch a view that breaks,
silently reads the wrong tensor, or leaks a half-precision tensor to numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import load_model, shapes
from models.embed import EmbeddingCache, ImageItem, embed_images, embed_texts
from viz.attention_session import AttentionSession
from viz.cam import CAM_METHODS
from viz.cnn_session import CNNSession
from viz.patches import patch_pca_rgb, token_similarity
from viz.probes import shift_probe
from viz.residual import attention_map_correlation, residual_norms
from viz.zero_shot import image_text_similarity, zero_shot

HALF = ["bf16", "fp16"]
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]   # the half model's device; float32 on the CPU
LABELS = ["red circle", "blue square", "green triangle", "yellow star"]


@pytest.fixture(scope="module")
def image():
    return shapes.make_dataset(1, seed=8)[0].image


def _pair(model_id: str, dtype: str, device: str = "cpu"):
    """The float32 reference on the CPU and the half-precision model on ``device``."""
    return load_model(model_id, device="cpu"), load_model(model_id, device=device, dtype=dtype)


def _array(values) -> np.ndarray:
    if torch.is_tensor(values):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _correlation(a, b) -> float:
    a, b = _array(a).ravel(), _array(b).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("model_id", ["bundled:mini-clip", "bundled:mini-vit", "bundled:mini-cnn"])
def test_the_half_precision_forward_matches_float32(model_id, dtype, device, image):
    full, half = _pair(model_id, dtype, device)
    assert half.dtype == (torch.bfloat16 if dtype == "bf16" else torch.float16)
    assert next(half.module.parameters()).dtype == half.dtype
    run = "encode_image" if full.family == "clip" else "forward"
    with torch.no_grad():
        expected = getattr(full, run)(full.pixels([image])).float()
        got = getattr(half, run)(half.pixels([image])).float().cpu()
    assert F.cosine_similarity(expected, got).min() > 0.995


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("model_id", ["bundled:mini-clip", "bundled:mini-vit"])
def test_attention_views_match_float32(model_id, dtype, device, image):
    full, half = (AttentionSession(m, image) for m in _pair(model_id, dtype, device))
    last = full.vit.num_layers - 1
    for layer in (0, last):
        got = half.head_pattern(layer, "mean")
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)), atol=1e-3, rtol=0)
        torch.testing.assert_close(got, full.head_pattern(layer, "mean"), atol=0.03, rtol=0)
        torch.testing.assert_close(half.all_heads(layer, 0), full.all_heads(layer, 0), atol=0.03, rtol=0)
    torch.testing.assert_close(half.rollout_map(), full.rollout_map(), atol=0.03, rtol=0)
    steps_full, steps_half = full.steps(last, 0, 0), half.steps(last, 0, 0)
    assert abs(steps_half.entropy - steps_full.entropy) < 0.05
    # the Patches views read the residual stream as stored (half precision here)
    tokens_full, tokens_half = (s.stream[f"blocks.{last}.resid_post"][0] for s in (full, half))
    assert tokens_half.dtype == half.vit.dtype
    assert _correlation(token_similarity(tokens_half, 5), token_similarity(tokens_full, 5)) > 0.99
    islands = patch_pca_rgb(tokens_half[half.prefix:], half.grid)
    assert islands.shape == (*half.grid, 3) and np.isfinite(islands).all()
    norms_full = residual_norms({k: v.float() for k, v in full.stream.items()}, full.vit.num_layers)
    norms_half = residual_norms(half.stream, half.vit.num_layers)
    for key in norms_full:
        np.testing.assert_allclose(norms_half[key], norms_full[key], rtol=0.03)
    np.testing.assert_allclose(attention_map_correlation(half.patterns), attention_map_correlation(full.patterns),
                               atol=0.05)
    # gradients through the half-precision model: class relevancy, or CLIP's prompt relevancy
    target = "a red circle" if full.model.family == "clip" else 0
    assert _correlation(half.relevancy(target), full.relevancy(target)) > 0.95


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
def test_clip_text_views_match_float32(dtype, device, image):
    full_model, half_model = _pair("bundled:mini-clip", dtype, device)
    full, half = zero_shot(full_model, image, LABELS, cache=None), zero_shot(half_model, image, LABELS, cache=None)
    assert np.argmax(half.probabilities) == np.argmax(full.probabilities)
    np.testing.assert_allclose(half.probabilities, full.probabilities, atol=0.03)
    images = [s.image for s in shapes.make_dataset(4, seed=3)]
    matrix_full, _ = image_text_similarity(full_model, images, LABELS)
    matrix_half, _ = image_text_similarity(half_model, images, LABELS)
    np.testing.assert_allclose(matrix_half.cosine, matrix_full.cosine, atol=0.02)
    full_session, half_session = AttentionSession(full_model, image), AttentionSession(half_model, image)
    per_patch_full, per_patch_half = (_array(s.patch_zero_shot(LABELS)) for s in (full_session, half_session))
    np.testing.assert_allclose(per_patch_half, per_patch_full, atol=0.05)
    words_full, scores_full = full_session.token_relevance("a red circle")
    words_half, scores_half = half_session.token_relevance("a red circle")
    assert words_half == words_full and _correlation(scores_half, scores_full) > 0.9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
def test_cnn_views_and_every_cam_method_match_float32(dtype, device, image):
    full, half = (CNNSession(m, image) for m in _pair("bundled:mini-cnn", dtype, device))
    last = [n for n in full.layers() if n.startswith("stages.")][-1]
    maps_full, chosen_full = full.feature_maps(last, k=8)
    maps_half, chosen_half = half.feature_maps(last, k=8, channels=chosen_full)
    assert maps_half.dtype == np.float32 and chosen_half == chosen_full
    assert _correlation(maps_half, maps_full) > 0.98
    unit = (2, 3)
    assert half.field(last) == full.field(last)
    assert _correlation(half.effective_field(last, unit), full.effective_field(last, unit)) > 0.95
    assert half.prediction(k=3).indices == full.prediction(k=3).indices
    target = full.prediction(k=1).indices[0]
    for method in CAM_METHODS:
        cam_full, cam_half = full.cam(target, method, None), half.cam(target, method, None)
        assert cam_half.dtype == np.float32 and np.isfinite(cam_half).all(), method
        assert cam_half.min() >= 0 and cam_half.max() <= 1 + 1e-6, method
        assert _correlation(cam_half, cam_full) > 0.9, method


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
def test_probes_run_in_half_precision(dtype, device, image):
    full, half = _pair("bundled:mini-cnn", dtype, device)
    probe_full, probe_half = shift_probe(full, image, max_shift=8), shift_probe(half, image, max_shift=8)
    assert probe_half.shifts == probe_full.shifts
    np.testing.assert_allclose(probe_half.output_similarity, probe_full.output_similarity, atol=0.05)
    np.testing.assert_allclose(probe_half.feature_change, probe_full.feature_change, atol=0.05)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
def test_bulk_embeddings_match_float32_and_are_cached_apart(dtype, device, tmp_path):
    full, half = _pair("bundled:mini-clip", dtype, device)
    items = [ImageItem(s.image) for s in shapes.make_dataset(12, seed=5)]
    half_cache, full_cache = EmbeddingCache(half, tmp_path), EmbeddingCache(full, tmp_path)
    assert half_cache.dir != full_cache.dir   # one cache root: float32 must never be served half-precision rows
    got = embed_images(half, items, batch_size=5, cache=half_cache)
    expected = embed_images(full, items, batch_size=5, cache=full_cache)
    assert got.dtype == np.float32
    assert F.cosine_similarity(torch.from_numpy(got), torch.from_numpy(expected)).min() > 0.995
    np.testing.assert_array_equal(embed_images(half, items, cache=half_cache), got)   # served from the cache
    texts = embed_texts(half, LABELS)
    assert texts.dtype == np.float32
    assert F.cosine_similarity(torch.from_numpy(texts), torch.from_numpy(embed_texts(full, LABELS))).min() > 0.995
