"""The Model tab through the app's real HTTP API (gradio_client against a launched app)."""
from __future__ import annotations

import pytest
from app_server import running_app
from gradio_client import Client

from models import load_model


@pytest.fixture(scope="module")
def app_url(tiny_ids):
    with running_app("--model", tiny_ids["open_clip_vit"], "--model", tiny_ids["hf_vit"]) as url:
        yield url


def test_describe_model_reports_the_real_structure(app_url, tiny_ids):
    client = Client(app_url, verbose=False)
    facts, blocks, tree, hooks, known = client.predict(tiny_ids["hf_vit"], api_name="/describe_model")
    fact_map = {row[0]: row[1] for row in facts["data"]}
    model = load_model(tiny_ids["hf_vit"])
    assert fact_map["parameters"] == f"{model.num_parameters:,}"
    assert fact_map["patch grid"] == "4x4" and fact_map["family"] == "vit"
    assert [row[0] for row in blocks["data"]][:2] == ["blocks.0", "blocks.1"]
    assert any(row[2] == "1x5" for row in tree["data"])  # the classifier's output for one image
    assert "blocks.1.attn.pattern" in hooks.splitlines()
    assert known == ""  # a real checkpoint's training is told by its own card, not by clipscope


def test_clip_facts_include_text_tower(app_url, tiny_ids):
    client = Client(app_url, verbose=False)
    facts, _, _, hooks, _ = client.predict(tiny_ids["open_clip_vit"], api_name="/describe_model")
    fact_map = {row[0]: row[1] for row in facts["data"]}
    assert fact_map["family"] == "clip"
    assert fact_map["context length"] == "16"
    assert fact_map["vocab size"] == "49,408"
    assert "text.blocks.0.attn.pattern" in hooks.splitlines()


@pytest.mark.parametrize("bad_id, fragment", [
    ("no:such-backend", "unknown backend"),
    ("torchvision:resnet51", "does not know"),
    ("", "model id"),
])
def test_bad_ids_get_a_message_and_the_server_keeps_serving(app_url, tiny_ids, bad_id, fragment):
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception) as info:
        client.predict(bad_id, api_name="/describe_model")
    assert fragment in str(info.value)
    facts, *_ = client.predict(tiny_ids["hf_vit"], api_name="/describe_model")
    assert facts["data"]


def test_copy_as_python_reads_the_same_tables(app_url, tiny_ids):
    client = Client(app_url, verbose=False)
    code = client.predict(tiny_ids["hf_vit"], api_name="/model_copy_python")
    assert f"load_model({tiny_ids['hf_vit']!r})" in code and "example_image" not in code
    namespace: dict = {}
    exec(compile(code, "<copy>", "exec"), namespace)   # the tables the code reads are the tab's tables
    facts, *_ = client.predict(tiny_ids["hf_vit"], api_name="/describe_model")
    assert namespace["figures"]["facts"] == facts["data"]
    assert namespace["figures"]["hooks"].splitlines() == client.predict(tiny_ids["hf_vit"],
                                                                        api_name="/describe_model")[3].splitlines()
