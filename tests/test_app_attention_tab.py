"""The Attention tab through the app's real HTTP API."""
from __future__ import annotations

import json

import pytest
from app_server import running_app
from gradio_client import Client, handle_file

from models import shapes


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:  # the bundled defaults
        yield url


def test_attention_analyse_returns_every_view(app_url, tmp_path):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.resize((128, 128)).save(path)
    client = Client(app_url, verbose=False)
    result = client.predict("bundled:mini-clip", handle_file(str(path)), 2, "mean", 1.0,
                            api_name="/attention_analyse")
    layer, head, grid_plot, overlay, heads, steps, info = result
    assert "CLS" in info
    assert all(plot is not None for plot in (grid_plot, overlay, heads, steps))


def test_attention_refuses_a_cnn_with_a_message_and_keeps_serving(app_url, tmp_path):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.save(path)
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="not a vision transformer"):
        client.predict("bundled:mini-cnn", handle_file(str(path)), 0, "mean", 1.0, api_name="/attention_analyse")
    with pytest.raises(Exception, match="Upload an image"):
        client.predict("bundled:mini-vit", None, 0, "mean", 1.0, api_name="/attention_analyse")
    result = client.predict("bundled:mini-vit", handle_file(str(path)), 0, "head 1", 1.0,
                            api_name="/attention_analyse")
    assert "CLS" in result[-1]


def test_views_after_analyse_use_the_same_session(app_url, tmp_path):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.save(path)
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="Analyse first"):
        client.predict("max", 0.5, api_name="/attention_rollout")
    client.predict("bundled:mini-clip", handle_file(str(path)), 1, "mean", 1.0, api_name="/attention_analyse")
    assert client.predict("max", 0.5, api_name="/attention_rollout") is not None
    relevancy, tokens = client.predict("a red star", api_name="/attention_relevancy")
    assert relevancy is not None and tokens is not None
    assert client.predict("a red star, a blue circle", api_name="/attention_zero_shot") is not None
    with pytest.raises(Exception, match="at least one prompt"):
        client.predict(" , ", api_name="/attention_zero_shot")
    overlay, heads, steps, info = client.predict(3, "head 2", 0.5, api_name="/attention_view")
    assert "CLS" in info
    with pytest.raises(Exception, match="heads 0 to 3"):
        client.predict(3, "head 9", 1.0, api_name="/attention_view")
    assert client.predict("bundled:mini-vit", api_name="/mean_attention_distance") is not None


def test_relevancy_of_a_model_without_class_names_defaults_to_its_top_output(app_url, tmp_path, tiny_ids):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.save(path)
    client = Client(app_url, verbose=False)
    client.predict(tiny_ids["hf_dinov2_reg"], handle_file(str(path)), 0, "mean", 1.0, api_name="/attention_analyse")
    relevancy, tokens = client.predict("", api_name="/attention_relevancy")
    title = json.loads(relevancy["plot"])["layout"]["title"]["text"]
    assert title.startswith("Relevancy for output ") and tokens is None
    index = title.rsplit(" ", 1)[-1]
    again, _ = client.predict(f"output {index}", api_name="/attention_relevancy")
    assert json.loads(again["plot"])["layout"]["title"]["text"] == title
    with pytest.raises(Exception, match="outputs 0 to"):
        client.predict("100000", api_name="/attention_relevancy")
