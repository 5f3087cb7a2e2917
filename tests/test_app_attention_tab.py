"""The Attention tab through the app's real HTTP API."""
from __future__ import annotations

import json

import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from plotly_json import plain_title

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
    distance = json.loads(client.predict("bundled:mini-vit", api_name="/mean_attention_distance")["plot"])
    assert "attention to CLS/prefix tokens counts as distance 0 (ViT paper)" in plain_title(distance)


def test_relevancy_of_a_model_without_class_names_defaults_to_its_top_output(app_url, tmp_path, tiny_ids):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.save(path)
    client = Client(app_url, verbose=False)
    client.predict(tiny_ids["hf_dinov2_reg"], handle_file(str(path)), 0, "mean", 1.0, api_name="/attention_analyse")
    relevancy, tokens = client.predict("", api_name="/attention_relevancy")
    title = plain_title(json.loads(relevancy["plot"]))
    assert title.startswith("Relevancy for output ") and tokens is None
    index = title.rsplit(" ", 1)[-1]
    again, _ = client.predict(f"output {index}", api_name="/attention_relevancy")
    assert plain_title(json.loads(again["plot"])) == title
    with pytest.raises(Exception, match="outputs 0 to"):
        client.predict("100000", api_name="/attention_relevancy")


# -- window attention per stage (hierarchical models: Swin, MaxViT, MobileCLIP) --------------------------------------
@pytest.fixture(scope="module")
def tiny_swin(tmp_path_factory) -> str:
    """A tiny random torchvision Swin (64 px; grids 16, 8, 4, 2; 2 blocks and 2 heads per stage; 4x4 windows)."""
    from models.backends import BACKENDS
    return BACKENDS["torchvision"].save_random("swin_t", tmp_path_factory.mktemp("tiny_swin") / "swin_t", True)


def _value(update):
    return update["value"] if isinstance(update, dict) and update.get("__type__") == "update" else update


def _plot(payload) -> dict:
    return json.loads(payload["plot"])


def _title(payload) -> str:
    return plain_title(_plot(payload))


def _component(client: Client, label: str) -> int:
    return next(c["id"] for c in client.config["components"] if c.get("props", {}).get("label") == label)


def _select(client: Client, target_label: str, output_label: str, data: list, index: tuple[int, int]):
    """Fire the browser's select event on a component (a click at pixel ``index``) for the dependency that draws
    ``output_label``, through the same queue the browser uses (the endpoint has no public API name)."""
    target, output = _component(client, target_label), _component(client, output_label)
    fn_index = next(i for i, dep in enumerate(client.config["dependencies"])
                    if [target, "select"] in [list(t) for t in dep["targets"]] and output in dep["outputs"])
    endpoint = client.endpoints[fn_index]
    helper = client.new_helper(fn_index)
    return endpoint.make_predict(helper)(*data, event_data={"index": list(index), "value": None, "selected": True},
                                         trigger_id=target)


IMAGE_LABEL = ("Image, shared by every tab (upload, paste or pick an example; click it to pick a patch or a "
               "receptive-field unit)")


def test_the_transformer_picker_offers_models_with_attention_per_stage(app_url, tiny_swin):
    from ui.shared_inputs import capabilities, picker_choices
    choices = picker_choices("transformer", [])
    assert "torchvision:swin_t/IMAGENET1K_V1" in choices and "open_clip:MobileCLIP-S1/datacompdr" in choices
    assert "bundled:mini-vit" in choices and "bundled:mini-cnn" not in choices
    assert capabilities(tiny_swin).has_grid_attention and not capabilities(tiny_swin).has_token_grid
    client = Client(app_url, verbose=False)
    picker = next(c for c in client.config["components"]
                  if c.get("props", {}).get("label") == "Transformer or CLIP model")
    offered = [choice[1] if isinstance(choice, list) else choice for choice in picker["props"]["choices"]]
    assert "torchvision:swin_t/IMAGENET1K_V1" in offered and "hf:microsoft/swin-tiny-patch4-window7-224" in offered


def test_window_attention_per_stage_of_a_swin(app_url, tmp_path, tiny_swin):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.resize((128, 128)).save(path)
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="Analyse with a model that has attention per stage"):
        client.predict(0, 0, "mean", 1, 1, api_name="/attention_window_view")

    # the ViT views say clearly that they need one token grid
    layer, head, grid_plot, overlay, heads, steps, info = client.predict(
        tiny_swin, handle_file(str(path)), 2, "mean", 1.0, api_name="/attention_analyse")
    assert "single token grid" in info and "Window attention per stage" in info
    assert grid_plot is None and overlay is None and heads is None and steps is None
    for call in (lambda: client.predict("max", 0.5, api_name="/attention_rollout"),
                 lambda: client.predict(1, "mean", 1.0, api_name="/attention_view"),
                 lambda: client.predict("a red star", api_name="/attention_relevancy"),
                 lambda: client.predict("a red star", api_name="/attention_zero_shot"),
                 lambda: client.predict(tiny_swin, api_name="/mean_attention_distance"),
                 lambda: client.predict(tiny_swin, handle_file(str(path)), 0, api_name="/patches_analyse")):
        with pytest.raises(Exception, match="need a single token grid"):
            call()

    # analyse: stage choices, the stages table, the centre cell of the first stage at block 0
    stage, block, head, row, col, overlay, heads, info, stages = client.predict(
        tiny_swin, handle_file(str(path)), None, 0, "mean", api_name="/attention_windows")
    assert [choice[1] for choice in stage["choices"]] == [0, 1, 2, 3] and _value(stage) == 0
    assert block["maximum"] == 1 and _value(head) == "mean"
    assert [c if isinstance(c, str) else c[1] for c in head["choices"]] == ["mean", "max", "min", "head 0", "head 1"]
    assert (row["maximum"], col["maximum"], _value(row), _value(col)) == (15, 15, 8, 8)
    figure = _plot(overlay)
    assert [t["type"] for t in figure["data"]] == ["image", "heatmap", "scatter"]
    assert figure["data"][2]["name"] == "window" and figure["data"][2]["mode"] == "lines"
    assert len(figure["data"][2]["x"]) == 16 * 3   # a 4x4 window unshifted: 16 unit edges, each x0, x1, None
    assert _title(overlay).startswith("stage 0, block 0 (window), mean over heads: where cell (8, 8) looks")
    assert "16 cells" in info and "grid 16x16" in info
    assert len(_plot(heads)["layout"]["annotations"]) == 2 and "stage 0, block 0" in _title(heads)
    table = _plot(stages)["data"][0]
    assert table["type"] == "table" and table["cells"]["values"][0] == [0, 1, 2, 3]

    # another stage keeps the query's place in the image, at that stage's resolution; block and head are kept
    block, head, row, col, overlay, heads, info = client.predict(2, 1, "head 1", api_name="/attention_window_stage")
    assert (_value(block), _value(head), row["maximum"], _value(row), _value(col)) == (1, "head 1", 3, 2, 2)
    assert _title(overlay).startswith("stage 2, block 1 (window), head 1: where cell (2, 2) looks")
    assert "grid 4x4" in info and "stage 2, block 1" in _title(heads)

    # block, head and query cell by row / col (shifted windows wrap: the window need not be one square)
    block, head, row, col, overlay, heads, info = client.predict(1, 1, "max", 0, 3, api_name="/attention_window_view")
    assert _title(overlay).startswith("stage 1, block 1 (shifted window), max over heads: where cell (0, 3) looks")
    heat = _plot(overlay)["data"][1]
    assert heat["type"] == "heatmap" and (_value(row), _value(col)) == (0, 3)
    assert "cell (0, 3)" in _title(heads)

    # a click on the shared image picks the cell under it (through the model's resize and centre crop)
    from models import load_model
    preprocess = load_model(tiny_swin).image_tower.preprocess
    x, y = preprocess.source_to_input(100, 30, 128, 128)
    expected = (int(y * 8 / 64), int(x * 8 / 64))
    result = _select(client, IMAGE_LABEL, "Window attention of the query cell", [1, 0, "mean"], (100, 30))
    block, head, row, col, overlay, heads, info = result
    assert (_value(row), _value(col)) == expected
    assert f"stage 1, block 0 (window), mean over heads: where cell {expected} looks" in _title(overlay)
    # the stage changes, the clicked place stays: stage 0 has twice the resolution
    block, head, row, col, overlay, heads, info = client.predict(0, 0, "mean", api_name="/attention_window_stage")
    assert (_value(row), _value(col)) == (int(y * 16 / 64), int(x * 16 / 64))

    # bad input: clear messages
    with pytest.raises(Exception, match="heads 0 to 1"):
        client.predict(0, 0, "head 9", 0, 0, api_name="/attention_window_view")
    with pytest.raises(Exception, match="greater than maximum value 15"):   # the row slider's range: the grid
        client.predict(0, 0, "mean", 99, 0, api_name="/attention_window_view")
    with pytest.raises(Exception, match="Pick a stage from the list"):
        client.predict("deepest", 0, "mean", 0, 0, api_name="/attention_window_view")
    with pytest.raises(Exception, match="Head must be one of mean, max, min or 'head N'"):
        client.predict(0, 0, "head x", 0, 0, api_name="/attention_window_view")
    with pytest.raises(Exception, match="has no attention"):
        client.predict(7, 0, "mean", api_name="/attention_window_stage")

    # a plain ViT: the window section says where its attention is, and its own views work again
    result = client.predict("bundled:mini-vit", handle_file(str(path)), None, 0, "mean", api_name="/attention_windows")
    assert "one token grid" in result[7] and result[5] is None
    with pytest.raises(Exception, match="one token grid"):
        client.predict(0, 0, "mean", 0, 0, api_name="/attention_window_view")


def _fire(client: Client, target_label: str, event: str, output_label: str, data: list, event_data: dict):
    """Fire a browser event (``event``) of a component for the dependency that draws ``output_label``."""
    target, output = _component(client, target_label), _component(client, output_label)
    fn_index = next(i for i, dep in enumerate(client.config["dependencies"])
                    if [target, event] in [list(t) for t in dep["targets"]] and output in dep["outputs"])
    return client.endpoints[fn_index].make_predict(client.new_helper(fn_index))(*data, event_data=event_data,
                                                                                 trigger_id=target)


def test_a_click_on_the_overlay_or_the_patch_grid_picks_that_patch_and_on_the_heads_that_head(app_url, tmp_path):
    path = tmp_path / "shape.png"
    shapes.make_dataset(1, seed=3)[0].image.save(path)
    client = Client(app_url, verbose=False)
    client.predict("bundled:mini-vit", handle_file(str(path)), 1, "mean", 1.0, api_name="/attention_analyse")
    overlay_label, grid_label = "Attention of the query (click a patch)", "Patch grid (click a patch)"
    # mini-vit: 64 px input, 8x8 patches of 8 px, CLS first; the heatmap reports a cell's centre
    overlay, heads, steps, info, query = _fire(client, overlay_label, "click", overlay_label, [1, "mean", 1.0],
                                               {"x": 5.5 * 8, "y": 2.5 * 8, "trace": 1})
    assert query == 1 + 2 * 8 + 5 and "patch (2, 5)" in info
    assert "where patch (2, 5) looks" in plain_title(json.loads(overlay))
    # the patch grid is the image itself: a pixel lands in the patch that holds it
    *_, info, query = _fire(client, grid_label, "click", overlay_label, [1, "mean", 1.0], {"x": 63, "y": 0})
    assert query == 1 + 7 and "patch (0, 7)" in info
    # the head mosaic: 4 heads in 2 columns of 8x8 tiles with a 1-cell gap; (x=12, y=10) is head 3's (1, 3)
    (head,) = _fire(client, "All heads (click one to pick it)", "click", "Head (or fusion; click a head in the grid)",
                    [], {"x": 12, "y": 10})
    assert _value(head) == "head 3"
