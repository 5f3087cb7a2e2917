"""The Patches tab through the app's real HTTP API, on bundled models and a registers model."""
from __future__ import annotations

import pytest
from app_server import running_app
from gradio_client import Client, handle_file

from models import shapes


@pytest.fixture(scope="module")
def app_url(tiny_ids):
    with running_app("--model", tiny_ids["timm_vit_reg"]) as url:
        yield url


@pytest.mark.parametrize("model_key", ["bundled:mini-clip", "bundled:mini-vit", "timm_vit_reg"])
def test_patches_analyse_draws_every_view(app_url, tiny_ids, tmp_path, model_key):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=6)[0].image.resize((100, 60)).save(path)  # non-square: resize + centre crop
    client = Client(app_url, verbose=False)
    model_id = tiny_ids.get(model_key, model_key)
    result = client.predict(model_id, handle_file(str(path)), 1, api_name="/patches_analyse")
    _, grid_plot, filters, positions, residual, correlation, similarity, islands, notes = result
    assert ("trained only on" in notes) == model_key.startswith("bundled:")   # what a bundled model knows
    assert all(p is not None for p in (grid_plot, filters, positions, residual, correlation, similarity, islands))
    assert client.predict(0, api_name="/patches_layer") is not None


def test_patches_refuse_a_cnn(app_url, tmp_path):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=6)[0].image.save(path)
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="not a vision transformer"):
        client.predict("bundled:mini-cnn", handle_file(str(path)), 0, api_name="/patches_analyse")
