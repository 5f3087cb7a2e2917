"""Copy as Python: the code a tab prints runs in a fresh Python process and draws the same figure data as the app
(the app's figures fetched through its HTTP API, compared array by array)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from app_server import ROOT, running_app
from gradio_client import Client, handle_file
from plotly_json import plain_title, plotly_array

from ui.examples import example_path
from viz.reproduce import reproduce_code

DUMP = """
import json as _json
with open(OUT, "w") as _out:
    _json.dump({_name: _figure.to_json() for _name, _figure in figures.items() if hasattr(_figure, "to_json")}, _out)
"""


@pytest.fixture(scope="module")
def client():
    with running_app() as url:
        yield Client(url, verbose=False)


def _run(code: str, tmp_path) -> dict:
    """Run the printed code in a fresh interpreter; the Plotly figures it drew, by name."""
    out = tmp_path / "figures.json"
    script = tmp_path / "reproduce.py"
    script.write_text(code + f"\nOUT = {str(out)!r}" + DUMP)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _traces(payload) -> list[dict]:
    """The traces of a figure as JSON: a PlotlyFigure's string, a gr.Plot's {"plot": JSON}, or the code's JSON."""
    return json.loads(payload["plot"] if isinstance(payload, dict) else payload)



def _same_data(app_payload, notebook_json: str) -> None:
    """The same traces, with the same data arrays (to float tolerance: two processes) and the same title."""
    app, notebook = _traces(app_payload), _traces(notebook_json)
    assert len(app["data"]) == len(notebook["data"]) > 0
    compared = 0
    for ours, theirs in zip(app["data"], notebook["data"], strict=True):
        assert ours["type"] == theirs["type"] and set(ours) == set(theirs)
        for key in ("z", "x", "y", "source", "customdata"):
            if key not in ours:
                continue
            mine, other = plotly_array(ours[key]), plotly_array(theirs[key])
            if np.issubdtype(mine.dtype, np.number):
                np.testing.assert_allclose(mine.astype(float), other.astype(float), rtol=1e-5, atol=1e-6)
            else:
                assert mine.tolist() == other.tolist()
            compared += 1
    assert compared > 0
    assert plain_title(app) == plain_title(notebook)   # the app wraps long titles to fit its columns


def test_the_attention_code_redraws_the_apps_figures(client, tmp_path):
    client.predict("bundled:mini-clip", handle_file(example_path("shapes-1")), 2, "head 1", 0.5,
                   api_name="/attention_analyse")
    overlay, heads, steps, info, query = client.predict(2, "head 1", 0.5, 22, api_name="/attention_query")
    assert query == 22 and "patch (2, 5)" in info
    rollout = client.predict("max", 0.25, api_name="/attention_rollout")
    code = client.predict("bundled:mini-clip", "shapes-1", 2, "head 1", 0.5, "max", 0.25,
                          api_name="/attention_copy_python")
    assert "run_view('attention.query', subject, layer=2, head='head 1', query=22)" in code
    assert "example_image('shapes-1')" in code
    drawn = _run(code, tmp_path)
    for name, payload in (("overlay", overlay), ("heads", heads), ("steps", steps), ("rollout", rollout)):
        _same_data(payload, drawn[name])


def test_the_cnn_code_redraws_the_apps_figures(client, tmp_path):
    result = client.predict("bundled:mini-cnn", handle_file(example_path("shapes-2")), "", api_name="/cnn_analyse")
    layers = result[3]["choices"]
    layer = layers[1][1] if isinstance(layers[1], (list, tuple)) else layers[1]
    maps = client.predict(layer, "top-k by mean activation", 8, "", "global", api_name="/cnn_feature_maps")
    field, layer_map, _, _ = client.predict(layer, api_name="/cnn_receptive_field")
    code = client.predict("shapes-2", layer, "top-k by mean activation", 8, "", "global", layer, "Grad-CAM", None,
                          None, api_name="/cnn_copy_python")
    drawn = _run(code, tmp_path)
    _same_data(maps, drawn["feature_maps"])
    _same_data(layer_map, drawn["layer_map"])
    _same_data(field, drawn["field"])


def test_an_upload_is_named_as_a_file_to_fill_in():
    code = reproduce_code("bundled:mini-vit", "upload", [("attention.heads", {"layer": 1})])
    assert 'open_image("YOUR_IMAGE.png")' in code and "example_image" not in code
    compile(code, "<copy>", "exec")
    with pytest.raises(KeyError, match="No view"):
        reproduce_code("bundled:mini-vit", "shapes-0", [("attention.nothing", {})])
