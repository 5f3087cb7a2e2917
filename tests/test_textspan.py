"""TextSpan's greedy selection against brute force: planted text directions are recovered; the first pick is the
exhaustive best single text; the variance explained after k picks is that of the orthogonal projection onto the
span of the chosen texts; on mini-clip the chosen texts explain more than random texts do, and colour and shape heads
appear (against a shuffled-label baseline)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.registry import load_model
from models.world import shapes
from viz import decomposition as D
from viz.zero_shot import encode_texts


def _vocabulary(count: int, dim: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, dim, generator=generator), dim=-1), [f"text {i}" for i in range(count)]


def test_planted_text_directions_are_recovered_with_all_the_variance():
    texts, names = _vocabulary(60, 32, seed=0)
    generator = torch.Generator().manual_seed(1)
    planted = [7, 23, 41]
    weights = torch.randn(200, 3, generator=generator) * torch.tensor([3.0, 2.0, 1.0])
    outputs = weights @ texts[planted] + 0.01 * torch.randn(200, 32, generator=generator) + 5.0   # offset: centred
    span = D.text_span(outputs, texts, names, steps=3)
    assert set(span.indices) == set(planted)
    assert span.texts == [names[i] for i in span.indices]
    assert span.explained[-1] > 0.999 and np.all(np.diff(span.explained) > 0)


def test_first_pick_is_the_exhaustive_best_single_text():
    texts, names = _vocabulary(6, 5, seed=2)
    outputs = torch.randn(40, 5, generator=torch.Generator().manual_seed(3)) * torch.tensor([3.0, 1, 1, 0.5, 0.2])
    centred = outputs.double() - outputs.double().mean(dim=0)
    explained = [float((centred @ F.normalize(t.double(), dim=0)).pow(2).sum() / centred.pow(2).sum()) for t in texts]
    span = D.text_span(outputs, texts, names, steps=1)
    assert span.indices == [int(np.argmax(explained))]
    assert span.explained[0] == pytest.approx(max(explained), rel=1e-9)


def test_explained_variance_is_that_of_the_projection_onto_the_chosen_span():
    texts, names = _vocabulary(12, 8, seed=4)
    outputs = torch.randn(50, 8, generator=torch.Generator().manual_seed(5)).double()
    span = D.text_span(outputs, texts, names, steps=4)
    centred = outputs - outputs.mean(dim=0)
    for k in range(1, 5):  # least squares on the chosen texts themselves, not on TextSpan's residual directions
        basis = texts[span.indices[:k]].double().T                    # (dim, k), not orthogonal
        fitted = basis @ torch.linalg.lstsq(basis, centred.T).solution
        assert span.explained[k - 1] == pytest.approx(float(fitted.pow(2).sum() / centred.pow(2).sum()), rel=1e-9)
    assert len(set(span.indices)) == 4                                 # never the same text twice


def test_rank_keeps_texts_outside_the_heads_span_from_being_chosen():
    texts, names = _vocabulary(10, 6, seed=6)
    inside = F.normalize(texts[:2].sum(dim=0), dim=0)
    outputs = torch.randn(30, 1, generator=torch.Generator().manual_seed(7)) * inside
    outside = F.normalize(torch.linalg.svd(outputs - outputs.mean(0))[2][-1], dim=0)   # orthogonal to the data
    candidates = torch.cat([texts, outside[None] * 10])            # a long text direction with no variance
    span = D.text_span(outputs, candidates, names + ["outside"], steps=2, rank=1)
    assert "outside" not in span.texts


def test_bad_input_is_refused():
    texts, names = _vocabulary(3, 4, seed=8)
    with pytest.raises(ValueError, match="3 texts but 2"):
        D.text_span(torch.randn(5, 4), texts[:2], names)
    with pytest.raises(ValueError, match="at least one step"):
        D.text_span(torch.randn(5, 4), texts, names, steps=0)


@pytest.fixture(scope="module")
def mini_clip_world():
    clip = load_model("bundled:mini-clip")
    vocabulary = D.world_vocabulary()
    return clip, D.world_set(clip, n=72), vocabulary, encode_texts(clip, vocabulary)


def test_chosen_texts_explain_more_than_random_texts_on_mini_clip(mini_clip_world):
    _, world, vocabulary, text = mini_clip_world
    rng = np.random.default_rng(0)
    heads = world.decomposition.heads
    for layer, head in ((3, 1), (2, 2)):
        outputs = heads[:, layer, head].double()
        span = D.text_span(outputs, text, vocabulary, steps=5)
        centred = outputs - outputs.mean(dim=0)
        random_shares = []
        for _ in range(20):   # the baseline: five texts drawn at random from the same vocabulary
            basis = text[rng.choice(len(vocabulary), 5, replace=False)].double().T
            fitted = basis @ torch.linalg.lstsq(basis, centred.T).solution
            random_shares.append(float(fitted.pow(2).sum() / centred.pow(2).sum()))
        assert span.explained[-1] > np.mean(random_shares) + 0.1, (layer, head, span.explained, random_shares)


def test_colour_heads_and_shape_heads_appear_on_mini_clip(mini_clip_world):
    _, world, vocabulary, text = mini_clip_world
    heads = world.decomposition.heads
    layers, count = heads.shape[1:3]
    colour = np.array([[D.label_variance_share(heads[:, i, h], world.colours) for h in range(count)]
                       for i in range(layers)])
    shape = np.array([[D.label_variance_share(heads[:, i, h], world.shapes) for h in range(count)]
                      for i in range(layers)])
    shuffled = np.random.default_rng(1).permutation(world.colours)
    baseline = max(D.label_variance_share(heads[:, i, h], shuffled) for i in range(layers) for h in range(count))
    assert baseline < 0.25   # labels that mean nothing explain little of any head
    # several heads carry colour; shape is spread over more heads, the best one still well above the baseline
    assert (colour > 0.8).sum() >= 3 and shape.max() >= baseline + 0.15, (colour.round(2), shape.round(2), baseline)
    # the most shape-specific head's TextSpan texts vary in shape ("a star", or "an orange circle", "an orange
    # star", "a purple square"), the most colour-specific head's in colour ("something red", "a green star", ...)
    layer, head = np.unravel_index(np.argmax(shape - colour), shape.shape)
    assert shape[layer, head] > colour[layer, head] + 0.1
    shape_texts = D.text_span(heads[:, layer, head], text, vocabulary, steps=3).texts
    layer, head = np.unravel_index(np.argmax(colour - shape), colour.shape)
    colour_texts = D.text_span(heads[:, layer, head], text, vocabulary, steps=3).texts
    for texts, varying, other in ((shape_texts, shapes.SHAPES, shapes.COLOURS),
                                  (colour_texts, shapes.COLOURS, shapes.SHAPES)):
        named = {word for text in texts for word in text.split() if word in varying}
        named_other = {word for text in texts for word in text.split() if word in other}
        assert len(named) >= 2 and len(named) > len(named_other), texts
