"""Which text tokens a CLIP shows, and the prompt-token relevance read from the row the tower really pools.

Text towers pool in different places: OpenAI-style at the end-of-text token, ChineseCLIP / AltCLIP at [CLS] (0),
SigLIP at the last (padding) position, CoCa at a class token appended after the text, XLM-R by a mean over the real
tokens. The shown tokens must be the text's real tokens (no padding) plus the pooled position where it lies beyond
them, and the relevance must be the pooled row of the text tower's own relevancy (brute force below).
"""
from __future__ import annotations

import pytest
import torch

from models import load_model
from models.backends import BACKENDS
from viz.attention import clip_prompt_relevancy, gradient_relevancy

PROMPT = "a red circle"
# (backend, arch) -> where the tower pools: "end" (its end-of-text token), "first", "beyond" (past the text), "mean"
TOWERS = {
    ("open_clip", "ViT-B-32"): "end",
    ("open_clip", "ViT-L-14-worldwide"): "end",
    ("open_clip", "ViT-B-16-SigLIP"): "beyond",
    ("open_clip", "coca_ViT-B-32"): "beyond",
    ("open_clip", "xlm-roberta-base-ViT-B-32"): "mean",
    ("hf", "ChineseCLIPModel"): "first",
    ("hf", "SiglipModel"): "beyond",
}


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_towers")
    return {key: BACKENDS[key[0]].save_random(key[1], root / key[1], True) for key in TOWERS}


def _brute_force_relevance(model, pixels, prompt, positions, pooled, mean):
    """Chefer relevancy of the text tower written out from one gradient capture, read at the pooled row."""
    tokens = model.tokenize([prompt])
    names = [f"text.blocks.{i}.attn.pattern" for i in range(len(model.text.blocks))]
    with model.capture(names, grad=True) as cache:
        image = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
        (image * text).sum().backward()
    relevancy = gradient_relevancy([cache[n] for n in names], [cache.grad(n) for n in names])[0]
    row = relevancy[positions].mean(dim=0) if mean else relevancy[pooled]
    return row[positions]


@pytest.mark.parametrize("key", list(TOWERS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_shown_tokens_are_the_text_and_relevance_is_the_pooled_row(key, towers):
    model = load_model(towers[key])
    ids = model.tokenize([PROMPT])[0]
    positions, pooled = model.token_positions(ids)
    strings = model.token_strings(ids)
    where = TOWERS[key]
    assert len(strings) == len(positions)
    assert positions[:-1] == list(range(len(positions) - 1)), "the text's tokens run from 0 without gaps"
    real = positions if where != "beyond" else positions[:-1]
    count = model.token_count(PROMPT)  # the tokenizer's own count of the text's tokens, special tokens included
    assert count is None or len(real) == count, f"shown {len(real)} tokens, the text has {count}: padding shown?"
    if where == "end":
        assert pooled == positions[-1]
    elif where == "first":
        assert pooled == 0 and len(positions) > 2
    elif where == "beyond":
        assert pooled == positions[-1] and pooled > positions[-2]
        assert strings[-1] == "<cls>" or strings[-1].endswith("(pooled)")
    pixels = torch.randn(1, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(0))
    _, shown, scores = clip_prompt_relevancy(model, pixels, PROMPT)
    assert shown == strings and scores.shape == (len(positions),)
    expected = _brute_force_relevance(model, pixels, PROMPT, positions, pooled, where == "mean")
    torch.testing.assert_close(scores, expected.cpu(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("key", list(TOWERS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_every_tokenizer_can_say_which_tokens_are_special(key, towers):
    from viz.attention import special_token_flags
    model = load_model(towers[key], device="cpu")
    flags = special_token_flags(model, PROMPT)
    strings = model.token_strings(model.tokenize([PROMPT])[0])
    assert len(flags) == len(strings) and any(flags) and not all(flags)   # some text, some start / end / class
    coverage = model.token_coverage([PROMPT])[0]
    assert coverage.tokens >= 1 and coverage.unknown == 0
