"""Views of the Zero-shot & Softmax tab: classify the image against labels, the sliders over that prediction's
logits, and the image-text similarity matrix with its probabilities (softmax along each axis, or SigLIP's
independent sigmoids)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.world import scenes
from viz.domain import domain_notes
from viz.softmax import apply_sliders, softmax_view
from viz.views import Figures, Subject, view
from viz.zero_shot import (
    DEFAULT_LABELS,
    DEFAULT_TEMPLATE,
    image_text_similarity,
    parse_labels,
    probability_notice,
    zero_shot,
)
from viz.zero_shot_figures import similarity_figure, softmax_halves_figure, softmax_sliders_figure, top_k_figure

MAX_SLIDERS = 8
SIMILARITY_SEED = 515_151  # held out: training seeds are >= shapes.TRAIN_SEED_START


def has_text(model) -> bool:
    return model.has_text


def classification(subject: Subject, labels: Sequence[str] | str = DEFAULT_LABELS,
                   templates: Sequence[str] = (DEFAULT_TEMPLATE,)):
    """The zero-shot result of the subject's image for these labels and templates (kept per subject)."""
    labels, templates = parse_labels(labels), list(templates)
    key = f"zero_shot:{labels!r}:{templates!r}"
    return subject.remember(key, lambda: zero_shot(subject.model, subject.require_image(), labels, templates))


def slider_classes(result, count: int = MAX_SLIDERS) -> list[int]:
    """The classes the sliders hold: the top ``count`` of the prediction."""
    return [result.labels.index(label) for label, _ in result.top(count)]


@view("zero_shot.classify", "Zero-shot", has_text)
def classify_view(subject: Subject, labels: Sequence[str] | str = DEFAULT_LABELS,
                  templates: Sequence[str] = (DEFAULT_TEMPLATE,), k: int = 5) -> Figures:
    """Zero-shot classification: the image's embedding against one (ensembled) text embedding per label."""
    result = classification(subject, labels, templates)
    prompts = ", ".join(f"“{t}”" for t in result.templates[:3]) + (" …" if len(result.templates) > 3 else "")
    bias = subject.model.logit_bias
    logits = f"{result.logit_scale:.2f} × cosine" + (f" + {bias:.2f}" if bias is not None else "")
    notes = [f"{len(result.labels)} labels × {len(result.templates)} template(s): {prompts}. Logits = {logits}; "
             f"the sliders below hold the top {min(MAX_SLIDERS, len(result.labels))}.",
             probability_notice(result.probability)]
    notes += [f"⚠️ {notice}" for notice in result.notices]
    notes = domain_notes(subject.model, [subject.image]) + notes  # what the model knows, next to its answer
    return {"top_k": top_k_figure(result, int(k)), "notice": "\n\n".join(notes)}


@view("zero_shot.sliders", "Zero-shot", has_text, checks=({}, {"values": [5.0], "log_t": 1.0}))
def sliders_view(subject: Subject, values: Sequence[float] | None = None, log_t: float = 0.0,
                 labels: Sequence[str] | str = DEFAULT_LABELS, templates: Sequence[str] = (DEFAULT_TEMPLATE,)
                 ) -> Figures:
    """The prediction's probabilities with some logits set by sliders (the top classes; default: the model's own
    logits) at temperature 10 ** log_t."""
    result = classification(subject, labels, templates)
    held = slider_classes(result)
    chosen = list(values) if values is not None else [float(result.logits[i]) for i in held]
    chosen += [float(result.logits[i]) for i in held[len(chosen):]]
    logits = apply_sliders(result.logits, held, chosen[:len(held)])
    temperature = float(10.0 ** float(log_t))
    shown = softmax_view(result.labels, logits, temperature, result.probability)
    scale = result.logit_scale / temperature
    entropy = (f"T = {temperature:.3g} (effective logit scale {scale:.3g}): entropy **{shown.entropy:.3f}** nats of "
               f"at most {shown.max_entropy:.3f}; probabilities sum to {shown.probabilities.sum():.6f}. "
               f"{probability_notice(result.probability)}")
    return {"probabilities": softmax_sliders_figure(shown, result.probabilities), "entropy": entropy}


def procedural_pairs(count: int) -> tuple[list, list[str], list[str]]:
    """``count`` one-object scenes of the bundled world with their captions (held-out seed)."""
    examples = scenes.make_scenes(int(count), SIMILARITY_SEED, split="any", n_objects=1)
    return [e.image for e in examples], [e.caption for e in examples], [f"shape {i}" for i in range(len(examples))]


@view("zero_shot.similarity", "Zero-shot", has_text, checks=({"count": 3},))
def similarity_view(subject: Subject, count: int = 6, images: Sequence | None = None,
                    texts: Sequence[str] | None = None, names: Sequence[str] | None = None) -> Figures:
    """Every image against every text (cosine), and the probabilities the model's loss reads from the logits."""
    model = subject.model
    if images is None:
        images, texts, names = procedural_pairs(count)
    images, texts = list(images), list(texts or [])
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    matrix, notice = image_text_similarity(model, images, texts)
    loss = matrix.contrastive_loss()
    notes = [f"{len(images)} images × {len(texts)} texts; logit scale {matrix.logit_scale:.2f}"
             + (f", bias {matrix.logit_bias:.2f}." if matrix.logit_bias is not None else ".")]
    if loss is not None and matrix.probability == "sigmoid":
        notes.append(f"Pairwise sigmoid loss with the diagonal as the matches: {loss[0]:.3f}.")
    elif loss is not None:
        notes.append(f"Symmetric contrastive loss with the diagonal as the answer: image→text {loss[0]:.3f}, "
                     f"text→image {loss[1]:.3f}, mean {np.mean(loss):.3f}.")
    notes.append(probability_notice(matrix.probability))
    if notice:
        notes.append(f"⚠️ {notice}")
    notes = domain_notes(model, images) + notes
    return {"similarity": similarity_figure(matrix, texts, images, names),
            "probabilities": softmax_halves_figure(matrix, texts, names), "notice": "\n\n".join(notes)}
