"""CNN figures, checked by what they draw."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from models.receptive_field import ReceptiveField, Span
from viz.cam import Prediction
from viz.cnn_figures import (
    cam_figure,
    colourise,
    cue_conflict_figure,
    feature_grid_figure,
    kernel_figure,
    prediction_figure,
    receptive_field_figure,
    rgb_filters_figure,
    shift_figure,
    stage_shapes_figure,
)
from viz.probes import CueConflictResult, ShiftProbe


def _png(source: str) -> np.ndarray:
    assert source.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def test_feature_grid_is_one_png_with_a_label_per_requested_channel():
    scaled = np.random.default_rng(0).random((5, 8, 8))
    fig = feature_grid_figure(scaled, [9, 3, 14, 0, 7], "stages.1")
    assert [t.type for t in fig.data] == ["image", "scatter"]   # the picture, and a trace that is only its colour bar
    assert [a.text for a in fig.layout.annotations] == ["ch 9", "ch 3", "ch 14", "ch 0", "ch 7"]
    pixels = _png(fig.data[0].source)
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    # 5 tiles on a 3x3 layout: the last row holds 2 tiles, the rest of it is the white gap colour
    assert (pixels[-5:, -5:] == 255).all()
    assert len(fig.to_json()) < 2_000_000


def test_feature_grid_colour_bar_reads_activations_on_a_shared_scale():
    scaled = np.random.default_rng(0).random((4, 6, 6))
    shared = feature_grid_figure(scaled, [0, 1, 2, 3], "stages.2", value_range=(-0.5, 3.25)).data[1].marker
    assert shared.showscale and (shared.cmin, shared.cmax) == (-0.5, 3.25) and shared.colorscale is not None
    assert shared.colorbar.title.text == "activation" and shared.colorbar.tickvals is None
    own = feature_grid_figure(scaled, [0, 1, 2, 3], "stages.2").data[1].marker   # per unit: no shared numbers
    assert own.showscale and list(own.colorbar.ticktext) == ["each map's min", "each map's max"]


def test_feature_maps_view_passes_the_global_range():
    from models import load_model, shapes
    from viz.views import Subject, run_view
    subject = Subject(load_model("bundled:mini-cnn", device="cpu"), shapes.make_dataset(1, seed=3)[0].image)
    session = subject.cnn()
    fig = run_view("cnn.feature_maps", subject, k=4, scale="global")["feature_maps"]
    layer = fig.layout.title.text.split(":")[0]
    low, high = session.display_range(layer, "global")
    assert (fig.data[1].marker.cmin, fig.data[1].marker.cmax) == (low, high)
    maps = session.layer_maps(layer)
    assert low <= float(maps.min()) and high >= float(maps.max())
    assert session.display_range(layer, "per layer") == (float(maps.min()), float(maps.max()))


def test_colourise_maps_zero_and_one_to_the_ends_of_the_scale():
    rgb = colourise(np.array([[0.0, 1.0, np.nan]]))
    assert tuple(rgb[0, 0]) != tuple(rgb[0, 1]) and tuple(rgb[0, 2]) == (255, 255, 255)


def test_stage_shapes_and_prediction_figures():
    fig = stage_shapes_figure({"input": (3, 64, 64), "stem": (32, 16, 16), "stages.0": (64, 8, 8)})
    assert list(fig.data[0].x) == ["input", "stem", "stages.0"] and list(fig.data[1].y) == [3, 32, 64]
    assert "32 x 16 x 16" in fig.data[0].text
    fig = prediction_figure(Prediction(["cat", "dog"], [0.7, 0.2], [3, 5]))
    assert list(fig.data[0].y) == ["dog", "cat"] and list(fig.data[0].x) == [0.2, 0.7]


def test_filter_and_kernel_figures():
    tiles = np.random.default_rng(1).random((6, 7, 7, 3))
    fig = rgb_filters_figure(tiles, "conv1")
    assert fig.data[0].type == "image" and _png(fig.data[0].source).shape[2] == 3
    kernel = np.random.default_rng(2).standard_normal((4, 3, 3))
    fig = kernel_figure(kernel, "conv")
    peak = np.abs(kernel).max()
    assert fig.data[0].zmin == pytest.approx(-peak) and fig.data[0].zmax == pytest.approx(peak)
    assert np.nansum(np.asarray(fig.data[0].z, dtype=float)) == pytest.approx(kernel.sum())


def test_receptive_field_figure_boxes_the_theoretical_field():
    field = ReceptiveField("stages.0", (8, 8), (32, 32), Span(-5, 5, 4), Span(-5, 5, 4))
    erf = np.zeros((32, 32))
    erf[10:14, 10:14] = 1.0
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    fig = receptive_field_figure(image, field, (3, 3), erf, "rf")
    box = fig.layout.shapes[0]
    top, left, bottom, right = field.box(3, 3)
    assert (box.x0, box.x1, box.y0, box.y1) == (left - 0.5, right + 0.5, top - 0.5, bottom + 0.5)
    heat = np.asarray(fig.data[1].z, dtype=float)
    assert np.nanmax(heat) == 1.0 and np.isnan(heat[0, 0])


def test_cam_figure_marks_the_maximum():
    cam = np.zeros((16, 16))
    cam[4, 11] = 1.0
    fig = cam_figure(np.zeros((16, 16, 3), dtype=np.uint8), cam, "cam")
    marker = fig.data[2]
    assert (marker.x[0], marker.y[0]) == (11, 4)


def test_probe_figures():
    probes = [ShiftProbe("cnn", [0, 1, 2], "p", [0.9, 0.8, 0.9], "stages.2", 2, [0.0, 0.3, 0.1]),
              ShiftProbe("vit", [0, 1, 2], "p", [0.9, 0.5, 0.6], "blocks.3", 8, [0.0, 0.6, 0.8])]
    fig = shift_figure(probes)
    assert len(fig.data) == 4
    # the axis names what is plotted, as the legend does
    assert fig.layout.yaxis.title.text == "p" and fig.data[0].name.endswith(": p")
    mixed = shift_figure([probes[0], ShiftProbe("clip", [0, 1], "cosine to the unshifted output", [1.0, 0.9],
                                                "blocks.3", 8, [0.0, 0.2])])
    assert mixed.layout.yaxis.title.text == "p / cosine to the unshifted output"
    assert list(fig.data[1].y) == [0.0, 0.3, 0.1] and "stride 2" in fig.data[1].name
    result = CueConflictResult("cnn", ["circle"] * 4, ["star"] * 4, ["red circle"] * 4,
                               ["shape", "shape", "texture", "neither"])
    fig = cue_conflict_figure([result])
    assert [t.name for t in fig.data] == ["shape", "texture", "neither"]
    assert [t.y[0] for t in fig.data] == [0.5, 0.25, 0.25]
    assert "shape bias 67%" in fig.data[0].x[0]
