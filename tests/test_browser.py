"""The whole app in a real headless Chromium (one server, one page): the first screen draws the preselected example,
clicks on the figures pick the query / head / unit, the URL restores the view, an image change clears the stale
figures, every tab once, with a screenshot of each saved as a test artifact (test-artifacts/screenshots/), and no
error in the browser console."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_server import ROOT, running_app

from app import TAB_IDS as TAB_IDS_IN_ORDER
from app import TABS
from docs.layout_audit import OVERFLOWING_TEXT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader"]
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
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.goto(url)
        page.wait_for_function(f"({_figure_of('cs-overlay')} || {{}})._fullData !== undefined", timeout=LONG)
        yield page, errors
        browser.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


TAB_IDS = dict(zip(TABS, TAB_IDS_IN_ORDER, strict=True))


def _tab(page, name: str):
    """Open a tab by a real click; the URL then names it."""
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_function(f"(id) => (new URL(location.href).searchParams.get('tab') || {TAB_IDS_IN_ORDER[0]!r}) "
                           "=== id", arg=TAB_IDS[name], timeout=LONG)   # no tab in the link: the first one
    return page.get_by_role("tabpanel").first


def _no_text_cut_off(page) -> None:
    """No title, subplot title or axis title of the visible tab runs past its figure's edge."""
    overflowing = page.evaluate(OVERFLOWING_TEXT)
    assert not overflowing, overflowing


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


def _figure_of(elem_id: str) -> str:
    """Browser code: the drawn Plotly figure inside the component with ``elem_id`` (a PlotlyFigure)."""
    return f"document.querySelector('#{elem_id} .js-plotly-plot')"


def _heat(page, elem_id: str) -> list:
    """Every value of the first heatmap in the figure ``elem_id`` (None for gaps), row by row."""
    page.wait_for_function(f"({_figure_of(elem_id)} || {{}})._fullData !== undefined", timeout=LONG)
    return page.evaluate(f"""() => {{
        const heat = {_figure_of(elem_id)}._fullData.find(t => t.type === 'heatmap');
        return Array.from(heat.z, row => Array.from(row, v => (v === null || Number.isNaN(v)) ? null : v)); }}""")


def _click_data(page, elem_id: str, x: float, y: float) -> None:
    """A real mouse click on the figure ``elem_id`` at the data coordinates (x, y)."""
    page.wait_for_function(f"({_figure_of(elem_id)} || {{}})._fullLayout !== undefined", timeout=LONG)
    page.evaluate(f"{_figure_of(elem_id)}.scrollIntoView({{block: 'center'}})")
    page.wait_for_timeout(300)
    px, py = page.evaluate(f"""([x, y]) => {{
        const gd = {_figure_of(elem_id)}, xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.getBoundingClientRect();
        return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)]; }}""", [x, y])
    page.mouse.move(px, py)
    page.mouse.click(px, py)


def _query(page) -> str:
    return page.locator("#cs-query input").input_value()


# mini-clip (the default): 64 px input, 8x8 patches of 8 px, CLS first, 4 heads in a 2x2 mosaic of 8x8 tiles
def test_1_an_example_is_preselected_and_the_first_tab_draws_it_without_a_click(browser_page):
    page, _ = browser_page
    assert page.get_by_role("tab", name="Attention", exact=True).get_attribute("aria-selected") == "true"
    heat = _heat(page, "cs-overlay")   # drawn on load, from the preselected example
    assert len(heat) == 8 and len(heat[0]) == 8 and sum(map(sum, heat)) > 0
    assert len(_heat(page, "cs-heads")) == 17   # 2 tiles of 8 rows and a 1-row gap
    assert page.evaluate(f"({SHARED_PICTURE})() !== undefined")
    captions = page.locator("#cs-examples").inner_text()
    assert "scene: 2 shapes" in captions and "photo: a cat" in captions
    tabs_top = page.get_by_role("tab", name="Attention", exact=True).bounding_box()["y"]
    assert tabs_top < 200, tabs_top   # the shared inputs sit beside the tabs, not above them
    _shot(page, "1-attention-first-view")


def test_2_a_click_on_the_overlay_picks_the_patch_and_on_the_head_grid_the_head(browser_page):
    page, _ = browser_page
    _click_data(page, "cs-overlay", 5.5 * 8, 2.5 * 8)   # the centre of patch (2, 5)
    _wait_text(page, "patch (2, 5)")
    page.wait_for_function("(document.querySelector('#cs-query input') || {}).value === '22'", timeout=LONG)
    _click_data(page, "cs-heads", 9 + 3, 4)   # head 1: the right-hand tile of the first row
    page.wait_for_function("new URL(location.href).searchParams.get('head') === 'head 1'", timeout=LONG)
    _wait_text(page, "layer 0, head 1")
    _click_data(page, "cs-attention-grid", 8 * 7 + 3, 8 * 6 + 3)   # a pixel of patch (6, 7) on the patch grid
    page.wait_for_function("(document.querySelector('#cs-query input') || {}).value === '56'", timeout=LONG)
    assert new_url_params(page)["query"] == "56"
    _no_text_cut_off(page)


def new_url_params(page) -> dict:
    return page.evaluate("Object.fromEntries(new URL(location.href).searchParams)")


def test_3_the_url_restores_the_same_view(browser_page):
    page, _ = browser_page
    params = new_url_params(page)
    assert params.get("tab", "attention") == "attention"   # no tab named: the first one
    assert params["head"] == "head 1" and params["query"] == "56"   # the image: the preselected default
    page.wait_for_timeout(1000)
    overlay, heads = _heat(page, "cs-overlay"), _heat(page, "cs-heads")
    again = page.context.browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        again.goto(page.url)
        again.wait_for_function("(document.querySelector('#cs-query input') || {}).value === '56'", timeout=LONG)
        _wait_text(again, "patch (6, 7)")
        again.wait_for_timeout(1000)
        assert _heat(again, "cs-overlay") == overlay and _heat(again, "cs-heads") == heads
        assert again.locator("#cs-query input").input_value() == "56"
    finally:
        again.close()


def test_4_changing_the_image_marks_the_figures_stale(browser_page):
    page, _ = browser_page
    page.locator("#cs-examples [aria-label='Thumbnail 1 of 6']").click()   # another example: one shape
    page.wait_for_function("document.querySelector('#cs-attention-stale').innerText.includes('Stale')",
                           timeout=LONG)
    page.wait_for_function("document.querySelector('#cs-overlay').innerText.includes('Press Analyse')",
                           timeout=LONG)   # cleared, not left wrong
    assert page.evaluate(f"({_figure_of('cs-overlay')} || {{}})._fullData === undefined")
    assert new_url_params(page)["image"] == "shapes-0"
    _shot(page, "2-attention-stale")
    _tab(page, "Attention").get_by_role("button", name="Analyse").click()
    page.wait_for_function("document.querySelector('#cs-attention-stale').innerText.trim() === ''", timeout=LONG)
    assert sum(v or 0 for row in _heat(page, "cs-overlay") for v in row) > 0


def test_5_patches_a_click_on_the_grid_or_the_similarity_map_picks_the_query(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Patches")
    tab.get_by_role("button", name="Analyse").click()
    page.wait_for_function(f"{VISIBLE_PLOTS}.length >= 5", timeout=LONG)
    first = _heat(page, "cs-patch-similarity")
    _click_data(page, "cs-patch-grid", 3.5 * 8, 6.5 * 8)    # patch (6, 3) of the image as the model saw it
    page.wait_for_function("(document.querySelector('#cs-patch-query input') || {}).value === '52'", timeout=LONG)
    page.wait_for_function(f"{_figure_of('cs-patch-similarity')}._fullLayout.title.text.includes('row 6, col 3')",
                           timeout=LONG)
    moved = _heat(page, "cs-patch-similarity")
    assert moved != first and moved[6][3] == pytest.approx(1.0, abs=1e-5)   # a patch is most similar to itself
    _click_data(page, "cs-patch-similarity", 2, 1)           # cell (1, 2) of the similarity map
    page.wait_for_function("(document.querySelector('#cs-patch-query input') || {}).value === '11'", timeout=LONG)
    page.wait_for_function(f"{_figure_of('cs-patch-similarity')}._fullLayout.title.text.includes('row 1, col 2')",
                           timeout=LONG)
    _no_text_cut_off(page)
    _shot(page, "3-patches")


def test_6_cnn_a_click_on_the_layer_map_picks_the_unit(browser_page):
    page, _ = browser_page
    tab = _tab(page, "CNN")
    tab.get_by_role("button", name="Analyse").click()
    _wait_text(page, "mini-cnn: CNN")
    page.get_by_role("tab", name="Receptive field").click()
    _wait_text(page, "theoretical field")
    shape = len(_heat(page, "cs-layer-map")), len(_heat(page, "cs-layer-map")[0])
    _click_data(page, "cs-layer-map", 1, shape[0] - 1)
    _wait_text(page, f"unit ({shape[0] - 1}, 1)")
    page.wait_for_function("(u) => new URL(location.href).searchParams.get('unit') === u",
                           arg=f"{shape[0] - 1}, 1", timeout=LONG)           # the unit travels in the link
    link = page.url
    _no_text_cut_off(page)
    _click_picture(page, 0.03, 0.03, "unit (0, 0)")   # the shared image's click still works
    _shot(page, "4-cnn")
    again = page.context.browser.new_page(viewport={"width": 1440, "height": 1000})
    try:   # opening the link restores that unit of that layer
        again.goto(link)
        again.get_by_role("tab", name="Receptive field").click(timeout=LONG)
        again.wait_for_function("(u) => (document.querySelector('#cs-unit textarea, #cs-unit input') || {}).value"
                                " === u", arg=f"{shape[0] - 1}, 1", timeout=LONG)
        _wait_text(again, f"unit ({shape[0] - 1}, 1)")
    finally:
        again.close()


def test_7_zero_shot_and_softmax(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Zero-shot & Softmax")
    tab.get_by_role("button", name="Classify").click()
    _wait_text(page, "probabilities sum to 1")
    _no_text_cut_off(page)
    _shot(page, "5-zero-shot")
    # a tab whose figures a button draws clears them, and says so, when the image changes
    page.locator("#cs-examples [aria-label='Thumbnail 3 of 6']").click()
    _wait_text(page, "since these figures were drawn, so they were cleared")
    assert not page.evaluate(f"{VISIBLE_PLOTS}.some(p => p.closest('[role=tabpanel]').innerText.includes('Top-k'))")
    tab.get_by_role("button", name="Classify").click()
    page.wait_for_function("!document.body.innerText.includes('since these figures were drawn')", timeout=LONG)


def test_8_embedding_map_renders_its_points(browser_page):
    page, _ = browser_page
    tab = _tab(page, "Embedding space")
    tab.get_by_role("button", name="Embed", exact=True).click()
    page.wait_for_function("document.querySelector('.cs-map .main-svg') !== null", timeout=LONG)
    points = page.evaluate("""() => document.querySelector('.cs-map')._fullData
        .filter(t => (t.mode || '').includes('markers')).reduce((n, t) => n + t.x.length, 0)""")
    assert points >= 100
    _shot(page, "6-embedding-space")
    # a box drawn with the map's own select tool selects the points inside it: the same points plotly.js reports
    page.locator(".cs-map .modebar-btn[data-title='Box Select']").click()
    box = page.locator(".cs-map .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=12)
    page.mouse.up()
    _wait_text(page, "points selected")
    caught = page.evaluate("""() => new Set(document.querySelector('.cs-map')._fullData
        .filter(t => (t.mode || '').includes('markers') && t.selectedpoints)
        .flatMap(t => t.selectedpoints.map(i => t.customdata[i]))).size""")
    assert caught > 0 and f"{caught:,} point" in page.locator("#cs-selection-info").inner_text()
    # isolate a point's neighbours: the WebGL map then shows only that point and them
    page.locator("#cs-point input").fill("3")
    tab.get_by_role("button", name="Isolate its neighbours").click()
    shown = "[...document.querySelectorAll('[data-shown-points]')].map(e => e.dataset.shownPoints)"
    try:
        _wait_text(page, "nearest to image 3")
        page.wait_for_function(f"{shown}.includes('21')", timeout=LONG)    # point 3 and its 20 neighbours
    except Exception as error:
        _shot(page, "8-isolate-failed")
        raise AssertionError(f"shown points {page.evaluate(shown)}; "
                             f"{page.locator('#cs-isolate-info').inner_text()[:300]}") from error
    tab.get_by_role("button", name="Show all points").click()   # a small set: back on the Plotly map, every point
    page.wait_for_function(f"""() => {{ const map = document.querySelector('.cs-map');
        return map && map.getBoundingClientRect().width > 0 && map._fullData && map._fullData
            .filter(t => (t.mode || '').includes('markers')).reduce((n, t) => n + t.x.length, 0) === {points}; }}""",
                           timeout=LONG)
    # the link carries the tab's set, projection, colouring and query, and opening it embeds and draws that map
    tab.get_by_role("radio", name="PCA").check()
    tab.get_by_role("radio", name="modality").check()
    page.wait_for_function("new URL(location.href).searchParams.get('map_colour') === 'modality'", timeout=LONG)
    params = new_url_params(page)
    assert params["map_method"] == "PCA" and params["map_colour"] == "modality"
    link = page.evaluate("(() => { const u = new URL(location.href); u.searchParams.set('tab', 'embedding'); "
                         "return u.href; })()")
    again = page.context.browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        again.goto(link)
        again.wait_for_function("""() => { const map = document.querySelector('.cs-map');
            return map && map._fullLayout && map._fullLayout.title.text.startsWith('PCA'); }""", timeout=LONG)
        assert again.get_by_role("tabpanel").first.get_by_role("radio", name="modality").is_checked()
    finally:
        again.close()


def test_9_the_model_tab_describes_the_default_and_no_errors_anywhere(browser_page):
    page, errors = browser_page
    _tab(page, "Model")
    _wait_text(page, "patch grid")
    assert "blocks.1.attn.pattern" in page.get_by_label("Hook names (model.capture([...]))").input_value()
    text = page.inner_text("body")
    assert "Traceback" not in text and "Unexpected error" not in text
    assert not errors, errors[:5]
