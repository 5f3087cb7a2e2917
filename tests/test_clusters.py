"""Clusters named in CLIP's own words: on procedural circles of six colours embedded by the bundled mini-clip, each
cluster's name (the nearest of the 36 class prompts to its centroid) must be its majority class far above chance;
HDBSCAN with a subsample; density contours that enclose the stated share of the points."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as Polygon

from models import load_model
from models.embed import ImageItem, embed_set
from models.world import shapes
from viz.clusters import cluster_map, clusters_in_words, density_contours
from viz.projection import pca_reduce


@pytest.fixture(scope="module")
def circles():
    """240 held-out one-object scenes, all circles (6 colour classes), with the 36 "a photo of a {colour} {shape}."
    prompts as the texts to name clusters with."""
    clip = load_model("bundled:mini-clip", device="cpu")
    examples = shapes.make_dataset(240, seed=777, two_objects_prob=0.0, shape="circle")
    return embed_set(clip, [ImageItem(e.image, e.label, None) for e in examples], extra_labels=shapes.class_names())


def test_cluster_names_name_the_majority_class_far_above_chance(circles):
    es = circles
    coords = pca_reduce(es.image_embeddings / np.linalg.norm(es.image_embeddings, axis=1, keepdims=True), 8)[1]
    found = clusters_in_words(coords, es.image_embeddings, es.text_embeddings, es.texts)
    assert len(found.clusters) >= 4 and "named by the nearest of 36 texts" in found.note
    labels = np.asarray(es.labels)
    named, clustered = 0, 0
    for number, cluster in enumerate(found.clusters):
        members = labels[found.assignment == number]
        values, counts = np.unique(members, return_counts=True)
        majority = values[counts.argmax()]
        named += len(members) * (cluster.name == f"a photo of a{'n' if majority[0] in 'aeiou' else ''} {majority}.")
        clustered += len(members)
    accuracy = named / clustered
    # chance: a random prompt of the 36 names the majority class 1 time in 36 (2.8%); naming every cluster after
    # the most common class is right for its share of the images (at most 1/6 here plus sampling noise, ~20%)
    most_common = np.unique(labels, return_counts=True)[1].max() / len(labels)
    print(f"cluster names right for {accuracy:.1%} of clustered images ({len(found.clusters)} clusters); "
          f"most-common-class baseline {most_common:.1%}, random prompt 2.8%")
    assert accuracy >= 0.6 and accuracy > 3 * most_common > 3 / 36, (accuracy, most_common)


def test_hdbscan_on_a_sample_assigns_every_point_and_numbers_clusters_largest_first():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    sizes = [3000, 2000, 1000]
    truth = np.repeat(np.arange(3), sizes)
    coords = centres[truth] + rng.normal(size=(6000, 2)).astype(np.float32)
    assignment, note = cluster_map(coords, sample=1500)
    assert "1,500 sampled points" in note and assignment.shape == (6000,)
    assert set(np.unique(assignment)) - {-1} == {0, 1, 2}
    agree = np.mean(assignment[assignment >= 0] == truth[assignment >= 0])   # cluster 0 is the largest blob
    assert agree >= 0.95 and np.mean(assignment >= 0) >= 0.8
    with pytest.raises(ValueError, match="at least 5"):
        cluster_map(coords[:3])


def test_density_contours_enclose_the_densest_share_of_the_points():
    coords = np.random.default_rng(1).normal(size=(20_000, 2))
    lines = density_contours(coords, levels=(0.5,))
    assert lines and {line["level"] for line in lines} == {0.5}
    biggest = max(lines, key=lambda line: len(line["x"]))
    inside = Polygon(np.column_stack([biggest["x"], biggest["y"]])).contains_points(coords).mean()
    assert abs(inside - 0.5) < 0.06, inside   # a 2-D normal's densest half lies within radius 1.18
