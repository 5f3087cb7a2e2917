"""Tokenizer coverage: a label in a script the model's tokenizer was not trained on is counted (unknown ids, raw
byte pieces, letters spelled one by one) and said, in the zero-shot result and the similarity notice."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from models import load_model, shapes
from models.tokens import BYTES, LETTER, SPECIAL, TEXT, UNKNOWN, coverage_notice, token_classifier, token_coverage
from viz.zero_shot import image_text_similarity, zero_shot

RUSSIAN = ["красный круг", "синий квадрат"]
ENGLISH = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


def _word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A WordPiece-like vocabulary of whole words with an unknown token, as a SentencePiece model without a script
    has: words outside it become [UNK]."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def test_openai_bpe_spells_cyrillic_in_bytes_and_letters(clip):
    russian, english = clip.token_coverage(RUSSIAN), clip.token_coverage(ENGLISH)
    assert all(c.covered for c in english) and [c.tokens for c in english] == [2, 2]   # one token per word
    assert not any(c.covered for c in russian)
    first = russian[0]
    # 11 letters, no word-level tokens: every token is one letter or a piece of one, none is a whole word
    assert first.letters == 11 and first.byte_pieces + first.lone_letters == first.tokens
    assert first.byte_pieces > 0 and first.tokens > 2 * len(RUSSIAN[0].split())
    kind = clip.text.token_kind
    ids = clip.tokenize(["кот"])[0]
    assert kind(int(ids[0])) == SPECIAL and {kind(int(i)) for i in ids[1:4]} <= {BYTES, LETTER}


def test_an_unknown_id_is_counted_and_known_words_are_covered():
    kind = token_classifier(_word_tokenizer(["кошка", "собака", "cat"]))
    tokenizer = _word_tokenizer(["кошка", "собака", "cat"])
    covered = token_coverage("кошка собака", tokenizer("кошка собака")["input_ids"], kind)
    assert covered.covered and covered.tokens == 2 and covered.unknown == 0
    unknown = token_coverage("猫 cat", tokenizer("猫 cat")["input_ids"], kind)
    assert not unknown.covered and unknown.unknown == 1 and unknown.tokens == 2
    assert kind(tokenizer.unk_token_id) == UNKNOWN and kind(tokenizer.convert_tokens_to_ids("cat")) == TEXT
    notice = coverage_notice("hf:example", [covered, unknown])
    assert "does not cover the CJK script" in notice and "1 of 2 text(s)" in notice and "1 unknown" in notice
    assert coverage_notice("hf:example", [covered]) is None


def test_zero_shot_and_similarity_say_which_labels_are_not_covered(clip):
    image = shapes.make_dataset(1, seed=880_011)[0].image
    result = zero_shot(clip, image, RUSSIAN + ENGLISH, cache=None)
    assert result.uncovered == RUSSIAN
    assert any("bundled:mini-clip's tokenizer does not cover the Cyrillic script: 2 of 4" in n for n in result.notices)
    assert zero_shot(clip, image, ENGLISH, cache=None).uncovered == []
    _, notice = image_text_similarity(clip, [image], RUSSIAN[:1])
    assert "does not cover the Cyrillic script" in notice
    assert image_text_similarity(clip, [image], ENGLISH[:1])[1] is None
