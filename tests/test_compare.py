"""Side-by-side comparison: settings parsed against the view's own parameters, each side equal to running its view
alone, one hooked forward when both sides share a model."""
from __future__ import annotations

import numpy as np
import pytest

from models import load_model
from models.world import scenes
from viz.compare import Side, compare, first_figure, parse_settings
from viz.views import Subject, run_view


def heat(figure) -> np.ndarray:
    return np.asarray(next(t for t in figure.data if t.type == "heatmap").z, dtype=float)


@pytest.fixture(scope="module")
def image():
    return scenes.make_scenes(1, seed=7, split="held_out", n_objects=2)[0].image.resize((224, 224))


def test_settings_are_parsed_by_the_views_parameters():
    assert parse_settings("attention.query", "layer=3, head=1, query=0") == {"layer": 3, "head": 1, "query": 0}
    assert parse_settings("attention.query", "head=mean") == {"head": "mean"}
    assert parse_settings("cnn.cam", "method=Grad-CAM++, prompts=a red circle, big; a blue star") == {
        "method": "Grad-CAM++", "prompts": ("a red circle, big", "a blue star")}
    assert parse_settings("attention.rollout", "") == {}
    with pytest.raises(ValueError, match="no parameter 'heads'.*layer=0"):
        parse_settings("attention.query", "heads=2")
    with pytest.raises(ValueError, match="name=value"):
        parse_settings("attention.query", "layer 3")
    with pytest.raises(ValueError, match="No view"):
        parse_settings("attention.nothing", "")


def test_two_heads_side_by_side_equal_each_view_alone_and_differ(image):
    model = load_model("bundled:mini-clip")
    a, b = compare(Side("attention.query", model, {"layer": 1, "head": 0}),
                   Side("attention.query", model, {"layer": 1, "head": 1}), image)
    alone = Subject(model, image)
    np.testing.assert_allclose(heat(first_figure(a)), heat(first_figure(run_view("attention.query", alone, layer=1,
                                                                                head=0))))
    np.testing.assert_allclose(heat(first_figure(b)), heat(first_figure(run_view("attention.query", alone, layer=1,
                                                                                head=1))))
    assert not np.allclose(heat(first_figure(a)), heat(first_figure(b)))   # two heads, two maps


def test_two_models_and_a_view_that_does_not_apply(image):
    clip, vit, cnn = (load_model(f"bundled:{name}") for name in ("mini-clip", "mini-vit", "mini-cnn"))
    a, b = compare(Side("attention.rollout", clip), Side("attention.rollout", vit), image)
    assert heat(first_figure(a)).shape == heat(first_figure(b)).shape
    with pytest.raises(ValueError, match="does not apply to bundled:mini-cnn"):
        compare(Side("attention.rollout", clip), Side("attention.rollout", cnn), image)
