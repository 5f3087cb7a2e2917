"""The URL state: what a link's query string restores (ui.url_state.restore_updates), and that the browser code
each control runs writes its key (the round trip through a real page is in tests/test_browser.py)."""
from __future__ import annotations

import gradio as gr

from ui.examples import example_path
from ui.url_state import parse_value, restore_updates, select_linked_tab_js, tab_js, write_js


def _fields():
    return {"vit_model": gr.Dropdown(["bundled:mini-clip"]), "layer": gr.Slider(0, 11), "query": gr.Number(),
            "head": gr.Dropdown(["mean"]), "temperature": gr.Slider(0.01, 10.0), "image": gr.Textbox()}


def test_a_link_restores_its_fields_and_its_example_image():
    params = {"vit_model": "bundled:mini-vit", "layer": "2", "query": "17", "head": "head 1", "temperature": "0.5",
              "image": "shapes-2", "tab": "attention", "unknown": "x"}
    values, (image,), message = restore_updates(params, _fields(), ["attention", "cnn"])
    assert values == {"vit_model": "bundled:mini-vit", "layer": 2, "query": 17, "head": "head 1",
                      "temperature": 0.5, "image": "shapes-2"}
    assert isinstance(values["layer"], int) and image == example_path("shapes-2")
    assert message == ""


def test_what_a_link_cannot_restore_is_named():
    values, (image,), message = restore_updates({"image": "upload", "layer": "two", "tab": "nowhere"}, _fields(),
                                                ["attention"])
    assert values == {} and not isinstance(image, str)
    assert "upload" in message and "layer='two' is not a number" in message and "no tab 'nowhere'" in message
    _, (image,), message = restore_updates({"image": "my-cat"}, _fields(), ["attention"])
    assert "no example image 'my-cat'" in message and not isinstance(image, str)


def test_parse_value_by_component():
    assert parse_value(gr.Slider(0, 1), "0.25") == 0.25
    assert parse_value(gr.Number(), "3") == 3
    assert parse_value(gr.Textbox(), "3") == "3"


def test_the_browser_code_writes_its_key():
    assert '"layer"' in write_js("layer") and "history.replaceState" in write_js("layer")
    code = tab_js("zero-shot")
    assert '"zero-shot"' in code and '"tab"' in code and "history.replaceState" in code


def test_a_link_opens_its_tab_in_the_browser_and_no_server_event_sets_the_tabs():
    """The tab a link names is clicked open by browser code at mount: a Tabs output of the server's page-load event
    is re-applied when that event answers and, on a busy server, threw a user back from a tab already opened."""
    import app

    config = app.build_app().get_config_file()
    tabs_ids = {c["id"] for c in config["components"] if c["type"] == "tabs"}
    assert tabs_ids, "the app has no Tabs"
    assert not [d for d in config["dependencies"] if tabs_ids & set(d["outputs"])]
    code = select_linked_tab_js({"attention": "Attention", "ablate": "Ablate & patch"})
    assert '"ablate": "Ablate & patch"' in code and "data-tab-id" in code and ".overflow-dropdown" in code
    assert any(d["js"] and "data-tab-id" in d["js"] for d in config["dependencies"]), "no mount-time tab selection"
