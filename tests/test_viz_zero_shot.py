"""Zero-shot maths against plain reference code: label parsing, template ensembling, the text-feature cache,
truncation notices, the similarity matrix's two softmax halves; multilingual CLIP with its own tokenizer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_multilingual import CONTEXT_LENGTH, open_clip_xlm_roberta

from models import load_model, shapes
from viz.zero_shot import (
    ENSEMBLE_TEMPLATES,
    NotCLIPError,
    TextFeatureCache,
    fill_template,
    image_text_similarity,
    parse_labels,
    parse_templates,
    similarity_matrix,
    truncation_notice,
    zero_shot,
)

LONG = "a very small red circle on the left of a large striped background near a blue square and " * 3


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    path = open_clip_xlm_roberta(tmp_path_factory.mktemp("xlmr") / "clip")
    return load_model(f"open_clip:local-dir:{path}", device="cpu")


def test_labels_split_on_lines_and_commas_and_empty_input_is_refused():
    assert parse_labels("cat, dog\n bird ,,\ncat") == ["cat", "dog", "bird"]
    assert parse_labels(["  a ", "", "b"]) == ["a", "b"]
    for empty in ("", " , \n ", None, []):
        with pytest.raises(ValueError, match="at least one label"):
            parse_labels(empty)


def test_templates_need_one_placeholder_and_articles_follow_the_label():
    assert parse_templates("a photo of a {}.\n\n{} in the wild") == ["a photo of a {}.", "{} in the wild"]
    with pytest.raises(ValueError, match="exactly once"):
        parse_templates("a photo")
    with pytest.raises(ValueError, match="at least one template"):
        parse_templates("\n")
    assert fill_template("a photo of a {}.", "orange star") == "a photo of an orange star."
    assert fill_template("A {}", "apple") == "An apple"
    assert fill_template("a photo of a {}.", "red star") == "a photo of a red star."
    assert fill_template("{} on a table", "egg") == "egg on a table"


def test_ensembled_features_match_a_reference_written_out(clip):
    labels = ["red circle", "orange star", "blue square"]
    templates = list(ENSEMBLE_TEMPLATES[:4])
    got = TextFeatureCache().get(clip, labels, templates).features
    with torch.no_grad():
        per_template = []
        for template in templates:
            prompts = [template.replace("{}", label) for label in labels]
            prompts = [p.replace("a orange", "an orange") for p in prompts]
            per_template.append(F.normalize(clip.encode_text(prompts).float(), dim=-1))
        mean = torch.stack(per_template).mean(dim=0)
        expected = mean / mean.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3))


def test_text_features_are_cached_per_model_labels_and_templates(clip, monkeypatch):
    calls = []
    original = clip.encode_text

    def counting(texts):
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(clip, "encode_text", counting)
    cache = TextFeatureCache()
    image = shapes.make_dataset(1, seed=880_001)[0].image
    first = zero_shot(clip, image, "red circle, blue star", ["a {}"], cache=cache)
    second = zero_shot(clip, image, ["red circle", "blue star"], ["a {}"], cache=cache)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    np.testing.assert_allclose(first.probabilities, second.probabilities)
    zero_shot(clip, image, "red circle, blue star", ["a photo of a {}."], cache=cache)   # other templates
    zero_shot(clip, image, "red circle, green star", ["a {}"], cache=cache)              # other labels
    assert len(calls) == 3 and cache.misses == 3


def test_zero_shot_probabilities_are_the_softmax_of_scaled_cosine(clip):
    example = shapes.make_dataset(1, seed=880_002, two_objects_prob=0.0)[0]
    labels = ["red circle", "green square", example.label]
    result = zero_shot(clip, example.image, labels, ["a {}"], cache=None)
    with torch.no_grad():
        image = F.normalize(clip.encode_image(clip.pixels([example.image])).float(), dim=-1)
        text = F.normalize(clip.encode_text([fill_template("a {}", label) for label in result.labels]).float(), dim=-1)
        logits = clip.logit_scale * image @ text.T
    np.testing.assert_allclose(result.logits, logits[0].double().numpy(), atol=1e-4)
    np.testing.assert_allclose(result.probabilities, torch.softmax(logits[0].double(), 0).numpy(), atol=1e-6)
    assert result.top(1)[0][0] == example.label
    assert [label for label, _ in result.top(2)] == [result.labels[i] for i in np.argsort(-result.probabilities)[:2]]


def test_overlong_text_is_truncated_with_a_notice_counted_by_the_models_tokenizer(clip):
    count = clip.token_count(LONG)
    tokenizer = clip._tokenize
    assert count == len(tokenizer.encode(LONG)) + 2 > clip.context_length == 32
    assert clip.truncated([LONG, "a red circle"]) == [True, False]
    notice = truncation_notice(clip, [LONG, "a red circle"])
    assert "1 text(s)" in notice and "32 tokens" in notice and f"({count} tokens)" in notice
    assert truncation_notice(clip, ["a red circle"]) is None
    ids = clip.tokenize([LONG])[0]
    assert ids.shape[0] == 32 and int(ids[-1]) == tokenizer.eot_token_id   # cut, and still ends with end-of-text
    image = shapes.make_dataset(1, seed=880_003)[0].image
    result = zero_shot(clip, image, [LONG, "red circle"], ["a {}"], cache=None)
    assert result.notices and "truncated" in result.notices[0]


def test_similarity_matrix_halves_are_row_and_column_softmaxes():
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(4, 8)), rng.normal(size=(5, 8))
    matrix = similarity_matrix(images, texts, logit_scale=30.0)
    cosine = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in texts] for a in images])
    np.testing.assert_allclose(matrix.cosine, cosine, atol=1e-12)
    logits = 30.0 * cosine
    for i in range(4):
        row = np.exp(logits[i] - logits[i].max())
        np.testing.assert_allclose(matrix.image_to_text[i], row / row.sum(), atol=1e-12)
    for j in range(5):
        col = np.exp(logits[:, j] - logits[:, j].max())
        np.testing.assert_allclose(matrix.text_to_image[:, j], col / col.sum(), atol=1e-12)
    assert matrix.contrastive_loss() is None
    square = similarity_matrix(images, texts[:4], logit_scale=30.0)
    target = torch.arange(4)
    torch_logits = torch.from_numpy(square.logits)
    i2t, t2i = square.contrastive_loss()
    assert i2t == pytest.approx(float(F.cross_entropy(torch_logits, target)), abs=1e-9)
    assert t2i == pytest.approx(float(F.cross_entropy(torch_logits.T, target)), abs=1e-9)


def test_matching_pairs_dominate_the_diagonal_on_mini_clip(clip):
    examples = shapes.make_dataset(6, seed=880_004, two_objects_prob=0.0)
    matrix, notice = image_text_similarity(clip, [e.image for e in examples], [e.caption for e in examples])
    assert notice is None
    assert (matrix.image_to_text.argmax(axis=1) == np.arange(6)).mean() >= 5 / 6
    with pytest.raises(ValueError, match="at least one text"):
        image_text_similarity(clip, [examples[0].image], [" "])


def test_non_clip_models_are_refused_with_a_clear_message():
    vit = load_model("bundled:mini-vit", device="cpu")
    with pytest.raises(NotCLIPError, match="not CLIP"):
        zero_shot(vit, shapes.make_dataset(1, seed=1)[0].image, "a, b")


def test_multilingual_clip_uses_its_own_tokenizer_and_context_length(multilingual):
    assert multilingual.context_length == CONTEXT_LENGTH
    prompts = {"fr": "une photo d'un chat", "ja": "猫の写真", "ru": "кошка"}
    hf_tokenizer = multilingual._tokenize.tokenizer
    for text in prompts.values():
        ids = multilingual.tokenize([text])[0]
        expected = hf_tokenizer(text)["input_ids"]
        assert ids.shape[0] == CONTEXT_LENGTH
        assert ids[:len(expected)].tolist() == expected               # the model's own tokenizer, untouched
        assert multilingual.token_count(text) == len(expected)
        assert multilingual.token_strings(ids)[-1] == "</s>"
    long_japanese = "写真" * 20
    assert multilingual.truncated([long_japanese, prompts["ja"]]) == [True, False]
    assert f"context of {CONTEXT_LENGTH} tokens" in truncation_notice(multilingual, [long_japanese])
    image = shapes.make_dataset(1, seed=880_005)[0].image
    result = zero_shot(multilingual, image, list(prompts.values()) + [long_japanese], ["{}"], cache=None)
    assert result.probabilities.sum() == pytest.approx(1.0) and len(result.labels) == 4
    assert sum("1 text(s) longer than this model's context" in n for n in result.notices) == 1
    # the stand-in tokenizer is bytes only: every non-Latin label is raw byte pieces, and the result says so
    assert result.uncovered == [prompts["ja"], prompts["ru"], long_japanese]
    assert any("tokenizer does not cover the" in n and "Cyrillic" in n for n in result.notices)


def test_sigmoid_similarity_matrix_scores_each_pair_on_its_own():
    """SigLIP: p(i, j) = sigmoid(scale * cosine + bias) per pair; loss = mean over images of
    sum_j log(1 + exp(-z_ij * logit_ij)) with z = +1 on the diagonal and -1 elsewhere."""
    rng = np.random.default_rng(1)
    images, texts = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    matrix = similarity_matrix(images, texts, logit_scale=10.0, logit_bias=-2.0, probability="sigmoid")
    cosine = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in texts] for a in images])
    logits = 10.0 * cosine - 2.0
    expected = np.array([[1.0 / (1.0 + np.exp(-v)) for v in row] for row in logits])
    np.testing.assert_allclose(matrix.logits, logits, atol=1e-12)
    np.testing.assert_allclose(matrix.image_to_text, expected, atol=1e-12)
    np.testing.assert_allclose(matrix.text_to_image, expected, atol=1e-12)
    assert not np.allclose(matrix.image_to_text.sum(axis=1), 1.0)
    loss = sum(math.log(1 + math.exp(-(1 if i == j else -1) * logits[i, j])) for i in range(3) for j in range(3)) / 3
    assert matrix.contrastive_loss() == pytest.approx((loss, loss))


def test_the_figures_name_sigmoid_probabilities():
    from viz.zero_shot import ZeroShotResult, probability_notice
    from viz.zero_shot_figures import softmax_halves_figure, top_k_figure

    matrix = similarity_matrix(np.eye(2), np.eye(2), logit_scale=10.0, logit_bias=-5.0, probability="sigmoid")
    assert "sigmoid per pair" in softmax_halves_figure(matrix, ["a", "b"]).layout.annotations[0].text
    logits = np.array([3.0, 1.0, -2.0])
    result = ZeroShotResult(["a", "b", "c"], ["{}"], logits / 10, logits, 1 / (1 + np.exp(-logits)), 10.0,
                            probability="sigmoid")
    assert "probabilities need not sum to 1" in top_k_figure(result, 3).layout.title.text
    assert probability_notice("sigmoid") == "Sigmoid per label (SigLIP): probabilities need not sum to 1."


def test_the_default_labels_name_the_default_examples_objects_and_their_colour_swaps():
    """A tab's first answer on the preselected example must be able to be right: its labels hold that scene's
    objects, and each pair's colour swap, so the first screen also asks whether the model binds colour to shape."""
    from ui.examples import DEFAULT_EXAMPLE, example_scene
    from viz.zero_shot import DEFAULT_LABELS

    scene = example_scene(DEFAULT_EXAMPLE)
    objects = [o.label for o in scene.objects]
    swaps = [f"{b.colour} {a.shape}" for a in scene.objects for b in scene.objects if a.colour != b.colour]
    assert set(objects) <= set(DEFAULT_LABELS) and set(swaps) <= set(DEFAULT_LABELS)
    assert len(set(DEFAULT_LABELS)) == len(DEFAULT_LABELS) and set(DEFAULT_LABELS) <= set(shapes.class_names())
