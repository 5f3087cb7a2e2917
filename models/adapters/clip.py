"""CLIP adapter: two towers and a shared embedding space.

The image tower is a :class:`ViTAdapter` or :class:`CNNAdapter` (``model.visual``); text-tower names carry the
``text.`` prefix (``text.blocks.N.resid_post``, ``text.blocks.N.attn.pattern`` with the causal mask,
``text.final_norm``, ``text_embed``). Unprefixed names refer to the image tower, so
``clip.capture(["blocks.*.attn.pattern"])`` reads image attention as it would on a plain ViT.

``encode_image`` / ``encode_text`` return the model's own, un-normalised embeddings; the logits CLIP trains with
are ``logit_scale.exp() * cosine``. Text longer than ``context_length`` tokens is truncated by the model's own
tokenizer; ``token_count`` / ``truncated`` say when that happens.

Text towers differ, and the layout says how (each backend reads it from the tower itself): ``causal`` (OpenAI-style
towers; SigLIP, MobileCLIP, CLIPA and Hugging Face encoders such as XLM-R are bidirectional), ``pooled_index`` (the
argmax id for OpenAI's tokenizer, the tokenizer's end-of-text id for mT5-style ones, the last position for SigLIP,
the appended class token for CoCa) and ``readout`` ("mean" for mean-pooled encoders).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.adapters.base import ModelAdapter
from models.adapters.capture import HookPoint
from models.adapters.stack import BlockStack, stack_points
from models.tokens import TokenCoverage, token_coverage


@dataclass(kw_only=True)
class TextLayout(BlockStack):
    """The native modules of a CLIP text tower."""

    token_embed: nn.Module
    final_norm: nn.Module | None   # None where the tower has no final norm of its own (post-norm towers)
    output: nn.Module | None   # projection module, or None when the projection is a bare parameter
    context_length: int
    vocab_size: int
    causal: bool = True        # OpenAI-style towers are causal; SigLIP, CLIPA and XLM-R towers are not
    # the position (in the blocks' sequence) whose last-block token becomes the text embedding, per text
    pooled_index: Callable[[torch.Tensor], torch.Tensor] = lambda ids: ids.argmax(dim=-1)  # the EOT token
    readout: str = "token"     # "token": the embedding reads the pooled_index token; "mean": the non-padding mean
    # the tokenizer's end-of-text id, where the pooled token is not the end of the text (a [CLS] at 0, SigLIP's last
    # padding position, CoCa's appended class token); None: the text ends at the pooled token (OpenAI, MetaCLIP 2)
    end_id: int | None = None
    # the tower's own final norm + projection applied to every last-block token (batch, n, width) -> (batch, n, dim)
    project_tokens: Callable[[torch.Tensor], torch.Tensor] | None = None
    token_text: Callable[[int], str] = str
    # id -> "special" / "unknown" / "bytes" / "letter" / "text" (models.tokens.token_classifier); None: cannot tell
    token_kind: Callable[[int], str] | None = None


class CLIPAdapter(ModelAdapter):
    """A CLIP model: ``visual`` (ViT or CNN adapter) + text tower + logit scale."""

    family = "clip"
    has_text = True

    def __init__(self, visual: ModelAdapter, text: TextLayout,
                 encode_text_tokens: Callable[[torch.Tensor], torch.Tensor],
                 tokenize: Callable[[Sequence[str]], torch.Tensor],
                 logit_scale: Callable[[], torch.Tensor],
                 logit_bias: Callable[[], torch.Tensor | None] = lambda: None,
                 count_tokens: Callable[[str], int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.visual = visual
        self.text = text
        self._encode_text_tokens = encode_text_tokens
        self._tokenize = tokenize
        self._logit_scale = logit_scale
        self._logit_bias = logit_bias
        self._count_tokens = count_tokens
        self.points.update(visual.points)
        self.sites.update(visual.sites)
        self.points["text.token_embed"] = HookPoint(text.token_embed)
        points, sites = stack_points(text, prefix="text.")
        self.points.update(points)
        self.sites.update(sites)
        if text.final_norm is not None:
            self.points["text.final_norm"] = HookPoint(text.final_norm)
        if text.output is not None:
            self.points["text_embed"] = HookPoint(text.output)
        # SigLIP-style models add a learned bias and score each (image, text) pair with an independent sigmoid
        self.probability = "sigmoid" if logit_bias() is not None else "softmax"
        # the image tower and the whole model share one autograd switch: a grad capture on either turns it on
        visual.run_context = self.run_context
        visual.lock = self.lock

    @property
    def image_tower(self) -> ModelAdapter:
        return self.visual

    def run_context(self):
        grad = self._grad_captures or self.visual._grad_captures
        return torch.enable_grad() if grad else torch.no_grad()

    # -- text -----------------------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (batch, context_length) with the model's own tokenizer; longer texts are truncated."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("tokenize got no texts.")
        return self._tokenize(texts).to(self.device)

    def token_count(self, text: str) -> int | None:
        """How many tokens ``text`` needs with this model's tokenizer, special tokens included, before truncation
        (None where the tokenizer cannot say)."""
        return None if self._count_tokens is None else int(self._count_tokens(text))

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """For each text: is it longer than the context length, so that the tokenizer cuts it?"""
        counts = [self.token_count(text) for text in texts]
        return [count is not None and count > self.context_length for count in counts]

    def _text_end(self, ids: torch.Tensor, pooled: int) -> int:
        """Position of the text's end-of-text token (the pooled one unless the tower names another end id)."""
        if self.text.end_id is None:
            return min(pooled, len(ids) - 1)
        hits = (ids == self.text.end_id).nonzero()
        return int(hits[0]) if len(hits) else len(ids) - 1

    def token_positions(self, ids: torch.Tensor) -> tuple[list[int], int]:
        """Positions of one tokenised text worth showing, and the pooled position: the text's real tokens up to and
        including its end-of-text token (no padding), then the pooled position where the tower reads its embedding
        from beyond them (SigLIP's last padding position, CoCa's class token appended after the text)."""
        ids = ids.reshape(-1)
        pooled = int(self.text.pooled_index(ids[None])[0])
        end = self._text_end(ids, pooled)
        positions = list(range(end + 1))
        return (positions if pooled <= end else positions + [pooled]), pooled

    def token_coverage(self, texts: Sequence[str]) -> list[TokenCoverage] | None:
        """For each text, how many of its tokens are unknown, byte pieces or lone letters: whether this model's
        tokenizer covers the text's script (None where the tokenizer cannot say)."""
        if self.text.token_kind is None:
            return None
        texts = list(texts)
        coverages = []
        for text, ids in zip(texts, self.tokenize(texts).cpu(), strict=True):
            positions, _ = self.token_positions(ids)
            shown = [int(ids[p]) for p in positions if p < len(ids)]
            coverages.append(token_coverage(text, shown, self.text.token_kind))
        return coverages

    def token_strings(self, ids: torch.Tensor) -> list[str]:
        """The shown tokens of one tokenised text (see :meth:`token_positions`), as text; a pooled position past
        the text is marked "(pooled)", CoCa's appended class token is "<cls>"."""
        ids = ids.reshape(-1)
        positions, pooled = self.token_positions(ids)
        strings = [self.text.token_text(int(ids[p])) for p in positions if p < len(ids)]
        if pooled >= len(ids):
            strings.append("<cls>")
        elif pooled > self._text_end(ids, pooled):
            strings[-1] += " (pooled)"
        return strings

    def encode_text(self, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Text embeddings (batch, dim), not normalised. Takes strings or token ids."""
        tokens = texts if torch.is_tensor(texts) else self.tokenize(texts)
        with self.lock, self.run_context():
            return self._encode_text_tokens(tokens.to(self.device))

    # -- images ---------------------------------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings (batch, dim), not normalised."""
        return self.visual.forward(pixels)

    # -- joint space ----------------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        """exp(learned log-temperature): logits = logit_scale * cosine."""
        return float(self._logit_scale().detach().exp().reshape(-1)[0])

    @property
    def logit_bias(self) -> float | None:
        bias = self._logit_bias()
        return None if bias is None else float(bias.detach().reshape(-1)[0])

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(images, texts) logits exactly as the model computes them: scale * cosine (+ bias for SigLIP)."""
        image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
        text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
        logits = self.logit_scale * image_features @ text_features.T
        return logits + self.logit_bias if self.logit_bias is not None else logits

    def facts(self) -> dict:
        facts = {k: v for k, v in self.visual.facts().items() if k not in ("id", "family", "backend", "class")}
        facts = {**super().facts(), **facts, "parameters": self.num_parameters}
        facts.update({
            "image tower": f"{self.visual.family} ({self.visual.num_parameters:,} parameters)",
            "text layers": len(self.text.blocks),
            "context length": self.context_length,
            "vocab size": self.vocab_size,
            "logit scale": round(self.logit_scale, 4),
        })
        return facts


# -- text layouts, one per backend -----------------------------------------------------------------------------------
