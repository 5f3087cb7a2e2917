"""Zero-shot classification and the image-text similarity matrix of a CLIP model.

Class text features come from prompt templates: one template ("a photo of a {}."), a custom one, or an ensemble,
where each template's text embedding is normalised, the embeddings are averaged over templates and the average is
normalised again (as CLIP's authors did). Text features are cached per (model, labels, templates), so changing the
image costs one image forward. Prompts longer than the model's context length are truncated by the model's own
tokenizer and reported in a notice.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.embed import fill_template
from models.tokens import coverage_notice
from viz.softmax import sigmoid, softmax

DEFAULT_TEMPLATE = "a photo of a {}."
# the labels a tab starts with: the default example's two objects (ui.examples.DEFAULT_EXAMPLE: a purple cross and
# a blue triangle), their colour swaps (does the model bind colour to shape?) and four other classes
DEFAULT_LABELS: tuple[str, ...] = ("purple cross", "blue triangle", "blue cross", "purple triangle", "red circle",
                                   "green square", "yellow star", "orange heart")
ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a photo of the {}.",
    "a {}.",
)
TEXT_BATCH = 256


class NotCLIPError(ValueError):
    """The model has no text tower, so it cannot do zero-shot classification or joint-space views."""


def require_clip(model) -> None:
    """Raise NotCLIPError unless ``model`` has a text tower (a CLIP-style model)."""
    if not getattr(model, "has_text", False):
        raise NotCLIPError(f"{model.model_id} is not CLIP (it has no text tower): zero-shot and the joint "
                           "image-text space need one. Pick a CLIP model such as bundled:mini-clip.")


# ---------------------------------------------------------------------------------------------------- prompts

def parse_labels(text: str | Sequence[str] | None) -> list[str]:
    """Labels typed one per line or comma-separated: stripped, empty ones dropped, duplicates removed (in order)."""
    if text is None:
        pieces: list[str] = []
    elif isinstance(text, str):
        pieces = re.split(r"[\n,]", text)
    else:
        pieces = list(text)
    labels = list(dict.fromkeys(p.strip() for p in pieces if p and p.strip()))
    if not labels:
        raise ValueError("Type at least one label (one per line or comma-separated).")
    return labels


def parse_templates(text: str | Sequence[str] | None) -> list[str]:
    """Templates typed one per line; each must hold "{}" where the label goes."""
    lines = text.splitlines() if isinstance(text, str) else list(text or [])
    templates = list(dict.fromkeys(t.strip() for t in lines if t and t.strip()))
    if not templates:
        raise ValueError('Type at least one template, e.g. "a photo of a {}."')
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f'Template {template!r} must hold "{{}}" exactly once, where the label goes.')
    return templates


def prompts_for(labels: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """prompts[t][c]: template t filled with label c."""
    return [[fill_template(t, label) for label in labels] for t in templates]


def truncation_notice(model, texts: Sequence[str], limit: int = 3) -> str | None:
    """A sentence naming the texts the model's tokenizer cuts at its context length, or None if none are cut."""
    cut = [text for text, is_cut in zip(texts, model.truncated(texts), strict=True) if is_cut]
    if not cut:
        return None
    shown = "; ".join(f"“{text[:60]}{'…' if len(text) > 60 else ''}” ({model.token_count(text)} tokens)"
                      for text in cut[:limit])
    more = f" and {len(cut) - limit} more" if len(cut) > limit else ""
    return (f"{len(cut)} text(s) longer than this model's context of {model.context_length} tokens were truncated "
            f"to fit: {shown}{more}.")


def script_coverage(model, texts: Sequence[str]) -> tuple[list[str], str | None]:
    """The texts the model's tokenizer does not cover (unknown tokens, byte pieces, letters spelled one by one) and
    a sentence saying so naming their script, or ([], None) where it covers them all or cannot tell."""
    coverages = model.token_coverage(list(texts))
    if not coverages:
        return [], None
    return [c.text for c in coverages if not c.covered], coverage_notice(model.model_id, coverages)


# ---------------------------------------------------------------------------------------------------- text features

@torch.no_grad()
def encode_texts(model, texts: Sequence[str], batch_size: int = TEXT_BATCH) -> torch.Tensor:
    """L2-normalised text embeddings (len(texts), dim), float32 on the CPU."""
    chunks = [model.encode_text(list(texts[i:i + batch_size])).float().cpu()
              for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


def ensemble(per_template: torch.Tensor) -> torch.Tensor:
    """(templates, classes, dim) embeddings -> (classes, dim): normalise each, average over templates, renormalise."""
    return F.normalize(F.normalize(per_template.float(), dim=-1).mean(dim=0), dim=-1)


@dataclass
class ClassTextFeatures:
    """Normalised class embeddings (classes, dim) for some labels under some templates."""

    labels: list[str]
    templates: list[str]
    features: torch.Tensor
    notice: str | None = None   # which prompts were truncated, if any
    uncovered: list[str] = field(default_factory=list)   # labels the tokenizer does not cover (models.tokens)
    script_notice: str | None = None                     # ... said in a sentence


def class_text_features(model, labels: Sequence[str], templates: Sequence[str]) -> ClassTextFeatures:
    """Encode every (template, label) prompt in one batched pass and ensemble over templates."""
    require_clip(model)
    labels, templates = list(labels), list(templates)
    prompts = prompts_for(labels, templates)
    flat = [p for row in prompts for p in row]
    embeddings = encode_texts(model, flat).reshape(len(templates), len(labels), -1)
    uncovered, script_notice = script_coverage(model, labels)  # the labels, not the (English) templates around them
    return ClassTextFeatures(labels, templates, ensemble(embeddings), truncation_notice(model, flat), uncovered,
                             script_notice)


class TextFeatureCache:
    """Class text features kept per (model, device, dtype, labels, templates); least recently used dropped first."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple, ClassTextFeatures] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(model, labels: Sequence[str], templates: Sequence[str]) -> tuple:
        return (model.model_id, str(model.device), str(model.dtype), tuple(labels), tuple(templates))

    def get(self, model, labels: Sequence[str], templates: Sequence[str]) -> ClassTextFeatures:
        key = self.key(model, labels, templates)
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return self._items[key]
        features = class_text_features(model, labels, templates)
        with self._lock:
            self.misses += 1
            self._items[key] = features
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return features

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


TEXT_FEATURES = TextFeatureCache()


# ---------------------------------------------------------------------------------------------------- classification

@dataclass
class ZeroShotResult:
    """One image against some labels: cosine, logits (scale * cosine + bias) and softmax probabilities per label."""

    labels: list[str]
    templates: list[str]
    cosine: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    logit_scale: float
    notices: list[str] = field(default_factory=list)
    probability: str = "softmax"   # how logits became probabilities: "softmax" over labels, or "sigmoid" each
    uncovered: list[str] = field(default_factory=list)   # labels the model's tokenizer does not cover

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable labels with their probabilities, best first."""
        order = np.argsort(-self.probabilities, kind="stable")[:max(1, int(k))]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


@torch.no_grad()
def encode_images(model, images: Sequence[Image.Image]) -> torch.Tensor:
    """L2-normalised image embeddings (len(images), dim), float32 on the CPU."""
    return F.normalize(model.encode_image(model.pixels(list(images))).float().cpu(), dim=-1)


def zero_shot(model, image: Image.Image, labels: Sequence[str], templates: Sequence[str] = (DEFAULT_TEMPLATE,),
              cache: TextFeatureCache | None = TEXT_FEATURES) -> ZeroShotResult:
    """Classify ``image`` among ``labels`` with the model's own logits and softmax."""
    require_clip(model)
    if image is None:
        raise ValueError("Upload an image or pick an example first.")
    labels, templates = parse_labels(labels), parse_templates(templates)
    text = cache.get(model, labels, templates) if cache is not None else class_text_features(model, labels, templates)
    cosine = (encode_images(model, [image]) @ text.features.T)[0].double().numpy()
    bias = model.logit_bias or 0.0
    logits = model.logit_scale * cosine + bias
    probabilities = model.probabilities(torch.from_numpy(logits)).numpy()
    notices = [n for n in (text.script_notice, text.notice) if n]
    return ZeroShotResult(labels, templates, cosine, logits, probabilities, model.logit_scale, notices,
                          model.probability, text.uncovered)


def probability_notice(probability: str) -> str:
    """One sentence saying how the shown probabilities come from the logits."""
    if probability == "sigmoid":
        return "Sigmoid per label (SigLIP): probabilities need not sum to 1."
    return "Softmax over the labels: probabilities sum to 1."


# ---------------------------------------------------------------------------------------------------- similarity

@dataclass
class SimilarityMatrix:
    """Images x texts: cosine, logits, and the two softmaxes of CLIP's symmetric contrastive loss.

    ``image_to_text`` is the softmax of each row (an image choosing among the texts); ``text_to_image`` the softmax
    of each column (a text choosing among the images). With matching pairs on the diagonal the loss is the mean of
    the two halves' cross-entropies.
    """

    cosine: np.ndarray          # (images, texts)
    logit_scale: float
    logits: np.ndarray
    image_to_text: np.ndarray   # rows sum to 1 (sigmoid: each pair's own probability)
    text_to_image: np.ndarray   # columns sum to 1 (sigmoid: the same matrix)
    logit_bias: float | None = None
    probability: str = "softmax"

    def contrastive_loss(self) -> tuple[float, float] | None:
        """(image->text, text->image) cross-entropy with the diagonal as the answer; None unless square. For
        sigmoid models SigLIP's pairwise loss, mean over pairs of -log sigmoid(+-logit), in both places."""
        n, m = self.cosine.shape
        if n != m:
            return None
        diagonal = np.arange(n)
        if self.probability == "sigmoid":
            signs = np.where(np.eye(n, dtype=bool), 1.0, -1.0)
            loss = float(np.logaddexp(0.0, -signs * self.logits).sum(axis=1).mean())
            return loss, loss
        return (float(-np.log(self.image_to_text[diagonal, diagonal]).mean()),
                float(-np.log(self.text_to_image[diagonal, diagonal]).mean()))


def similarity_matrix(image_features: torch.Tensor | np.ndarray, text_features: torch.Tensor | np.ndarray,
                      logit_scale: float, logit_bias: float | None = None,
                      probability: str = "softmax") -> SimilarityMatrix:
    """Cosine similarities of every image with every text, and the probabilities of scale * cosine (+ bias): the
    softmax along each axis, or (SigLIP) each pair's own sigmoid."""
    images = F.normalize(torch.as_tensor(np.asarray(image_features), dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.as_tensor(np.asarray(text_features), dtype=torch.float64), dim=-1)
    if images.shape[0] == 0 or texts.shape[0] == 0:
        raise ValueError("The similarity matrix needs at least one image and one text.")
    cosine = (images @ texts.T).numpy()
    logits = logit_scale * cosine + (logit_bias or 0.0)
    if probability == "sigmoid":
        pairs = sigmoid(logits)
        return SimilarityMatrix(cosine, float(logit_scale), logits, pairs, pairs, logit_bias, probability)
    return SimilarityMatrix(cosine, float(logit_scale), logits, softmax(logits, axis=1), softmax(logits, axis=0),
                            logit_bias, probability)


def image_text_similarity(model, images: Sequence[Image.Image], texts: Sequence[str]) -> tuple[SimilarityMatrix,
                                                                                                  str | None]:
    """Encode images and texts with ``model`` and build their similarity matrix (plus a truncation notice)."""
    require_clip(model)
    texts = [t.strip() for t in texts if t and t.strip()]
    if not images:
        raise ValueError("Add at least one image.")
    if not texts:
        raise ValueError("Type at least one text (one per line).")
    matrix = similarity_matrix(encode_images(model, images), encode_texts(model, texts), model.logit_scale,
                               model.logit_bias, model.probability)
    notices = [n for n in (script_coverage(model, texts)[1], truncation_notice(model, texts)) if n]
    return matrix, " ".join(notices) or None
