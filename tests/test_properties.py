"""Property-based tests (hypothesis): the public analysis functions over arbitrary image shapes and modes, logits,
attention patterns, embeddings and texts either give a well-formed answer or a precise ValueError, never a crash."""
from __future__ import annotations

import io

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from models import load_model
from models.images import ImageInputError, open_image, to_rgb
from models.preprocess import Preprocess
from models.receptive_field import Span
from viz.attention import attention_rollout, fuse_heads, mean_attention_distance
from viz.cnn import effective_radius, pick_channels, scale_maps
from viz.embedding_space import confusion_matrix, modality_gap, retrieve
from viz.patches import patch_pca_rgb, token_similarity
from viz.softmax import apply_sliders, entropy, softmax
from viz.zero_shot import parse_labels, parse_templates, similarity_matrix

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I", "I;16", "F", "YCbCr"]
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@st.composite
def images(draw):
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if mode in ("I", "I;16"):
        array = rng.integers(0, 65535, (height, width)).astype(np.uint16 if mode == "I;16" else np.int32)
        return Image.fromarray(array, mode=mode) if mode == "I;16" else Image.fromarray(array)
    if mode == "F":
        return Image.fromarray(rng.standard_normal((height, width)).astype(np.float32), mode="F")
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)


@FAST
@given(images())
def test_any_image_becomes_8_bit_rgb_of_the_same_size(image):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size


@FAST
@given(images(), st.sampled_from(["PNG", "TIFF", "WEBP", "JPEG", "BMP", "GIF"]))
def test_any_saved_image_opens_or_is_refused_with_a_message(image, file_format):
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=file_format)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format: nothing to open
    try:
        opened = open_image(buffer.getvalue())
    except ImageInputError as exc:
        assert str(exc)
        return
    assert opened.mode == "RGB" and opened.size == image.size


@FAST
@given(images(), st.integers(8, 64), st.booleans())
def test_preprocess_gives_the_model_size_for_any_image(image, side, crop):
    preprocess = Preprocess(size=(side, side), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                            resize_to=side + 4 if crop else None)
    pixels = preprocess([image])
    assert pixels.shape == (1, 3, side, side) and torch.isfinite(pixels).all()


@FAST
@given(st.lists(finite, min_size=1, max_size=40), st.floats(0.01, 100))
def test_softmax_sums_to_one_and_entropy_is_bounded(logits, temperature):
    p = softmax(logits, temperature)
    assert abs(p.sum() - 1) < 1e-9 and (p >= 0).all()
    assert -1e-12 <= entropy(p) <= np.log(len(logits)) + 1e-9


@FAST
@given(st.lists(finite, min_size=2, max_size=12), st.data())
def test_raising_one_slider_raises_its_class_and_lowers_every_other(logits, data):
    index = data.draw(st.integers(0, len(logits) - 1))
    bump = data.draw(st.floats(0.5, 10))
    before = softmax(logits)
    after = softmax(apply_sliders(logits, [index], [logits[index] + bump]))
    assert after[index] > before[index] or before[index] > 1 - 1e-12
    others = [i for i in range(len(logits)) if i != index]
    assert all(after[i] <= before[i] + 1e-15 for i in others)


@FAST
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 17), st.integers(1, 4), st.integers(0, 2**16))
def test_rollout_rows_are_distributions(batch, heads, tokens, layers, seed):
    generator = torch.Generator().manual_seed(seed)
    patterns = [torch.rand(batch, heads, tokens, tokens, generator=generator).softmax(-1) for _ in range(layers)]
    for how in ("mean", "max", "min"):
        assert fuse_heads(patterns[0], how).shape == (batch, tokens, tokens)
        rollout = attention_rollout(patterns, how)
        torch.testing.assert_close(rollout.sum(-1), torch.ones(batch, tokens))


@FAST
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2**16))
def test_mean_attention_distance_lies_within_the_grid(rows, cols, prefix, seed):
    tokens = prefix + rows * cols
    pattern = torch.rand(1, 2, tokens, tokens, generator=torch.Generator().manual_seed(seed)).softmax(-1)
    distance = mean_attention_distance(pattern, (rows, cols), (8, 8), prefix)
    assert distance.shape[-1] == 2
    assert (distance >= 0).all() and (distance <= 8 * np.hypot(rows - 1, cols - 1) + 1e-4).all()


@FAST
@given(st.integers(1, 4), st.integers(1, 4), st.integers(2, 16), st.integers(0, 2**16))
def test_patch_pca_and_token_similarity_for_any_grid(rows, cols, dim, seed):
    tokens = torch.randn(1 + rows * cols, dim, generator=torch.Generator().manual_seed(seed))
    rgb = patch_pca_rgb(tokens[1:], (rows, cols))
    assert rgb.shape[:2] == (rows, cols) and np.isfinite(rgb).all()
    similarity = token_similarity(tokens, 0)
    assert similarity.shape == (len(tokens),) and float(similarity.abs().max()) <= 1 + 1e-5


@FAST
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**16),
       st.sampled_from(["per unit", "per layer", "global"]), st.integers(1, 10))
def test_channel_choice_and_colour_scales(rows, cols, channels, seed, scale, k):
    maps = torch.randn(channels, rows, cols, generator=torch.Generator().manual_seed(seed))
    chosen = pick_channels(maps, k)
    assert len(chosen) == min(k, channels) and len(set(chosen)) == len(chosen)
    scaled = scale_maps(maps[chosen], scale, (float(maps.min()), float(maps.max())), (-10.0, 10.0))
    assert scaled.shape == (len(chosen), rows, cols) and (scaled >= 0).all() and (scaled <= 1).all()


@FAST
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**16), st.floats(0.05, 1.0))
def test_effective_radius_grows_with_the_fraction(rows, cols, seed, fraction):
    erf = np.random.default_rng(seed).random((rows, cols))
    centre = (rows / 2, cols / 2)
    radius = effective_radius(erf, centre, fraction)
    assert 0 <= radius <= np.hypot(rows, cols)
    assert radius <= effective_radius(erf, centre, 1.0) + 1e-12


@FAST
@given(st.integers(-10, 10), st.integers(0, 10), st.integers(1, 4), st.integers(1, 7), st.integers(1, 3),
       st.integers(0, 3), st.integers(1, 2))
def test_receptive_field_spans_grow_and_stay_ordered(lo, width, jump, kernel, stride, padding, dilation):
    span = Span(lo, lo + width, jump)
    after = span.through(kernel, stride, padding, dilation)
    assert after.size == span.size + (kernel - 1) * dilation * jump and after.jump == jump * stride
    union = span.union(Span(lo - 1, lo + width + 1, jump))
    assert union.lo <= span.lo and union.hi >= span.hi


@FAST
@given(st.integers(1, 6), st.integers(1, 6), st.integers(2, 16), st.floats(1, 100), st.integers(0, 2**16))
def test_similarity_matrix_halves_are_distributions(images_n, texts_n, dim, scale, seed):
    rng = np.random.default_rng(seed)
    matrix = similarity_matrix(rng.standard_normal((images_n, dim)), rng.standard_normal((texts_n, dim)), scale)
    assert np.allclose(matrix.image_to_text.sum(1), 1) and np.allclose(matrix.text_to_image.sum(0), 1)
    assert (np.abs(matrix.cosine) <= 1 + 1e-9).all()


@FAST
@given(st.integers(1, 20), st.integers(1, 10), st.integers(2, 12), st.integers(1, 25), st.integers(0, 2**16))
def test_retrieval_gap_and_confusion(images_n, texts_n, dim, k, seed):
    rng = np.random.default_rng(seed)
    image_vectors, text_vectors = rng.standard_normal((images_n, dim)), rng.standard_normal((texts_n, dim))
    order, scores = retrieve(text_vectors[0], image_vectors, k)
    assert len(order) == min(k, images_n) and (np.diff(scores) <= 1e-12).all()
    gap = modality_gap(image_vectors, text_vectors, np.arange(images_n) % texts_n)
    assert 0 <= gap.length <= 2 + 1e-9 and gap.pairs == images_n
    truth, predicted = rng.integers(0, 4, images_n), rng.integers(0, 4, images_n)
    matrix = confusion_matrix(truth, predicted, 4)
    assert matrix.sum() == images_n and np.trace(matrix) == int((truth == predicted).sum())


@FAST
@given(st.text(max_size=300))
def test_labels_and_templates_parse_or_say_why(text):
    for parse in (parse_labels, parse_templates):
        try:
            parsed = parse(text)
        except ValueError as exc:
            assert str(exc)
            continue
        assert parsed and all(p == p.strip() and p for p in parsed)


_CLIP = {}


def _clip():
    if "model" not in _CLIP:
        _CLIP["model"] = load_model("bundled:mini-clip", device="cpu")
    return _CLIP["model"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_tokenises_to_the_context_and_embeds(text):
    clip = _clip()
    tokens = clip.tokenize([text])
    assert tokens.shape == (1, clip.context_length)
    embedding = clip.encode_text(tokens)
    assert torch.isfinite(embedding).all()
