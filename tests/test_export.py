"""Exports say what they hold: file names after model and view, provenance (models, image hash, each view's
settings, clipscope version and commit, date) in the HTML, the CSV and the Parquet file, the camera PNG's name in
each figure's config, and one self-contained HTML page (plotly.js inside once, compressed) that draws offline."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from models import load_model, shapes
from ui.export import Plot, clipscope_version, write_figures, write_table
from viz.provenance import image_fingerprint
from viz.views import Subject, run_view

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def export_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.export.EXPORT_DIR", tmp_path)


@pytest.fixture(scope="module")
def figures():
    image = shapes.make_dataset(1, seed=2)[0].image
    image.info["clipscope_source"] = "red_square.png"
    subject = Subject(load_model("bundled:mini-clip", device="cpu"), image)
    rollout = run_view("attention.rollout", subject, fusion="max", discard=0.5)["rollout"]
    query = run_view("attention.query", subject, layer=2, head="head 1", query=0)["overlay"]
    return image, [("Rollout", rollout.to_json()), ("Query", query.to_json())], rollout


def test_each_figure_is_stamped_and_its_png_named_after_model_and_view(figures):
    image, _, rollout = figures
    stamp = rollout.layout.meta["clipscope"]
    assert stamp["view"] == "attention.rollout" and stamp["model"] == "bundled:mini-clip"
    assert stamp["settings"] == {"fusion": "max", "discard": 0.5}
    assert stamp["image"] == image_fingerprint(image) and stamp["image"]["name"] == "red_square.png"
    sent = json.loads(Plot().postprocess(rollout).plot)
    assert sent["config"]["toImageButtonOptions"]["filename"] == "clipscope_mini-clip_attention_rollout"


def test_html_export_is_one_small_page_with_its_provenance(figures):
    image, payloads, _ = figures
    path = write_figures("Attention", payloads)
    assert path.name == "clipscope_mini-clip_attention.html"
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 2_500_000      # plotly.js alone is 4.8 MB: it is inside once, compressed
    assert text.count("id='plotlyjs'") == 1 and text.count("class='figure'") == 2
    provenance = json.loads(re.search(r"id='clipscope-provenance'>(.*?)</script>", text).group(1))
    assert provenance["models"] == ["bundled:mini-clip"] and provenance["images"] == [image_fingerprint(image)]
    assert provenance["clipscope"] == clipscope_version() and provenance["clipscope"]["version"]
    assert [f["view"] for f in provenance["figures"]] == ["attention.rollout", "attention.query"]
    assert provenance["figures"][1]["settings"] == {"layer": 2, "head": "head 1", "query": 0}
    assert re.match(r"\d{4}-\d\d-\d\dT", provenance["created"])
    assert "fusion = max, discard = 0.5" in text and "red_square.png" in text


@pytest.mark.browser
def test_html_export_draws_offline_in_chromium(figures):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required for the browser tests (apt-get install chromium)")
    path = write_figures("Attention", figures[1])
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.route("http*://**", lambda route: route.abort())   # offline: nothing may be fetched
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-drawn=yes]", timeout=30_000)
        assert page.locator(".js-plotly-plot").count() == 2
        assert page.evaluate("document.getElementById('figure-0')._context.toImageButtonOptions.filename") == \
            "clipscope_mini-clip_attention_rollout"
        browser.close()


def test_tables_carry_coordinates_and_provenance(tmp_path):
    table = pd.DataFrame({"modality": ["image", "text"], "name": ["a.png", "a #1 red circle"], "e0": [0.1, 0.2],
                          "e1": [0.3, 0.4]})
    provenance = {"export": "embedding table", "models": ["bundled:mini-clip"], "projection": "UMAP"}
    coordinates = {"umap_x": [1.0, 2.0], "umap_y": [3.0, 4.0]}
    csv_path = write_table(table, "CSV", "embeddings", provenance, coordinates)
    assert csv_path.name == "clipscope_mini-clip_embeddings.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '# export: "embedding table"' and '# coordinates: ["umap_x", "umap_y"]' in lines
    back = pd.read_csv(csv_path, comment="#")
    assert list(back.columns) == ["modality", "name", "umap_x", "umap_y", "e0", "e1"]
    assert back["name"][1] == "a #1 red circle" and list(back["umap_y"]) == [3.0, 4.0]
    parquet = write_table(table, "Parquet", "embeddings", provenance, coordinates)
    import pyarrow.parquet as pq
    stored = json.loads(pq.read_schema(parquet).metadata[b"clipscope"])
    assert stored["projection"] == "UMAP" and stored["coordinates"] == ["umap_x", "umap_y"]
    assert list(pd.read_parquet(parquet)["umap_x"]) == [1.0, 2.0]
    with pytest.raises(ValueError, match="umap_x has 1 values for 2 rows"):
        write_table(table, "CSV", "embeddings", provenance, {"umap_x": [1.0]})
