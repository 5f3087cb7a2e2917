"""The whole app in a real headless Chromium: every tab once, on the shared example image, with a screenshot of each
saved as a test artifact (test-artifacts/screenshots/), and no error in the browser console."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_server import ROOT, running_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("CLIPSCOPE_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"
LONG = 180_000  # ms: a first request on a busy 2-core machine

pytestmark = pytest.mark.browser

SHARED_PICTURE = """() => [...document.querySelectorAll('img')].find(i => !i.closest('[role=tabpanel]')
    && !i.closest('button') && i.getBoundingClientRect().width > 100)"""


@pytest.fixture(scope="module")
def browser_page():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required for the browser tests (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with running_app() as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.goto(url)
        yield page, errors
        browser.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _tab(page, name: str):
    page.get_by_role("tab", name=name, exact=True).click()
    return page.get_by_role("tabpanel").first


def _wait_text(page, text: str, timeout: int = LONG) -> None:
    page.wait_for_function(f"document.body.innerText.includes({text!r})", timeout=timeout)


def _click_picture(page, fx: float, fy: float, expected: str) -> None:
    """Click the shared image at a fraction of its size until ``expected`` shows (a click during a re-render may
    be dropped)."""
    for _ in range(3):
        picture = page.evaluate_handle(SHARED_PICTURE).as_element()
        picture.scroll_into_view_if_needed()
        box = picture.bounding_box()
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        try:
            _wait_text(page, expected, 40_000)
            return
        except Exception:
            continue
    raise AssertionError(f"{expected!r} never showed:\n{page.inner_text('body')[:2000]}")


VISIBLE_PLOTS = """[...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')]
    .filter(p => p.getBoundingClientRect().width > 0 && p._fullData)"""


def _plot_sum(page, index: int) -> float:
    """Sum of the heat values of the visible tab's ``index``-th Plotly figure (to see that a map changed)."""
    page.wait_for_function(f"(index) => {VISIBLE_PLOTS}.length > index", arg=index, timeout=LONG)
    return page.evaluate(f"""(index) => {{
        const plots = {VISIBLE_PLOTS};
        const heat = plots[index]._fullData.find(t => t.type === 'heatmap');
        let total = 0;
        for (const row of heat.z) for (const value of row) total += value || 0;
        return total; }}""", index)


def test_1_page_loads_and_the_model_tab_describes_the_default(browser_page):
    page, _ = browser_page
    _wait_text(page, "patch grid")
    assert "blocks.1.attn.pattern" in page.locator("textarea").first.input_value()
    _shot(page, "1-model")


def test_2_an_example_fills_the_shared_image(browser_page):
    page, _ = browser_page
    page.locator("button:has(img)").first.click()  # the first example: a procedural shapes scene
    page.wait_for_function(f"({SHARED_PICTURE})() !== undefined", timeout=LONG)


def test_3_attention_a_click_on_the_image_changes_the_map(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Attention")
    tab.get_by_role("button", name="Analyse").click()
    _wait_text(page, "(token 0)")
    page.wait_for_timeout(500)
    before = _plot_sum(page, 0)
    _click_picture(page, 0.85, 0.15, "Query: patch (")
    page.wait_for_timeout(1000)
    assert _plot_sum(page, 0) != pytest.approx(before)
    _shot(page, "2-attention")


def test_4_patches(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Patches")
    tab.get_by_role("button", name="Analyse").click()
    page.wait_for_function(f"{VISIBLE_PLOTS}.length >= 5", timeout=LONG)
    _shot(page, "3-patches")


def test_5_cnn_a_click_picks_the_receptive_field_unit(browser_page):
    page, _ = browser_page
    tab = _tab(page, "CNN")
    tab.get_by_role("button", name="Analyse").click()
    _wait_text(page, "mini-cnn: CNN")
    page.get_by_role("tab", name="Receptive field").click()
    _wait_text(page, "theoretical field")
    _click_picture(page, 0.03, 0.03, "unit (0, 0)")
    _shot(page, "4-cnn")


def test_6_zero_shot_and_softmax(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Zero-shot & Softmax")
    tab.get_by_role("button", name="Classify").click()
    _wait_text(page, "probabilities sum to 1")
    _shot(page, "5-zero-shot")


def test_7_embedding_map_renders_its_points(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Embedding space")
    tab.get_by_role("button", name="Embed", exact=True).click()
    page.wait_for_function("document.querySelector('.cs-map .main-svg') !== null", timeout=LONG)
    points = page.evaluate("""() => document.querySelector('.cs-map')._fullData
        .filter(t => (t.mode || '').includes('markers')).reduce((n, t) => n + t.x.length, 0)""")
    assert points >= 100
    _shot(page, "6-embedding-space")


def test_8_no_errors_anywhere(browser_page):
    page, errors = browser_page
    text = page.inner_text("body")
    assert "Traceback" not in text and "Unexpected error" not in text
    assert not errors, errors[:5]
