"""Views of the Embedding space tab: the joint image-text map (UMAP / PCA) with the modality gap, text search in
the original space, and zero-shot evaluation of labelled images. They read an :class:`EmbeddingSet`: passed in (e.g.
read from a ``models.embed`` output folder), or procedural shapes embedded by the subject's model (kept)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models import shapes
from models.embed import DEFAULT_CLASS_TEMPLATE, EmbeddingSet, ImageItem, embed_set, embed_texts
from viz.embedding_figures import confusion_figure, embedding_map_figure, modality_gap_figure, per_class_accuracy_figure
from viz.embedding_space import class_scores, evaluate_zero_shot, modality_gap, pair_similarities, project, retrieve
from viz.views import Figures, Subject, view
from viz.zero_shot import truncation_notice

EXPLORER_SEED = 616_161  # held out: training seeds are >= shapes.TRAIN_SEED_START
COLOURS = {"modality": "modality", "label": "label", "zero-shot prediction": "prediction"}
SMALL_SET = {"count": 8, "method": "PCA"}   # the check: a few images, no UMAP JIT


def has_text(model) -> bool:
    return model.has_text


def procedural_items(count: int, seed: int = EXPLORER_SEED) -> list[ImageItem]:
    """``count`` procedural shapes with labels and captions, from a held-out seed."""
    if not 0 <= int(seed) < shapes.TRAIN_SEED_START:
        raise ValueError(f"Use a seed in [0, {shapes.TRAIN_SEED_START}) (held out from training).")
    return [ImageItem(e.image, e.label, e.caption, f"shapes {seed}#{i}")
            for i, e in enumerate(shapes.make_dataset(int(count), seed=int(seed)))]


def procedural_set(subject: Subject, count: int = 120, seed: int = EXPLORER_SEED) -> EmbeddingSet:
    """Procedural shapes, their captions and class prompts embedded by the subject's model (kept per subject)."""
    return subject.remember(f"embedding:{int(count)}:{int(seed)}", lambda: embed_set(
        subject.model, procedural_items(count, seed), template=DEFAULT_CLASS_TEMPLATE))


def predictions(es: EmbeddingSet) -> list[str] | None:
    """Each image's zero-shot class among the set's class prompts (None when the set has none)."""
    if not es.class_text:
        return None
    rows = [es.class_text[name] for name in es.class_names]
    best = class_scores(es.image_embeddings, es.text_embeddings[rows]).argmax(axis=1)
    return [es.class_names[i] for i in best]


NO_CAPTIONS = ("No image has a caption, so the modality gap is not measured: as in “Mind the Gap” (Liang et al., "
               "2022) it is the distance between paired image and caption embeddings, class prompts left out.")


def gap_outputs(es: EmbeddingSet):
    """The gap figure and a sentence, or (None, reason) when the set has no image-text pairs. The gap is measured on
    the image-caption pairs only; without captions the histograms pair each image with its class prompt instead and
    no gap is given."""
    if not len(es.texts):
        return None, "No texts: type class labels to add text points and measure the modality gap."
    captioned = (es.image_caption >= 0).any()
    gap = modality_gap(es.image_embeddings, es.text_embeddings, es.image_caption) if captioned else None
    pairs = es.image_caption
    if not captioned and es.class_text:  # an image's matching text is its class prompt
        pairs = np.array([es.class_text.get(label, -1) if label else -1 for label in es.labels])
    if (pairs < 0).all():
        return None, f"{NO_CAPTIONS} No image has a class label either: there are no image-text pairs to compare."
    similarities = pair_similarities(es.image_embeddings, es.text_embeddings, pairs)
    cosines = (f"matching pairs' mean cosine {similarities.matching.mean():.3f}, non-matching "
               f"{similarities.non_matching.mean():.3f}.")
    if gap is None:
        return modality_gap_figure(similarities, None), f"{NO_CAPTIONS} Image-class-prompt {cosines}"
    return (modality_gap_figure(similarities, gap),
            f"Modality gap ‖mean image − mean caption‖ over {gap.pairs} paired image-caption embeddings = "
            f"**{gap.length:.3f}**; {cosines}")


@view("embedding.map", "Embedding space", has_text, checks=(SMALL_SET, {**SMALL_SET, "colour": "zero-shot prediction",
                                                                      "remove_gap": True}))
def map_view(subject: Subject, embedding_set: EmbeddingSet | None = None, count: int = 120,
             seed: int = EXPLORER_SEED, method: str = "UMAP", colour: str = "label", remove_gap: bool = False,
             lines: bool = True, highlight: Sequence[int] = ()) -> Figures:
    """Images and texts on a 2-D map of the joint space, and the modality gap between them."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    mode = COLOURS.get(colour, colour)
    predicted = predictions(es)
    if mode == "prediction" and predicted is None:
        raise ValueError("This set has no class labels to predict: type some class labels and press Embed again.")
    projection = project(es.image_embeddings, es.text_embeddings, method.lower(), bool(remove_gap))
    gap_figure, gap_note = gap_outputs(es)
    return {"map": embedding_map_figure(es, projection, mode, predicted, list(highlight), bool(lines)),
            "gap": gap_figure, "gap_note": gap_note}


@view("embedding.search", "Embedding space", has_text, checks=({"count": SMALL_SET["count"], "k": 3},))
def search_view(subject: Subject, query: str = "a red circle", k: int = 8, embedding_set: EmbeddingSet | None = None,
                count: int = 120, seed: int = EXPLORER_SEED) -> Figures:
    """The k images nearest to a text query, found in the original space (best first, with their cosine)."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    query = (query or "").strip()
    if not query:
        raise ValueError("Type a text query, e.g. “a red circle”.")
    vector = embed_texts(subject.model, [query])[0]
    order, scores = retrieve(vector, es.image_embeddings, int(k))
    gallery = []
    for rank, (index, score) in enumerate(zip(order, scores, strict=True), start=1):
        item = es.images[index]
        if item.source is not None:
            image = item.open().convert("RGB")
            image.thumbnail((128, 128))
            gallery.append((image, f"{rank}. {score:.3f} {item.caption or item.label or item.name}"))
    info = f"Top {len(order)} images for “{query}” by cosine in the original {len(vector)}-d space."
    notice = truncation_notice(subject.model, [query])
    if notice:
        info += f"\n\n⚠️ {notice}"
    return {"gallery": gallery, "info": info, "highlight": order.tolist()}


@view("embedding.evaluate", "Embedding space", has_text, checks=({"count": SMALL_SET["count"]},))
def evaluate_view(subject: Subject, embedding_set: EmbeddingSet | None = None, count: int = 120,
                  seed: int = EXPLORER_SEED) -> Figures:
    """Zero-shot accuracy of the labelled images against the class prompts: top-1, top-5, per class, confusion."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    if not es.class_text:
        raise ValueError("The images have no labels: evaluate a labelled folder (one subfolder per class) or "
                         "the procedural shapes.")
    rows = [es.class_text[name] for name in es.class_names]
    evaluation = evaluate_zero_shot(es.image_embeddings, es.labels, es.class_names, es.text_embeddings[rows])
    worst = evaluation.worst_first[:3]
    summary = (f"Zero-shot over {len(es.class_names)} classes ({len(evaluation.truth)} labelled images, "
               f"prompt “{es.template}”): top-1 **{evaluation.top1:.1%}**, top-5 **{evaluation.top5:.1%}**. "
               "Worst: " + ", ".join(f"{evaluation.class_names[i]} {evaluation.per_class[i]:.0%}" for i in worst))
    return {"summary": summary, "per_class": per_class_accuracy_figure(evaluation),
            "confusion": confusion_figure(evaluation)}
