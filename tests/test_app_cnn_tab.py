"""The CNN tab through the app's real HTTP API."""
from __future__ import annotations

import json

import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from plotly_json import plain_title, plotly_array

from models import shapes


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "shape.png"
    shapes.make_dataset(1, seed=4, two_objects_prob=0.0)[0].image.resize((96, 96)).save(path)
    return path


def _figure(plot) -> dict:
    """The Plotly figure JSON inside a gr.Plot value returned by gradio_client."""
    value = plot["plot"] if isinstance(plot, dict) and "plot" in plot else plot
    return json.loads(value) if isinstance(value, str) else value


def _value(update):
    """The value of a gr.update(...) returned through the API."""
    return update["value"] if isinstance(update, dict) and update.get("__type__") == "update" else update


def test_every_cnn_view_answers(app_url, image_path):
    client = Client(app_url, verbose=False)
    label = shapes.make_dataset(1, seed=4, two_objects_prob=0.0)[0].label
    result = client.predict("bundled:mini-cnn", handle_file(str(image_path)), "", api_name="/cnn_analyse")
    summary, prediction, stages, map_layer, field_layer, kernel_layer, cam_layer, target = map(_value, result)
    assert "CNN" in summary and target == label
    bars = _figure(prediction)["data"][0]
    assert bars["y"][-1] == label  # most probable on top
    maps = _figure(client.predict("stages.1", "chosen channels", 8, "3, 1", "global",
                                  api_name="/cnn_feature_maps"))
    assert [a["text"] for a in maps["layout"]["annotations"]] == ["ch 3", "ch 1"]
    assert _figure(client.predict(api_name="/cnn_filters"))["data"][0]["type"] == "image"
    kernel = _figure(client.predict(kernel_layer, 2, api_name="/cnn_kernel"))
    assert kernel["data"][0]["type"] == "heatmap"
    field_plot, layer_map, text, unit = client.predict("stages.0", api_name="/cnn_receptive_field")
    assert "theoretical field" in text and "Effective field" in text
    assert _figure(field_plot)["layout"]["shapes"]
    rows, cols = plotly_array(_figure(layer_map)["data"][0]["z"]).shape
    assert unit == f"{rows // 2}, {cols // 2}"     # the centre unit by default, written in the Unit box
    _, _, text, unit = client.predict("stages.0", "(1, 2)", api_name="/cnn_unit")
    assert unit == "1, 2" and "unit (1, 2)" in text
    for bad, message in ((f"{rows}, 0", "outside this layer's"), ("one, two", "two whole numbers")):
        with pytest.raises(Exception, match=message):
            client.predict("stages.0", bad, api_name="/cnn_unit")
    cam = _figure(client.predict("Grad-CAM", cam_layer, target, api_name="/cnn_cam"))
    assert target in plain_title(cam)
    shift, cue, gallery, note = client.predict("bundled:mini-cnn", handle_file(str(image_path)), "bundled:mini-vit",
                                               8, api_name="/cnn_probes")
    assert len(_figure(shift)["data"]) == 4 and len(_figure(cue)["data"]) == 3 and len(gallery) == 8


def test_a_vit_gets_cam_and_prediction_and_a_message_for_maps(app_url, image_path):
    client = Client(app_url, verbose=False)
    result = client.predict("bundled:mini-vit", handle_file(str(image_path)), "", api_name="/cnn_analyse")
    assert "ViT" in result[0]
    with pytest.raises(Exception, match="need a CNN"):
        client.predict(api_name="/cnn_filters")
    cam = _figure(client.predict("HiResCAM", _value(result[6]), _value(result[7]), api_name="/cnn_cam"))
    assert "blocks.3.ln1" in plain_title(cam)


def test_bad_inputs_get_messages_and_the_server_keeps_serving(app_url, image_path):
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="Analyse first"):
        client.predict(api_name="/cnn_filters")
    with pytest.raises(Exception, match="Upload an image"):
        client.predict("bundled:mini-cnn", None, "", api_name="/cnn_analyse")
    with pytest.raises(Exception, match="unknown backend"):
        client.predict("nonsense:model", handle_file(str(image_path)), "", api_name="/cnn_analyse")
    client.predict("bundled:mini-cnn", handle_file(str(image_path)), "", api_name="/cnn_analyse")
    with pytest.raises(Exception, match="channels 0 to"):
        client.predict("stages.0", "chosen channels", 8, "999", "per unit", api_name="/cnn_feature_maps")
    with pytest.raises(Exception, match="channel numbers"):
        client.predict("stages.0", "chosen channels", 8, "one, two", "per unit", api_name="/cnn_feature_maps")
    # "chosen channels" ticked before any is typed: the top k, not an error
    untyped = _figure(client.predict("stages.0", "chosen channels", 4, "", "per unit", api_name="/cnn_feature_maps"))
    assert len(untyped["layout"]["annotations"]) == 4 and "top channels" in plain_title(untyped)
    with pytest.raises(Exception, match="Unknown class"):
        client.predict("Grad-CAM", "stages.2", "a purple unicorn", api_name="/cnn_cam")
    summary = client.predict("bundled:mini-clip", handle_file(str(image_path)), "a red star\na blue circle",
                             api_name="/cnn_analyse")[0]
    assert "mini-clip" in summary


def test_a_model_without_class_names_defaults_to_its_top_output(app_url, image_path, tiny_ids):
    client = Client(app_url, verbose=False)
    result = client.predict(tiny_ids["hf_dinov2_reg"], handle_file(str(image_path)), "", api_name="/cnn_analyse")
    cam_layer, target = _value(result[6]), _value(result[7])
    assert target.startswith("output ") and target in [c[0] for c in result[7]["choices"]]
    picked = _figure(client.predict("Grad-CAM", cam_layer, target, api_name="/cnn_cam"))
    empty = _figure(client.predict("Grad-CAM", cam_layer, "", api_name="/cnn_cam"))
    assert f"“{target}”" in plain_title(picked) and f"“{target}”" in plain_title(empty)
    with pytest.raises(Exception, match="no class names"):
        client.predict("Grad-CAM", cam_layer, "a purple unicorn", api_name="/cnn_cam")
