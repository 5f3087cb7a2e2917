"""The Decomposition tab through the app's real HTTP API: the score's terms add up to the score, the head map covers
the patch grid, the mean-ablation table and TextSpan answer, and models it cannot decompose get a message."""
from __future__ import annotations

import re

import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from plotly_json import figure_json, plain_title, plotly_array

from models import shapes


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("decomposition") / "shape.png"
    shapes.make_dataset(1, seed=77, two_objects_prob=0.0)[0].image.resize((128, 128)).save(path)
    return handle_file(str(path))




def test_score_terms_add_up_and_the_head_map_covers_the_grid(app_url, image):
    client = Client(app_url, verbose=False)
    heads, layers, notice, patches, patches_notice = client.predict(
        "bundled:mini-clip", image, "a red circle", 3, 1, api_name="/decomposition_score")
    heat = figure_json(heads)["data"][0]
    assert heat["type"] == "heatmap" and plotly_array(heat["z"]).shape == (4, 4)
    bars = figure_json(layers)["data"][0]
    assert len(bars["x"]) == 1 + 4 + 4 + 1                                  # embeddings, 4 attn, 4 MLP, norm bias
    score = float(re.search(r"\*\*(-?[\d.]+)\*\* = logit scale", notice).group(1))
    total = float(re.search(r"\*\*sum (-?[\d.]+)\*\*", notice).group(1))
    assert total == pytest.approx(score, abs=2e-4) and plotly_array(bars["y"]).sum() == pytest.approx(score, abs=1e-3)
    overlay = figure_json(patches)["data"]
    assert [t["type"] for t in overlay] == ["image", "heatmap"] and plotly_array(overlay[1]["z"]).shape == (8, 8)
    head_total = float(re.search(r"adds \*\*(-?[\d.]+)\*\*", patches_notice).group(1))
    assert head_total == pytest.approx(float(plotly_array(heat["z"])[3, 1]), abs=2e-3)
    again, _ = client.predict("bundled:mini-clip", image, "a red circle", 0, 2, api_name="/decomposition_head")
    assert plain_title(figure_json(again)).startswith("Layer 0, head 2")


def test_mean_ablation_table_and_text_span_answer(app_url):
    client = Client(app_url, verbose=False)
    plot, table, notice = client.predict("bundled:mini-clip", 24, api_name="/decomposition_ablation")
    rows = table["data"]
    assert [row[0] for row in rows] == [0, 1, 2, 3, 4] and len(figure_json(plot)["data"]) == 3
    assert rows[0][1] > rows[-1][1]                                          # all attention ablated: accuracy falls
    plot, table, notice = client.predict("bundled:mini-clip", "3.1, 2.2", 4, 3, "", 24,
                                         api_name="/decomposition_text_span")
    rows = table["data"]
    assert [row[0] for row in rows] == ["3.1"] * 3 + ["2.2"] * 3 and "candidate texts" in notice
    explained = [row[4] for row in rows[:3]]
    assert explained == sorted(explained) and 0 < explained[-1] <= 1
    _, table, _ = client.predict("bundled:mini-clip", "3.1", 4, 2, "something red\na circle\na green star", 24,
                                 api_name="/decomposition_text_span")
    assert {row[2] for row in table["data"]} <= {"something red", "a circle", "a green star"}


def test_bad_input_gets_messages(app_url, image):
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="no text tower"):
        client.predict("bundled:mini-vit", image, "a red circle", -1, 0, api_name="/decomposition_score")
    with pytest.raises(Exception, match="Type a prompt"):
        client.predict("bundled:mini-clip", image, "  ", -1, 0, api_name="/decomposition_score")
    with pytest.raises(Exception, match="No head 3.7"):
        client.predict("bundled:mini-clip", image, "a red circle", 3, 7, api_name="/decomposition_head")
    with pytest.raises(Exception, match="layer.head"):
        client.predict("bundled:mini-clip", "three", 4, 3, "", 24, api_name="/decomposition_text_span")
    assert client.predict("bundled:mini-clip", 12, api_name="/decomposition_ablation")   # still serving


@pytest.mark.browser
def test_the_tab_decomposes_the_shared_image_in_a_real_browser(app_url):
    """Headless Chromium: open the Decomposition tab, press Decompose on the shared example image, see the score's
    terms add up and the head's patch map drawn, with no error in the console."""
    import shutil
    from pathlib import Path

    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Chromium is required for the browser tests (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.goto(app_url)
        # let the first tab finish drawing, so that the decomposition below does not share the cores with it
        page.wait_for_function("(document.querySelector('#cs-overlay .js-plotly-plot') || {})._fullData "
                               "!== undefined", timeout=180_000)
        page.get_by_role("tab", name="Decomposition", exact=True).click()
        button = page.get_by_role("button", name="Decompose", exact=True)
        button.wait_for(state="visible", timeout=180_000)
        button.click()
        page.wait_for_function("document.body.innerText.includes('= logit scale')", timeout=180_000)
        page.wait_for_function("document.body.innerText.includes('adds')", timeout=60_000)
        text = page.inner_text("body")
        score = float(re.search(r"(-?\d+\.\d+) = logit scale", text).group(1))
        total = float(re.search(r"sum (-?\d+\.\d+)\. The final norm", text).group(1))
        drawn = page.evaluate("""[...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')]
            .filter(p => p.getBoundingClientRect().width > 0 && p._fullData).map(p => p._fullData[0].type)""")
        browser.close()
    assert total == pytest.approx(score, abs=2e-4)
    assert drawn[:3] == ["heatmap", "bar", "image"], drawn
    assert not errors, errors
