"""The app in a real headless Chromium: the Model tab loads a model and shows its structure."""
from __future__ import annotations

import shutil

import pytest
from app_server import running_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(tiny_ids):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not shutil.which(CHROMIUM):
        pytest.fail("Chromium is required for the browser tests (apt-get install chromium)")
    with running_app("--model", tiny_ids["hf_vit"]) as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        yield page
        browser.close()


def test_model_tab_loads_and_shows_structure(page, tmp_path):
    page.get_by_role("button", name="Load").click()
    page.wait_for_function("document.body.innerText.includes('patch grid')", timeout=60_000)
    text = page.inner_text("body")
    assert "4x4" in text and "blocks.1.attn.pattern" in page.locator("textarea").first.input_value()
    assert "Traceback" not in text
    page.screenshot(path=str(tmp_path / "model_tab.png"), full_page=True)


def test_attention_tab_click_picks_a_patch(page, tmp_path):
    page.get_by_role("tab", name="Attention").click()
    tab = page.get_by_role("tabpanel")
    tab.locator("img").nth(1).click()  # an example thumbnail fills the (empty) image input
    page.wait_for_function(  # the input now shows the example, larger than any thumbnail
        "() => { const imgs = document.querySelectorAll('[role=tabpanel] img');"
        " return imgs.length > 0 && imgs[0].getBoundingClientRect().width > 100; }", timeout=120_000)
    page.get_by_role("button", name="Analyse").first.click()
    page.wait_for_function("document.body.innerText.includes('Query: CLS')", timeout=120_000)
    picture = tab.locator("img").first  # the image input, now holding the example
    box = picture.bounding_box()
    assert box["width"] > 100
    for _ in range(3):  # a click that lands while the page is still settling may be dropped: click again
        picture.click(position={"x": box["width"] * 0.9, "y": box["height"] * 0.1})
        try:
            page.wait_for_function("document.body.innerText.includes('Query: patch (')", timeout=40_000)
            break
        except Exception:
            continue
    text = page.inner_text("body")
    assert "Query: patch (" in text, text[:2000]
    assert "Traceback" not in text
    page.screenshot(path=str(tmp_path / "attention_tab.png"), full_page=True)


def test_cnn_tab_click_picks_the_receptive_field_unit(page, tmp_path):
    page.get_by_role("tab", name="CNN").click()
    tab = page.get_by_role("tabpanel").first
    tab.locator("img").nth(1).click()  # an example thumbnail
    page.wait_for_function(
        "() => { const imgs = document.querySelectorAll('[role=tabpanel] img');"
        " return [...imgs].some(i => i.getBoundingClientRect().width > 100); }", timeout=120_000)
    picker = tab.get_by_role("combobox", name="Model id")
    picker.fill("bundled:mini-cnn")
    picker.press("Enter")
    tab.get_by_role("button", name="Analyse").click()
    page.wait_for_function("document.body.innerText.includes('mini-cnn: CNN')", timeout=120_000)
    page.get_by_role("tab", name="Receptive field").click()
    page.wait_for_function("document.body.innerText.includes('theoretical field')", timeout=120_000)
    first = page.inner_text("body")
    picture = tab.locator("img").first
    box = picture.bounding_box()
    for _ in range(3):
        picture.click(position={"x": box["width"] * 0.1, "y": box["height"] * 0.1})
        try:
            page.wait_for_function("document.body.innerText.includes('unit (0, 0)')", timeout=40_000)
            break
        except Exception:
            continue
    text = page.inner_text("body")
    assert "unit (0, 0)" in text and "unit (0, 0)" not in first, text[:2000]
    assert "Traceback" not in text
    page.screenshot(path=str(tmp_path / "cnn_tab.png"), full_page=True)
