"""Views of the Embedding space tab: the joint image-text map (UMAP / PCA) with the modality gap, text search in
the original space, and zero-shot evaluation of labelled images. They read an :class:`EmbeddingSet`: passed in (e.g.
read from a ``models.embed`` output folder), or procedural shapes embedded by the subject's model (kept)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models import shapes
from models.embed import DEFAULT_CLASS_TEMPLATE, EmbeddingSet, ImageItem, embed_set, embed_texts
from models.world import scenes
from viz.clusters import Clustering, clusters_in_words, density_contours
from viz.domain import domain_notes
from viz.embedding_figures import confusion_figure, embedding_map_figure, modality_gap_figure, per_class_accuracy_figure
from viz.embedding_space import class_scores, evaluate_zero_shot, modality_gap, pair_similarities, project
from viz.map_payload import KINDS, PointMap, categories, group_colours, screen_transform
from viz.neighbours import INDEXES, nearest
from viz.views import Figures, Subject, view
from viz.zero_shot import truncation_notice

EXPLORER_SEED = 616_161  # held out: training seeds are >= shapes.TRAIN_SEED_START
COLOURS = {"modality": "modality", "label": "label", "zero-shot prediction": "prediction", "cluster": "cluster"}
WEBGL_FROM = 5_000   # points (images + texts) from which the map is drawn by WebGL (Plotly JSON is ~1.1 MB at 5k)
MODALITY_COLOURS = {"images": "#1f77b4", "captions": "#ff7f0e", "class prompts": "#2ca02c"}
DOMAIN_SAMPLE = 16   # images of a set looked at to tell photographs from the procedural world
SMALL_SET = {"count": 8, "method": "PCA"}   # the check: a few images, no UMAP JIT


def has_text(model) -> bool:
    return model.has_text


def procedural_items(count: int, seed: int = EXPLORER_SEED) -> list[ImageItem]:
    """``count`` one-object scenes of the bundled world (any of the 36 classes, random position, size, rotation and
    background) with their labels and captions, from a held-out seed."""
    if not 0 <= int(seed) < shapes.TRAIN_SEED_START:
        raise ValueError(f"Use a seed in [0, {shapes.TRAIN_SEED_START}) (held out from training).")
    return [ImageItem(e.image, e.label, e.caption, f"scene {seed}#{i}")
            for i, e in enumerate(scenes.make_scenes(int(count), int(seed), split="any", n_objects=1))]


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
             lines: bool = True, highlight: Sequence[int] = (), vocabulary: Sequence[str] = ()) -> Figures:
    """Images and texts on a 2-D map of the joint space (clusters named at their centres), and the modality gap."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    mode = COLOURS.get(colour, colour)
    predicted = predictions(es)
    if mode == "prediction" and predicted is None:
        raise ValueError("This set has no class labels to predict: type some class labels and press Embed again.")
    projection = project(es.image_embeddings, es.text_embeddings, method.lower(), bool(remove_gap))
    clustering = cluster_names(subject, es, projection.image_coords, vocabulary) if len(es.images) >= 5 else None
    groups = None
    if mode == "cluster":
        if clustering is None:
            raise ValueError("Clusters need at least 5 images.")
        groups = _joint_groups(es, mode, predicted, clustering)[0][:len(es.images)]
    labels = [(c.name, float(c.centre[0]), float(c.centre[1])) for c in clustering.clusters] if clustering else []
    gap_figure, gap_note = gap_outputs(es)
    figure = embedding_map_figure(es, projection, mode, predicted, list(highlight), bool(lines), clusters=groups,
                                  cluster_labels=labels)
    return {"map": figure, "gap": gap_figure, "gap_note": gap_note}


@view("embedding.gap", "Embedding space", has_text, checks=({"count": SMALL_SET["count"]},))
def gap_view(subject: Subject, embedding_set: EmbeddingSet | None = None, count: int = 120,
             seed: int = EXPLORER_SEED) -> Figures:
    """The modality gap: histograms of matching and non-matching pairs' cosine, and a sentence with the gap."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    gap_figure, gap_note = gap_outputs(es)
    return {"gap": gap_figure, "gap_note": gap_note}


@view("embedding.search", "Embedding space", has_text, checks=({"count": SMALL_SET["count"], "k": 3},))
def search_view(subject: Subject, query: str = "a red circle", k: int = 8, embedding_set: EmbeddingSet | None = None,
                count: int = 120, seed: int = EXPLORER_SEED) -> Figures:
    """The k images nearest to a text query, found in the original space (best first, with their cosine)."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    query = (query or "").strip()
    if not query:
        raise ValueError("Type a text query, e.g. “a red circle”.")
    vector = embed_texts(subject.model, [query])[0]
    order, scores = nearest(vector, es.image_embeddings, int(k))
    gallery = []
    for rank, (index, score) in enumerate(zip(order, scores, strict=True), start=1):
        item = es.images[index]
        if item.source is not None:
            image = item.open().convert("RGB")
            image.thumbnail((128, 128))
            gallery.append((image, f"{rank}. {score:.3f} {item.caption or item.label or item.name}"))
    info = (f"Top {len(order)} images for “{query}” by cosine in the original {len(vector)}-d space "
            f"({INDEXES.get(es.image_embeddings).kind}).")
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
    if subject.model is not None:   # what the model knows (a set read from disk comes without its model)
        pictures = [item.open() for item in es.images[:DOMAIN_SAMPLE] if item.source is not None]
        summary = "\n\n".join([summary, *domain_notes(subject.model, pictures)])
    return {"summary": summary, "per_class": per_class_accuracy_figure(evaluation),
            "confusion": confusion_figure(evaluation)}


def joint_vectors(subject: Subject, es: EmbeddingSet) -> np.ndarray:
    """Every point's raw embedding (images, then texts) as one array, kept per subject and set (the neighbour index
    normalises what it indexes)."""
    def build() -> np.ndarray:
        dims = es.image_embeddings.shape[1] if len(es.image_embeddings) else es.text_embeddings.shape[1]
        return np.concatenate([np.asarray(es.image_embeddings, np.float32).reshape(-1, dims),
                               np.asarray(es.text_embeddings, np.float32).reshape(-1, dims)])
    return subject.remember(f"joint:{id(es)}", build)


def point_name(es: EmbeddingSet, index: int) -> str:
    """'image 3 (a red circle)' or 'text 2 (caption: ...)': one joint point, as the map's hover names it."""
    if index < len(es.images):
        item = es.images[index]
        return f"image {index} ({item.caption or item.label or item.name})"
    j = index - len(es.images)
    return f"text {j} ({es.text_kinds[j]}: {es.texts[j]})"


@view("embedding.neighbours", "Embedding space", has_text,
      checks=({"count": SMALL_SET["count"], "point": 0, "k": 3},))
def neighbours_view(subject: Subject, point: int = 0, k: int = 8, embedding_set: EmbeddingSet | None = None,
                    count: int = 120, seed: int = EXPLORER_SEED) -> Figures:
    """The ``k`` points (images or texts) nearest to one point of the map, by cosine in the original joint space
    (not on the map, whose distances a projection distorts), best first: what "isolate" shows."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    total = len(es.images) + len(es.texts)
    if not 0 <= int(point) < total:
        raise ValueError(f"Point {point} does not exist: the map has points 0 to {total - 1}.")
    if not 1 <= int(k) < total:
        raise ValueError(f"Ask for 1 to {total - 1} neighbours, not {k}.")
    vectors = joint_vectors(subject, es)
    order, scores = INDEXES.get(vectors).neighbours_of(int(point), int(k), vectors)
    listed = "; ".join(f"{rank}. {point_name(es, int(i))} {score:.3f}"
                       for rank, (i, score) in enumerate(zip(order[:10], scores[:10], strict=True), start=1))
    info = (f"The {len(order)} points nearest to {point_name(es, int(point))} by cosine in the original "
            f"{vectors.shape[1]}-d space ({INDEXES.get(vectors).kind}): {listed}"
            + ("; …" if len(order) > 10 else "") + ". The map shows only them; **Show all points** brings back the "
            "rest.")
    return {"neighbours": [int(i) for i in order], "scores": [float(x) for x in scores], "info": info}


def selection_summary(es: EmbeddingSet, rows: Sequence[int]) -> str:
    """What a lasso or box caught: how many images and texts, and their most common labels."""
    rows = np.asarray(rows, dtype=np.int64)
    images = rows[rows < len(es.images)]
    texts = rows[rows >= len(es.images)] - len(es.images)
    labels = [es.images[i].label for i in images if es.images[i].label]
    common = ""
    if labels:
        values, counts = np.unique(labels, return_counts=True)
        top = np.argsort(-counts, kind="stable")[:5]
        common = " Most common labels: " + ", ".join(f"{values[i]} ({counts[i]})" for i in top) + "."
    def count(n: int, word: str) -> str:
        return f"{n:,} {word}{'' if n == 1 else 's'}"
    return (f"**{count(len(rows), 'point')} selected**: {count(len(images), 'image')} and "
            f"{count(len(texts), 'text')}.{common}")


def use_webgl(es: EmbeddingSet) -> bool:
    """Whether the set's map is drawn by WebGL (from :data:`WEBGL_FROM` points) rather than by Plotly."""
    return len(es.images) + len(es.texts) >= WEBGL_FROM


def cluster_names(subject: Subject, es: EmbeddingSet, coords: np.ndarray, vocabulary: Sequence[str] = ()
                  ) -> Clustering:
    """Clusters of the images on the map, named by the nearest text: of ``vocabulary`` (embedded by the subject's
    model) when given, else of the set's class prompts, shown by their class (its captions when it has none). Kept
    per subject."""
    words = [w for w in vocabulary if w.strip()]
    key = f"clusters:{id(es)}:{hash(coords.tobytes())}:{hash(tuple(words))}"

    def build() -> Clustering:
        if words:
            if subject.model is None:
                raise ValueError("Naming clusters with your own words needs the set's model.")
            texts, vectors = words, embed_texts(subject.model, words)
        elif len(es.texts):   # the class prompts name clusters best (captions also say where and on what)
            prompts = [i for i, kind in enumerate(es.text_kinds) if kind == "class"]
            rows = prompts or list(range(len(es.texts)))
            # a prompt is shown by its class ("red star", not "a photo of a red star.")
            texts = [(es.text_labels[i] if prompts else None) or es.texts[i] for i in rows]
            vectors = es.text_embeddings[rows]
        else:
            raise ValueError("The set has no texts to name clusters with: type a vocabulary (comma-separated).")
        return clusters_in_words(coords, es.image_embeddings, vectors, texts)
    return subject.remember(key, build)


FILTER_COLUMNS = ("label", "caption", "name", "modality", "zero-shot prediction")


def metadata_column(es: EmbeddingSet, column: str) -> list[str]:
    """One metadata column's value for every joint point (images, then texts): an image's label, caption, file name
    or zero-shot prediction; a text's label, the text itself (caption and name), or its kind (modality)."""
    if column not in FILTER_COLUMNS:
        raise ValueError(f"Filter by one of {', '.join(FILTER_COLUMNS)}, not {column!r}.")
    if column == "label":
        return [x or "" for x in es.labels] + [x or "" for x in es.text_labels]
    if column in ("caption", "name"):
        images = [(item.caption if column == "caption" else item.name) or "" for item in es.images]
        return images + list(es.texts)
    if column == "modality":
        return ["image"] * len(es.images) + list(es.text_kinds)
    predicted = predictions(es)
    if predicted is None:
        raise ValueError("This set has no class labels, so no zero-shot prediction to filter by.")
    return predicted + [x or "" for x in es.text_labels]


def metadata_filter(es: EmbeddingSet, column: str, text: str) -> np.ndarray | None:
    """A mask of the joint points whose ``column`` contains ``text`` (case-insensitive); None for no filter."""
    text = (text or "").strip().lower()
    if not text:
        return None
    mask = np.fromiter((text in value.lower() for value in metadata_column(es, column)), dtype=bool)
    if not mask.any():
        raise ValueError(f"No point has “{text}” in its {column}.")
    return mask


def _joint_groups(es: EmbeddingSet, mode: str, predicted: list[str] | None, clustering: Clustering | None
                  ) -> tuple[list[str], dict[str, str]]:
    """The colour group of every joint point (images, then texts) and each group's colour."""
    kinds = ["captions" if kind == "caption" else "class prompts" for kind in es.text_kinds]
    if mode == "modality":
        return ["images"] * len(es.images) + kinds, MODALITY_COLOURS
    text_groups = [label or "no label" for label in es.text_labels]
    if mode == "label":
        images = [label or "no label" for label in es.labels]
    elif mode == "prediction":
        images = list(predicted)
    else:
        names = {i: f"{i + 1}. {c.name}" for i, c in enumerate(clustering.clusters)}
        images = [names.get(int(a), "noise (no cluster)") for a in clustering.assignment]
        text_groups = kinds
    groups = images + text_groups
    colours = group_colours(groups)
    colours.update({k: v for k, v in MODALITY_COLOURS.items() if k in colours and mode == "cluster"})
    colours["noise (no cluster)"] = "#b0b0b0"
    return groups, colours


@view("embedding.points", "Embedding space", has_text, checks=(SMALL_SET, {**SMALL_SET, "colour": "cluster"}))
def points_view(subject: Subject, embedding_set: EmbeddingSet | None = None, count: int = 120,
                seed: int = EXPLORER_SEED, method: str = "UMAP", colour: str = "label", remove_gap: bool = False,
                highlight: Sequence[int] = (), clusters: bool = True, contours: bool = True,
                vocabulary: Sequence[str] = (), filter_column: str = "label", filter_text: str = "",
                only: Sequence[int] = ()) -> Figures:
    """The joint map for the WebGL scatter: points in [-1, 1], a colouring, cluster names at cluster centres (in
    CLIP's own words), density contours, and the points whose metadata ``filter_column`` contains ``filter_text``
    (all when empty) and, if ``only`` names some, that are among them (a point and its neighbours)."""
    es = embedding_set if embedding_set is not None else procedural_set(subject, count, seed)
    mode = COLOURS.get(colour, colour)
    predicted = predictions(es)
    if mode == "prediction" and predicted is None:
        raise ValueError("This set has no class labels to predict: type some class labels and press Embed again.")
    projection = project(es.image_embeddings, es.text_embeddings, method.lower(), bool(remove_gap))
    to_screen = screen_transform(projection.coords)
    ndc = to_screen(projection.coords)
    image_ndc = ndc[:len(es.images)]
    clustering = None
    if (clusters or mode == "cluster") and len(es.images) >= 5:
        clustering = cluster_names(subject, es, image_ndc, vocabulary)
    groups, colours = _joint_groups(es, mode, predicted, clustering)
    kind_codes = np.concatenate([np.zeros(len(es.images), np.uint8),
                                 np.array([KINDS.index(k) for k in es.text_kinds], dtype=np.uint8)])
    labels = []
    if clustering is not None and clusters:
        labels = [{"text": c.name, "x": float(c.centre[0]), "y": float(c.centre[1]),
                   "title": f"{c.size:,} images; nearest texts: " + "; ".join(
                       f"{name} ({score:.2f})" for name, score in zip(c.names, c.scores, strict=True))}
                  for c in clustering.clusters]
    method_name = method.upper()
    gap = ", modality means removed" if projection.remove_gap else ""
    title = (f"{method_name} of {len(es.images):,} images and {len(es.texts):,} texts ({es.model_id}{gap}), "
             "drawn with WebGL")
    mask = metadata_filter(es, filter_column, filter_text)
    notes = [projection.note, clustering.note if clustering is not None else "",
             f"showing the {int(mask.sum()):,} points whose {filter_column} contains “{filter_text.strip()}”"
             if mask is not None else ""]
    if len(only):
        isolated = np.zeros(len(ndc), dtype=bool)
        isolated[np.asarray(only, dtype=np.int64)] = True
        mask = isolated if mask is None else mask & isolated
        notes.append(f"isolated: {point_name(es, int(only[0]))} and its {len(only) - 1} nearest neighbours")
    return {"points": PointMap(ndc, kind_codes, categories(groups, colours), title, "; ".join(n for n in notes if n),
                               [int(i) for i in highlight], labels,
                               density_contours(image_ndc) if contours else [], mask)}
