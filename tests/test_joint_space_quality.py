"""Quality bars of the joint-space views on the bundled mini-clip with held-out procedural data (seeds below
shapes.TRAIN_SEED_START, used nowhere else): zero-shot, text-to-image recall@5, and a text query's nearest images,
all through the functions the app calls."""
from __future__ import annotations

import numpy as np
import pytest

from models import load_model, shapes
from models.embed import ImageItem, embed_set, embed_texts
from viz.embedding_space import evaluate_zero_shot, retrieve
from viz.zero_shot import TextFeatureCache, encode_images

SEED = 883_001


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


@pytest.fixture(scope="module")
def balanced(clip):
    """180 single-object images, 5 per class, embedded with one prompt per class ("a photo of a {}.")."""
    examples = shapes.make_dataset(180, seed=SEED, two_objects_prob=0.0, balanced=True)
    return examples, embed_set(clip, [ImageItem(e.image, e.label, None) for e in examples])


def test_zero_shot_accuracy_on_held_out_shapes_is_at_least_90_percent(clip, balanced):
    examples, es = balanced
    rows = [es.class_text[name] for name in es.class_names]
    evaluation = evaluate_zero_shot(es.image_embeddings, es.labels, es.class_names, es.text_embeddings[rows])
    print(f"zero-shot top-1 {evaluation.top1:.3f}, top-5 {evaluation.top5:.3f} over {len(es.class_names)} classes")
    assert len(es.class_names) == 36 and evaluation.top1 >= 0.90 and evaluation.top5 >= evaluation.top1
    # the ensemble of templates does as well through the Zero-shot tab's path
    features = TextFeatureCache().get(clip, es.class_names, ["a {}", "a photo of a {}.", "a picture of a {}"])
    predicted = (encode_images(clip, [e.image for e in examples]) @ features.features.T).argmax(dim=1).numpy()
    truth = np.array([es.class_names.index(e.label) for e in examples])
    assert (predicted == truth).mean() >= 0.90


def test_text_to_image_recall_at_5_is_at_least_90_percent(clip):
    examples = shapes.make_dataset(120, seed=SEED + 1)
    es = embed_set(clip, [ImageItem(e.image, None, e.caption) for e in examples])
    captions = embed_texts(clip, [e.caption for e in examples])
    hits = [i in retrieve(captions[i], es.image_embeddings, 5)[0] for i in range(len(examples))]
    print(f"text->image recall@5 {np.mean(hits):.3f}")
    assert np.mean(hits) >= 0.90


def test_a_red_circle_query_returns_red_circles_first(clip, balanced):
    examples, es = balanced   # 5 red circles among 25 other red shapes and 25 other circles
    order, scores = retrieve(embed_texts(clip, ["a red circle"])[0], es.image_embeddings, 10)
    labels = [examples[i].label for i in order]
    assert labels[:5] == ["red circle"] * 5, labels
    assert np.all(np.diff(scores) <= 0)
