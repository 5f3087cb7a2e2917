"""Does a text tower's tokenizer cover a text's script? Unknown tokens and byte pieces, counted per text.

A tokenizer that was not trained on a script still turns it into ids, silently: OpenAI's CLIP BPE spells Cyrillic
out letter by letter and falls back to raw UTF-8 bytes for letters it has no token for; a SentencePiece or WordPiece
vocabulary without the script maps it to its unknown id. Either way the text embedding means little, and the user
should be told. This module reads only the tokenizer's own ``decode``, special ids and unknown id.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

REPLACEMENT = "\ufffd"   # what decoding a lone piece of a multi-byte character gives
SPECIAL, UNKNOWN, BYTES, LETTER, TEXT = "special", "unknown", "bytes", "letter", "text"
# scripts whose covering tokenizers still give about one token per character: single characters are normal there
CHARACTER_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC")


def _tokenizer_of(tokenizer):
    """The object that decodes: open_clip's HFTokenizer wraps a transformers tokenizer in ``.tokenizer``."""
    inner = getattr(tokenizer, "tokenizer", None)
    return inner if inner is not None and hasattr(inner, "decode") else tokenizer


def token_classifier(tokenizer) -> Callable[[int], str] | None:
    """A function id -> kind ("special", "unknown", "bytes": a piece of a character, "letter": one non-ASCII letter
    on its own, or "text") for an open_clip SimpleTokenizer or a transformers tokenizer; None if it cannot decode."""
    tokenizer = _tokenizer_of(tokenizer)
    if not hasattr(tokenizer, "decode"):
        return None
    specials = set(getattr(tokenizer, "all_special_ids", None) or [])
    unknown = getattr(tokenizer, "unk_token_id", None)
    specials.discard(unknown)

    def kind(token_id: int) -> str:
        token_id = int(token_id)
        if token_id == unknown:
            return UNKNOWN
        if token_id in specials:
            return SPECIAL
        text = tokenizer.decode([token_id]).strip()
        if REPLACEMENT in text:
            return BYTES
        if len(text) == 1 and not text.isascii() and text.isalpha() and not _character_script(text):
            return LETTER
        return TEXT
    return kind


def _character_script(char: str) -> bool:
    return unicodedata.name(char, "").startswith(CHARACTER_SCRIPTS)


def script_names(text: str) -> list[str]:
    """The non-Latin scripts of a text's letters, most frequent first ("CYRILLIC", "ARABIC", ...)."""
    scripts = Counter(unicodedata.name(c, "?").split()[0] for c in text if c.isalpha() and not c.isascii())
    return [name for name, _ in scripts.most_common() if name != "LATIN"]


@dataclass(frozen=True)
class TokenCoverage:
    """How one text tokenised: its tokens (specials left out) and how many are unknown, byte pieces or lone
    letters (a word spelled out one letter per token)."""

    text: str
    tokens: int
    unknown: int
    byte_pieces: int
    lone_letters: int
    letters: int          # non-ASCII letters in the text

    @property
    def covered(self) -> bool:
        """False when some token is unknown or a byte piece, or when most non-ASCII letters stand alone."""
        if self.unknown or self.byte_pieces:
            return False
        return not (self.letters >= 2 and self.lone_letters >= 0.5 * self.letters)

    def describe(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.unknown, "unknown"), (self.byte_pieces, "byte pieces"),
                                               (self.lone_letters, "single letters")) if n]
        return f"“{self.text}”: {self.tokens} tokens, " + ", ".join(parts)


def token_coverage(text: str, ids: Sequence[int], kind: Callable[[int], str]) -> TokenCoverage:
    """Count the kinds of ``ids`` (one text's tokens; specials and padding are left out by ``kind``)."""
    kinds = [kind(int(i)) for i in ids]
    kinds = [k for k in kinds if k != SPECIAL]
    letters = sum(1 for c in text if c.isalpha() and not c.isascii() and not _character_script(c))
    return TokenCoverage(text, len(kinds), kinds.count(UNKNOWN), kinds.count(BYTES), kinds.count(LETTER), letters)


def coverage_notice(model_id: str, coverages: Sequence[TokenCoverage], limit: int = 3) -> str | None:
    """One sentence naming the texts the tokenizer does not cover (and their scripts), or None if it covers all."""
    poor = [c for c in coverages if not c.covered]
    if not poor:
        return None
    scripts = list(dict.fromkeys(s if s == "CJK" else s.title() for c in poor for s in script_names(c.text)))
    what = (f"the {', '.join(scripts)} script{'s' if len(scripts) > 1 else ''}" if scripts else "these characters")
    more = f"; and {len(poor) - limit} more" if len(poor) > limit else ""
    shown = "; ".join(c.describe() for c in poor[:limit]) + more
    return (f"{model_id}'s tokenizer does not cover {what}: "
            f"{len(poor)} of {len(coverages)} text(s) become unknown tokens, raw byte pieces or single letters "
            f"({shown}). Their embeddings mean little; use a multilingual model or labels in a covered script.")
