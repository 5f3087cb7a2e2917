"""The Ablate & patch tab through the app's real HTTP API: listing a model's parts, ablating ticked heads, the head
sweep, patching from a source image, and clear messages for bad input."""
from __future__ import annotations

import numpy as np
import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from plotly_json import figure_json, plain_title, plotly_array

from models.world import scenes

TRANSFORMER, CNN = "transformer or CLIP picker", "CNN picker"
LABELS = "red circle, blue square, green triangle, yellow star, purple heart, orange cross"


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("poke") / "scene.png"
    scenes.make_scenes(1, 4_242, split="any")[0].image.save(path)
    return handle_file(str(path))




def test_parts_list_every_head_and_layer_of_mini_clip(app_url):
    client = Client(app_url, verbose=False)
    heads, layers, layer, notice = client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn",
                                                  api_name="/poke_parts")
    values = [choice[1] for choice in heads["choices"]]
    assert len(values) == 16 and values[0] == "blocks.0.attn.head.0" and heads["choices"][0][0] == "layer 0 head 0"
    assert {"blocks.0.attn_out", "blocks.3.mlp_out"} <= {choice[1] for choice in layers["choices"]}
    assert layer["maximum"] == 3 and "16 heads" in notice


def test_ablating_ticked_heads_draws_clean_against_ablated(app_url, image):
    client = Client(app_url, verbose=False)
    client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", api_name="/poke_parts")  # the tick boxes
    plot, notice = client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image,
                                  ["blocks.3.attn.head.0", "blocks.3.attn.head.1"], ["blocks.2.mlp_out"], "",
                                  "mean", 8, LABELS, 5, api_name="/poke_ablate")
    figure = figure_json(plot)
    assert [trace["name"] for trace in figure["data"]] == ["clean", "ablated"]
    assert "mean-ablated blocks.3.attn.head.0" in plain_title(figure)
    clean, ablated = (plotly_array(trace["x"]) for trace in figure["data"])
    assert not np.allclose(clean, ablated)
    assert "3 part(s) mean-ablated over 8 held-out reference scenes" in notice


def test_the_sweep_draws_a_layer_by_head_map(app_url, image):
    client = Client(app_url, verbose=False)
    plot, notice = client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image, "", "zero", 8,
                                  LABELS, api_name="/poke_sweep")
    figure = figure_json(plot)
    heatmap = figure["data"][0]
    assert heatmap["type"] == "heatmap" and plotly_array(heatmap["z"]).shape == (4, 4)
    assert list(heatmap["y"]) == [f"layer {i}" for i in range(4)]
    assert "zero-ablated alone" in plain_title(figure) and "Target **" in notice


def test_patching_every_token_gives_the_source_prediction(app_url, image):
    client = Client(app_url, verbose=False)
    bars, layers, notice = client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image, None, 777_000,
                                          1, "all", 0, 0, 0.5, 0.5, LABELS, 6, api_name="/poke_patch")
    clean, patched, source = (plotly_array(trace["x"]) for trace in figure_json(bars)["data"])
    assert np.allclose(patched, source, atol=1e-4) and not np.allclose(clean, source, atol=1e-2)
    sweep = figure_json(layers)
    assert len(sweep["data"]) == 2 and len(plotly_array(sweep["data"][1]["y"])) == 4
    box = client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image, None, 777_000, 2, "box",
                         0, 0, 0.5, 0.5, LABELS, 6, api_name="/poke_patch")
    assert "16 patches" in box[2]   # the top-left quarter of the 8x8 grid


def test_cnn_channels_ablate_and_bad_input_gets_messages(app_url, image):
    client = Client(app_url, verbose=False)
    plot, notice = client.predict(CNN, "bundled:mini-clip", "bundled:mini-cnn", image, [], [],
                                  "stages.2.channel.3, stages.1", "zero", 8, "", 5, api_name="/poke_ablate")
    assert "2 part(s) zero-ablated" in notice and len(figure_json(plot)["data"]) == 2
    with pytest.raises(Exception, match="No hook matches 'blocks.9.mlp_out'"):
        client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image, [], [], "blocks.9.mlp_out",
                       "zero", 8, LABELS, 5, api_name="/poke_ablate")
    with pytest.raises(Exception, match="Tick at least one"):
        client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image, [], [], "", "zero", 8, LABELS,
                       5, api_name="/poke_ablate")
    with pytest.raises(Exception, match="no attention heads"):
        client.predict(CNN, "bundled:mini-clip", "bundled:mini-cnn", image, "", "zero", 8, "",
                       api_name="/poke_sweep")
    with pytest.raises(Exception, match="Upload an image"):
        client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", None, "", "zero", 8, LABELS,
                       api_name="/poke_sweep")
    with pytest.raises(Exception, match="not one of the labels"):
        client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", image, "a unicorn", "zero", 8, LABELS,
                       api_name="/poke_sweep")
    # the server still answers after every refusal
    assert client.predict(TRANSFORMER, "bundled:mini-clip", "bundled:mini-cnn", api_name="/poke_parts")[3]
