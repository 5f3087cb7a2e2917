"""The Zero-shot & Softmax and Embedding space tabs through the app's real HTTP API (and, in a real browser, the
map's hover thumbnail and click), including bad inputs answered with a message while the server keeps serving."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from plotly_json import figure_json, plain_title, plotly_array

from benchmarks.map_scale import write_synthetic_output
from models import load_model, shapes
from models.embed import embed_folder_to_parquet
from models.world import scenes

VIEW = ["UMAP", "label", False, True]
BIG = 20_000   # rows of the synthetic models.embed output (benchmarks/map_scale.py opens 100k and 1M)
PROCEDURAL = "procedural shapes (images + captions)"
FOLDER = "folder on the server"
OUTPUT = "models.embed output folder"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app with one allowed folder holding a labelled set, an empty folder and a models.embed output."""
    allowed = tmp_path_factory.mktemp("allowed")
    shapes.export_folder(scenes.make_scenes(60, seed=884_001, balanced=True), allowed / "labelled")  # 2 a class
    (allowed / "empty" / "nothing").mkdir(parents=True)
    embed_folder_to_parquet(load_model("bundled:mini-clip", device="cpu"), allowed / "labelled", allowed / "output")
    write_synthetic_output(allowed / "big", BIG, dims=128)   # mini-clip's joint space is 128-d
    outside = tmp_path_factory.mktemp("outside")
    shapes.export_folder(shapes.make_dataset(6, seed=884_002), outside)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPSCOPE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        with running_app("--allow-folder", str(allowed)) as url:
            yield {"url": url, "allowed": allowed, "outside": outside}


def test_allowed_folders_are_checked_after_resolving_links(tmp_path):
    from ui.embedding_tab import allowed_folder

    root = (tmp_path / "root").resolve()
    (root / "inner").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    assert allowed_folder(str(root / "inner"), [root]) == root / "inner"
    assert allowed_folder(str(root), [root]) == root
    with pytest.raises(ValueError, match="outside the folders"):
        allowed_folder(str(root / "escape"), [root])
    with pytest.raises(ValueError, match="outside the folders"):
        allowed_folder(str(root / "inner" / ".." / ".."), [root])
    with pytest.raises(ValueError, match="--allow-folder"):
        allowed_folder(str(root), [])
    with pytest.raises(ValueError, match="Type the path"):
        allowed_folder("  ", [root])


def test_the_launcher_refuses_an_allowed_folder_that_does_not_exist(tmp_path):
    import app

    assert app.parse_args(["--allow-folder", "a", "--allow-folder", "b"]).allow_folder == ["a", "b"]
    with pytest.raises(SystemExit, match="not a folder"):
        app.main(["--allow-folder", str(tmp_path / "missing")])


@pytest.fixture()
def client(served):
    return Client(served["url"], verbose=False)


@pytest.fixture()
def image_file(tmp_path):
    example = shapes.make_dataset(1, seed=884_003, two_objects_prob=0.0)[0]
    path = tmp_path / "shape.png"
    example.image.resize((128, 128)).save(path)
    return path, example.label




def test_zero_shot_then_sliders_move_every_probability(client, image_file):
    path, label = image_file
    labels = f"red circle, blue square, green star, {label}, purple heart"
    result = client.predict("bundled:mini-clip", handle_file(str(path)), labels, "default: a photo of a {}.", "", 3,
                            api_name="/zero_shot_classify")
    top_plot, notice, *sliders, log_t, probabilities_plot, entropy = result
    bars = figure_json(top_plot)["data"][0]
    assert bars["y"][-1] == label and len(bars["y"]) == 3                       # the true class on top
    assert "5 labels × 1 template" in notice and "entropy" in entropy
    assert [s["visible"] for s in sliders] == [True] * 5 + [False] * 3
    assert sliders[0]["label"] == f"logit: {label}"
    model_logits = [s["value"] for s in sliders[:5]]
    slider_labels = [s["label"].removeprefix("logit: ") for s in sliders[:5]]

    moved = 2
    nudged = list(model_logits) + [0.0] * 3
    nudged[moved] += 4.0
    plot, text = client.predict(*nudged, 0.0, api_name="/softmax_sliders")
    bars, reference = figure_json(plot)["data"]
    after = dict(zip(bars["x"], plotly_array(bars["y"]), strict=True))
    before = dict(zip(reference["x"], plotly_array(reference["y"]), strict=True))
    assert sum(after.values()) == pytest.approx(1.0, abs=1e-9) and "sum to 1.000000" in text
    assert after[slider_labels[moved]] > before[slider_labels[moved]]
    assert all(after[name] < before[name] for name in slider_labels if name != slider_labels[moved])

    flat, _ = client.predict(*model_logits, 0, 0, 0, 2.0, api_name="/softmax_sliders")   # T = 100
    assert plotly_array(figure_json(flat)["data"][0]["y"]).max() < 0.3
    *reset_sliders, reset_t, _, reset_text = client.predict(api_name="/softmax_reset")
    assert [s["value"] for s in reset_sliders[:5]] == pytest.approx(model_logits) and reset_t["value"] == 0.0
    assert "T = 1 " in reset_text


def test_zero_shot_ensemble_custom_templates_and_truncation_notice(client, image_file):
    path, label = image_file
    long_label = "red circle " + "with a very long description that goes on " * 4
    result = client.predict("bundled:mini-clip", handle_file(str(path)), f"{label}\n{long_label}",
                            "ensemble of 8 templates", "", 2, api_name="/zero_shot_classify")
    assert "8 template(s)" in result[1] and "truncated" in result[1] and "32 tokens" in result[1]
    custom = client.predict("bundled:mini-clip", handle_file(str(path)), f"{label}, blue star", "custom",
                            "a {}\na drawing of a {}", 2, api_name="/zero_shot_classify")
    assert "2 template(s)" in custom[1] and figure_json(custom[0])["data"][0]["y"][-1] == label


def test_zero_shot_bad_inputs_get_messages_and_the_server_keeps_serving(client, image_file):
    path, label = image_file
    args = (handle_file(str(path)), "a, b", "default: a photo of a {}.", "", 3)
    with pytest.raises(Exception, match="at least one label"):
        client.predict("bundled:mini-clip", handle_file(str(path)), " , \n", "default: a photo of a {}.", "", 3,
                       api_name="/zero_shot_classify")
    with pytest.raises(Exception, match="not CLIP"):
        client.predict("bundled:mini-cnn", *args, api_name="/zero_shot_classify")
    with pytest.raises(Exception, match="no bundled model of that name"):
        client.predict("bundled:no-such-model", *args, api_name="/zero_shot_classify")
    with pytest.raises(Exception, match="exactly once"):
        client.predict("bundled:mini-clip", handle_file(str(path)), "a", "custom", "no placeholder", 3,
                       api_name="/zero_shot_classify")
    with pytest.raises(Exception, match="Upload an image"):
        client.predict("bundled:mini-clip", None, "a", "default: a photo of a {}.", "", 3,
                       api_name="/zero_shot_classify")
    fresh = Client(client.src, verbose=False)
    with pytest.raises(Exception, match="Classify an image first"):
        fresh.predict(*[0.0] * 8, 0.0, api_name="/softmax_sliders")
    result = client.predict("bundled:mini-clip", handle_file(str(path)), label, "default: a photo of a {}.", "", 1,
                            api_name="/zero_shot_classify")
    assert figure_json(result[0])["data"][0]["y"] == [label]


def test_similarity_matrix_of_procedural_pairs_and_of_uploads(client, tmp_path):
    cosine, halves, note = client.predict("bundled:mini-clip", "procedural shapes and their captions", 4, None, "",
                                          api_name="/similarity_matrix")
    heat = figure_json(cosine)
    assert len(heat["layout"]["shapes"]) == 4 and len(heat["layout"]["images"]) == 4
    rows_softmax = plotly_array(figure_json(halves)["data"][0]["z"])
    np.testing.assert_allclose(rows_softmax.sum(axis=1), 1.0, atol=1e-9)
    assert "4 images × 4 texts" in note and "contrastive loss" in note
    paths = []
    for i, example in enumerate(shapes.make_dataset(2, seed=884_004, two_objects_prob=0.0)):
        paths.append(tmp_path / f"{i}.png")
        example.image.save(paths[-1])
    cosine, _, note = client.predict("bundled:mini-clip", "my images and texts", 4,
                                     [handle_file(str(p)) for p in paths], "a red star\na blue circle\na green cross",
                                     api_name="/similarity_matrix")
    assert plotly_array(figure_json(cosine)["data"][0]["z"]).shape == (2, 3) and "2 images × 3 texts" in note
    with pytest.raises(Exception, match="at least one text"):
        client.predict("bundled:mini-clip", "my images and texts", 4, [handle_file(str(paths[0]))], " ",
                       api_name="/similarity_matrix")


def test_without_captions_the_gap_is_not_measured_and_the_tab_says_why(client):
    _, _, info, gap = client.predict("bundled:mini-clip", "example photos", 10, 0, None, "", "cat, red circle",
                                  "a photo of a {}.", "PCA", "modality", False, True, api_name="/embedding_embed")
    assert "No image has a caption, so the modality gap is not measured" in info and gap is None
    assert "Modality gap ‖" not in info


def _html(output) -> str:
    """A map component's value: the JSON string, also when it came as an update that shows or hides the map."""
    return output["value"] if isinstance(output, dict) else output


def _map(html) -> dict:
    view = json.loads(_html(html))
    assert len(view["token"]) >= 16
    return view["figure"]


def test_embedding_map_search_point_gap_and_cache(client):
    html, webgl, info, gap = client.predict("bundled:mini-clip", PROCEDURAL, 60, 884_005, None, "", "",
                                            "a photo of a {}.", *VIEW, api_name="/embedding_embed")
    assert len(_html(html)) < 2 * 2**20 and webgl["visible"] is False   # 60 images: Plotly, the WebGL map hidden
    fig = _map(html)
    assert {trace["type"] for trace in fig["data"]} == {"scattergl"}
    ids = np.concatenate([plotly_array(t["customdata"]) for t in fig["data"] if t["mode"] == "markers"])
    texts = int(info.split(" texts:")[0].split()[-1])
    assert sorted(ids.tolist()) == list(range(60 + texts))
    assert "60 images embedded" in info and "(0 from the embedding cache" in info and "Modality gap" in info
    assert "over 60 paired image-caption embeddings" in info   # the class prompts are not in the gap
    assert [t["type"] for t in figure_json(gap)["data"]] == ["histogram", "histogram"]
    assert "over 60 paired image-caption embeddings" in plain_title(figure_json(gap))

    again = client.predict("bundled:mini-clip", PROCEDURAL, 60, 884_005, None, "", "", "a photo of a {}.", *VIEW,
                           api_name="/embedding_embed")
    assert "(60 from the embedding cache" in again[2]

    pca = _map(client.predict("PCA", "modality", True, False, api_name="/embedding_view")[0])
    assert "PCA" in pca["layout"]["title"]["text"] and "modality means removed" in pca["layout"]["title"]["text"]
    assert [t["name"] for t in pca["data"] if t["mode"] == "markers"] == ["captions", "class prompts", "images"]

    html, _, gallery, note = client.predict("a red circle", 3, *VIEW, api_name="/embedding_search")
    red_circles = sum(e.label == "red circle" for e in scenes.make_scenes(60, 884_005, split="any", n_objects=1))
    assert len(gallery) == 3 and red_circles >= 1
    assert all("red circle" in item["caption"] for item in gallery[:min(3, red_circles)]), gallery
    assert _map(html)["data"][-1]["name"] == "query: top 3" and "original 128-d space" in note

    image, text = client.predict(5, api_name="/embedding_point")
    assert image is not None and "**image 5**" in text and "caption:" in text
    _, text = client.predict(60, api_name="/embedding_point")
    assert "**text 0** (caption)" in text
    with pytest.raises(Exception, match="does not exist"):
        client.predict(10_000, api_name="/embedding_point")

    summary, per_class, confusion = client.predict(api_name="/embedding_evaluate")
    assert "top-1" in summary and "top-5" in summary
    assert "trained only on" in summary and "looks like a photograph" not in summary   # procedural images
    assert figure_json(per_class)["data"][0]["type"] == "bar" and figure_json(confusion)["data"][0]["type"] == "heatmap"


def test_folders_are_read_only_inside_the_allowed_ones(client, served):
    allowed, outside = served["allowed"], served["outside"]
    args = ("", "a photo of a {}.", "PCA", "zero-shot prediction", False, True)
    html, _, info, _ = client.predict("bundled:mini-clip", FOLDER, 10, 0, None, str(allowed / "labelled"), *args,
                                   api_name="/embedding_embed")
    assert "60 images embedded" in info and "30 class prompts" in info
    summary, _, _ = client.predict(api_name="/embedding_evaluate")
    top1 = float(summary.split("top-1 **")[1].split("%")[0])
    assert top1 >= 55.0, summary  # chance over the 30 labels: 3.3%; mini-clip measures 73% on such scenes

    _, _, info, _ = client.predict("bundled:mini-clip", OUTPUT, 10, 0, None, str(allowed / "output"), *args,
                                api_name="/embedding_embed")
    assert "Read 60 image" in info and "from disk" in info

    with pytest.raises(Exception, match="outside the folders this app may read"):
        client.predict("bundled:mini-clip", FOLDER, 10, 0, None, str(outside), *args, api_name="/embedding_embed")
    with pytest.raises(Exception, match="outside the folders"):
        client.predict("bundled:mini-clip", FOLDER, 10, 0, None, str(allowed / ".." / outside.name), *args,
                       api_name="/embedding_embed")
    with pytest.raises(Exception, match="holds no images"):
        client.predict("bundled:mini-clip", FOLDER, 10, 0, None, str(allowed / "empty"), *args,
                       api_name="/embedding_embed")
    with pytest.raises(Exception, match="not an output of models.embed"):
        client.predict("bundled:mini-clip", OUTPUT, 10, 0, None, str(allowed / "labelled"), *args,
                       api_name="/embedding_embed")
    with pytest.raises(Exception, match="not CLIP"):
        client.predict("bundled:mini-vit", PROCEDURAL, 10, 0, None, "", *args, api_name="/embedding_embed")
    with pytest.raises(Exception, match="held out"):
        client.predict("bundled:mini-clip", PROCEDURAL, 10, 2_000_000_000, None, "", *args,
                       api_name="/embedding_embed")
    fresh = Client(client.src, verbose=False)
    with pytest.raises(Exception, match="Press Embed first"):
        fresh.predict("a red circle", 3, *VIEW, api_name="/embedding_search")
    assert client.predict("a blue star", 2, *VIEW, api_name="/embedding_search")[2]   # still serving


def _fetch(base_url: str, path: str) -> bytes:
    """GET ``path`` (a map's array, "/clipscope/blob/...") from the app at ``base_url``."""
    import urllib.request

    with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=60) as response:
        return response.read()


def test_a_20k_row_models_embed_output_opens_on_the_webgl_map(client, served):
    args = ("", "a photo of a {}.", "PCA", "label", False, True)
    _, webgl, info, _ = client.predict("bundled:mini-clip", OUTPUT, 10, 0, None, str(served["allowed"] / "big"),
                                       *args, api_name="/embedding_embed")
    assert f"Read {BIG:,}".replace(",", "") in info.replace(",", "") and "36 class prompts" in info
    view = json.loads(_html(webgl))
    assert len(_html(webgl)) < 2 * 2**20 and "drawn with WebGL" in view["title"] and "PCA" in view["title"]
    points = _fetch(served["url"], view["points_url"])
    colours = _fetch(served["url"], view["colours_url"])
    n = BIG + 36
    assert len(points) == 9 * n and len(colours) == n and (len(points) + len(colours)) / n <= 12
    legend = dict(view["legend"])
    assert set(legend) == set(shapes.class_names())
    assert np.argmax([int(legend["red heart"][i:i + 2], 16) for i in (1, 3, 5)]) == 0     # red is drawn red
    assert view["labels"] and all(label["text"] in shapes.class_names() for label in view["labels"])
    assert view["contours"] and view["texts_first"]

    _, recoloured = client.predict("PCA", "modality", False, True, api_name="/embedding_view")
    again = json.loads(_html(recoloured))
    assert len(_html(recoloured)) < 2 * 2**20 and again["points_url"] == view["points_url"]   # points not resent
    assert [name for name, _ in again["legend"]] == ["images", "class prompts"]
    assert len(_fetch(served["url"], again["colours_url"])) == n

    _, found, gallery, note = client.predict("a red circle", 5, "PCA", "label", False, True,
                                             api_name="/embedding_search")
    highlighted = json.loads(_html(found))["highlight"]
    assert len(_html(found)) < 2 * 2**20 and len(highlighted) == 5 and "exact search (torch)" in note
    _, named = client.predict("red, green, blue", "PCA", "label", False, True, api_name="/embedding_clusters")
    assert {label["text"] for label in json.loads(_html(named))["labels"]} <= {"red", "green", "blue"}
    _, text = client.predict(highlighted[0], api_name="/embedding_point")
    assert f"**image {highlighted[0]}**" in text

    _, shown = client.predict("label", "red heart", "PCA", "label", False, True, api_name="/embedding_filter")
    filtered = json.loads(_html(shown))
    mask = np.frombuffer(_fetch(served["url"], filtered["filter_url"]), dtype=np.uint8)
    red_hearts = int((np.arange(BIG) % 36 == shapes.class_names().index("red heart")).sum())   # rows cycle classes
    assert len(mask) == n and mask.sum() == red_hearts + 1      # its images and its class prompt
    assert "whose label contains “red heart”" in filtered["note"]
    with pytest.raises(Exception, match="No point has"):
        client.predict("label", "no such label", "PCA", "label", False, True, api_name="/embedding_filter")

    # isolate a point's neighbours: exactly the brute-force top k by cosine in the original joint space
    table = pd.read_parquet(client.predict("Parquet", api_name="/embedding_table"))
    vectors = table[[c for c in table.columns if c.startswith("e") and c[1:].isdigit()]].to_numpy(np.float64)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = vectors @ vectors[7]
    cosine[7] = -np.inf
    truth = np.argsort(-cosine, kind="stable")[:12]
    _, isolated, note = client.predict(7, 12, "PCA", "label", False, True, api_name="/embedding_isolate")
    view = json.loads(_html(isolated))
    assert view["highlight"] == truth.tolist() and "nearest to image 7" in note
    mask = np.frombuffer(_fetch(served["url"], view["filter_url"]), dtype=np.uint8)
    assert np.flatnonzero(mask).tolist() == sorted([7, *truth.tolist()])     # only the point and its neighbours
    _, everything, cleared = client.predict("PCA", "label", False, True, api_name="/embedding_show_all")
    assert json.loads(_html(everything))["filter_url"] is None and cleared == ""
    with pytest.raises(Exception, match="does not exist"):
        client.predict(n, 5, "PCA", "label", False, True, api_name="/embedding_isolate")

    # a typed selection (a lasso sends the same through the map's select event): summary, then its table
    text, summary = client.predict("0-9, 20000, 35", api_name="/embedding_select")
    assert text == "0-9, 35, 20000" and "12 points selected" in summary and "11 images and 1 text." in summary
    chosen = pd.read_parquet(client.predict("Parquet", api_name="/embedding_selection_table"))
    assert chosen["point"].tolist() == [*range(10), 35, 20000] and {"pca_x", "pca_y"} <= set(chosen.columns)
    assert np.allclose(chosen[[f"e{i}" for i in range(128)]].to_numpy(),
                       table[[f"e{i}" for i in range(128)]].to_numpy()[[*range(10), 35, 20000]])
    assert np.allclose(chosen["pca_x"], table["pca_x"].to_numpy()[[*range(10), 35, 20000]])
    with pytest.raises(Exception, match="outside the map's points"):
        client.predict(f"0-{n}", api_name="/embedding_select")
    with pytest.raises(Exception, match="is not a point or a range"):
        client.predict("three", api_name="/embedding_select")


@pytest.mark.browser
def test_map_hover_shows_a_thumbnail_and_click_opens_the_point(served, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(served["url"])
        # opened at once, while the page load is still restoring the link and drawing the first tab: it stays open
        page.get_by_role("tab", name="Embedding space").click()
        embed = page.get_by_role("button", name="Embed", exact=True)
        embed.click()
        page.wait_for_function("document.querySelector('.cs-map .main-svg') !== null", timeout=120_000)
        page.wait_for_function("(document.querySelector('#cs-overlay .js-plotly-plot') || {})._fullData "
                               "!== undefined", timeout=180_000)   # the first tab's own drawing has answered
        assert page.locator(".cs-map").is_visible(), "the Embedding space tab was closed behind the user's back"
        page.locator(".cs-map").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        x, y, index = page.evaluate("""() => {
            const graph = document.querySelector('.cs-map');
            const trace = graph._fullData.find(t => t.mode === 'markers'
                && !['captions', 'class prompts'].includes(t.name));   // an image trace (texts drawn first)
            const layout = graph._fullLayout, box = graph.getBoundingClientRect();
            return [box.left + layout._size.l + layout.xaxis.l2p(trace.x[0]),
                    box.top + layout._size.t + layout.yaxis.l2p(trace.y[0]), trace.customdata[0]]; }""")
        page.mouse.move(x, y)
        page.wait_for_function("document.querySelector('.cs-thumb').style.display === 'block'", timeout=30_000)
        assert page.evaluate("document.querySelector('.cs-thumb').src").startswith("data:image/jpeg;base64,")
        assert "scene 616161#" in page.inner_text(".cs-caption")
        # where points overlap, the pointer is on the one plotly picks: the click must open the point the hover showed
        hovered = int(page.evaluate("document.querySelector('.cs-tip').dataset.point"))
        assert hovered == index or page.evaluate(
            f"document.querySelector('.cs-map')._fullData.some(t => t.mode === 'markers' && "
            f"t.customdata && Array.from(t.customdata).map(Number).includes({hovered}))")
        page.mouse.click(x, y)
        page.wait_for_function(f"document.body.innerText.includes('image {hovered}: scene')", timeout=30_000)
        box = page.get_by_label("Point (or click one on the map)")
        page.wait_for_function(f"(el) => el.value === '{hovered}'", arg=box.element_handle(), timeout=30_000)
        assert "Traceback" not in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "embedding_tab.png"), full_page=True)
        browser.close()
