"""The app through its real HTTP API: every endpoint is covered, bad inputs get messages and never stop the server,
8 clients at once each get their own results, and `python app.py --check` passes."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from app_server import ROOT, running_app
from gradio_client import Client, handle_file
from PIL import Image

from models import shapes

CLASSES = shapes.class_names()
ZERO_SHOT = ("default: a photo of a {}.", "", 1)
CONCURRENCY_SEED = 626_262  # held out


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A normal image and every kind of awkward upload."""
    root = tmp_path_factory.mktemp("uploads")
    example = shapes.make_dataset(1, seed=31, two_objects_prob=0.0)[0]
    paths = {"normal": root / "normal.png"}
    example.image.resize((160, 160)).save(paths["normal"])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a PNG" * 20)
    paths["corrupt"] = root / "corrupt.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(root / "one.png")
    paths["1x1"] = root / "one.png"
    ramp = (np.linspace(0, 65535, 96 * 96).reshape(96, 96)).astype(np.uint16)
    Image.fromarray(ramp, mode="I;16").save(root / "sixteen.png")
    paths["16-bit"] = root / "sixteen.png"
    example.image.convert("RGBA").save(root / "rgba.png")
    paths["RGBA"] = root / "rgba.png"
    example.image.convert("CMYK").save(root / "cmyk.jpg")
    paths["CMYK"] = root / "cmyk.jpg"
    Image.new("1", (30_000, 30_000)).save(root / "bomb.png")  # a small file that decodes to 900 M pixels
    paths["bomb"] = root / "bomb.png"
    from models.backends import BACKENDS  # a model with attention per stage, for the window endpoints
    swin = BACKENDS["torchvision"].save_random("swin_t", root / "swin", True)
    return {"label": example.label, "swin": swin, **paths}


def _value(update):
    return update["value"] if isinstance(update, dict) and update.get("__type__") == "update" else update


def _calls(files) -> dict[str, tuple]:
    """One normal call per named endpoint, in an order where each finds the session its predecessors made."""
    image = handle_file(str(files["normal"]))
    return {
        "/describe_model": ("bundled:mini-vit",),
        "/model_copy_python": ("bundled:mini-vit",),
        "/attention_analyse": ("bundled:mini-clip", image, 1, "mean", 1.0),
        "/attention_view": (2, "max", 0.5),
        "/attention_rollout": ("mean", 0.2),
        "/attention_overview": (),
        "/attention_relevancy": ("a green square",),
        "/attention_zero_shot": ("a green square, a red circle",),
        "/attention_windows": (files["swin"], image, None, 0, "mean"),
        "/attention_window_stage": (1, 0, "mean"),
        "/attention_window_view": (1, 1, "head 0", 2, 2),
        "/attention_query": (1, "mean", 1.0, 5),
        "/attention_copy_python": ("bundled:mini-clip", "upload", 1, "mean", 1.0, "mean", 0.2),
        "/mean_attention_distance": ("bundled:mini-vit",),
        "/patches_analyse": ("bundled:mini-vit", image, 1),
        "/patches_layer": (2,),
        "/patches_query": (2, 3),
        "/patches_copy_python": ("upload", 2),
        "/cnn_analyse": ("bundled:mini-cnn", image, ""),
        "/cnn_feature_maps": ("stages.1", "top-k by mean activation", 8, "", "per layer"),
        "/cnn_filters": (),
        "/cnn_kernel": ("module.resnet.encoder.stages.1.layers.0.layer.0.convolution", 3),
        "/cnn_receptive_field": ("stages.1",),
        "/cnn_unit": ("stages.1", "1, 2"),
        "/cnn_cam": ("Grad-CAM", "stages.2", files["label"]),
        "/cnn_probes": ("bundled:mini-cnn", image, "bundled:mini-vit", 4),
        "/cnn_copy_python": ("upload", "stages.1", "top-k by mean activation", 8, "", "per layer", "stages.1",
                             "Grad-CAM", "stages.2", files["label"]),
        "/zero_shot_classify": ("bundled:mini-clip", image, ", ".join(CLASSES[:8] + [files["label"]]), *ZERO_SHOT),
        "/softmax_sliders": (*[1.0] * 8, 0.0),
        "/softmax_reset": (),
        "/similarity_matrix": ("bundled:mini-clip", "procedural shapes and their captions", 3, None, ""),
        "/embedding_embed": ("bundled:mini-clip", "procedural shapes (images + captions)", 40, 884_100, None, "", "",
                             "a photo of a {}.", "PCA", "label", False, True),
        "/embedding_view": ("PCA", "modality", True, False),
        "/embedding_search": ("a red circle", 4, "PCA", "label", False, True),
        "/embedding_clusters": ("red, blue, green", "PCA", "label", False, True),
        "/embedding_filter": ("label", "red", "PCA", "label", False, True),
        "/embedding_point": (3,),
        "/embedding_evaluate": (),
        "/embedding_table": ("Parquet",),
        "/embedding_select": ("0-3, 7",),
        "/embedding_selection_table": ("CSV",),
        "/embedding_isolate": (3, 4, "PCA", "label", False, True),
        "/embedding_show_all": ("PCA", "label", False, True),
        "/decomposition_score": ("bundled:mini-clip", image, "a red circle", -1, 0),
        "/decomposition_head": ("bundled:mini-clip", image, "a red circle", 2, 1),
        "/decomposition_ablation": ("bundled:mini-clip", 12),
        "/decomposition_text_span": ("bundled:mini-clip", "", 2, 3, "", 12),
        "/poke_parts": ("transformer or CLIP picker", "bundled:mini-clip", "bundled:mini-cnn"),
        "/poke_ablate": ("transformer or CLIP picker", "bundled:mini-clip", "bundled:mini-cnn", image,
                         ["blocks.3.attn.head.0"], ["blocks.1.mlp_out"], "", "zero", 8, "red circle, blue star", 5),
        "/poke_sweep": ("transformer or CLIP picker", "bundled:mini-clip", "bundled:mini-cnn", image, "", "zero", 8,
                        "red circle, blue star"),
        "/poke_patch": ("transformer or CLIP picker", "bundled:mini-clip", "bundled:mini-cnn", image, None, 777_000, 1,
                        "prefix", 0, 0, 0.5, 0.5, "red circle, blue star", 5),
        "/compare": (image, "bundled:mini-clip", "attention.query", "layer=1, head=0", "bundled:mini-clip",
                     "attention.query", "layer=1, head=1"),
    }


def test_every_endpoint_answers_a_normal_request(app_url, files):
    client = Client(app_url, verbose=False)
    calls = _calls(files)
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    exports = {name for name in named if name.endswith("_export")}
    assert named - exports == set(calls), "every endpoint needs a call here"
    results = {}
    for name, args in calls.items():
        results[name] = client.predict(*args, api_name=name)
    assert _value(results["/cnn_analyse"][7]) == files["label"]
    frame = pd.read_parquet(results["/embedding_table"])
    assert set(frame["modality"]) == {"image", "text"} and "e0" in frame.columns
    assert {"pca_x", "pca_y"} <= set(frame.columns) and frame["pca_x"].notna().all()   # the map as drawn, per row
    # every export gathers the figures the tab shows now into one interactive HTML page
    attention, windows = results["/attention_analyse"], results["/attention_windows"]
    page = client.predict(attention[3], attention[4], attention[2], attention[5], windows[5], windows[6], windows[8],
                          None, None, None, None, None, None, api_name="/attention_export")
    text = open(page, encoding="utf-8").read()
    assert text.count("<h2>") == 7 and "<h2>Attention of the query (click a patch)</h2>" in text
    # named after model and tab, with its provenance, plotly.js inside once (compressed)
    # (the window figures come from the Swin model: both models are named)
    assert page.endswith("clipscope_mini-clip+swin_attention.html") and text.count("id='plotlyjs'") == 1
    assert "id='clipscope-provenance'" in text and "attention.query" in text and len(text) < 3_000_000


BAD_IMAGES = {"corrupt": "Cannot read the upload as an image", "bomb": "too many pixels"}
AWKWARD_IMAGES = ["1x1", "16-bit", "RGBA", "CMYK"]


@pytest.mark.parametrize("endpoint, args", [
    ("/attention_analyse", lambda f: ("bundled:mini-clip", f, 1, "mean", 1.0)),
    ("/cnn_analyse", lambda f: ("bundled:mini-cnn", f, "")),
    ("/zero_shot_classify", lambda f: ("bundled:mini-clip", f, "red circle, blue star", *ZERO_SHOT)),
])
def test_bad_images_get_messages_and_awkward_ones_work(app_url, files, endpoint, args):
    client = Client(app_url, verbose=False)
    for kind, message in BAD_IMAGES.items():
        with pytest.raises(Exception, match=message):
            client.predict(*args(handle_file(str(files[kind]))), api_name=endpoint)
        assert client.predict(*args(handle_file(str(files["normal"]))), api_name=endpoint)  # still serving
    for kind in AWKWARD_IMAGES:
        assert client.predict(*args(handle_file(str(files[kind]))), api_name=endpoint), kind


def test_bad_text_and_model_ids_get_messages(app_url, files):
    client = Client(app_url, verbose=False)
    image = handle_file(str(files["normal"]))
    with pytest.raises(Exception, match="label"):
        client.predict("bundled:mini-clip", image, " , \n ", *ZERO_SHOT, api_name="/zero_shot_classify")
    long_text = "a red circle " * 800  # 10,400 characters
    result = client.predict("bundled:mini-clip", image, f"blue star, {long_text}", *ZERO_SHOT,
                            api_name="/zero_shot_classify")
    assert "truncated" in result[1]
    for endpoint, args in (("/cnn_analyse", ("timm:no_such_model_anywhere", image, "")),
                           ("/attention_analyse", ("nonsense:x", image, 1, "mean", 1.0)),
                           ("/describe_model", ("bundled:missing",))):
        with pytest.raises(Exception, match="(?i)unknown|no bundled|not"):
            client.predict(*args, api_name=endpoint)
    assert client.predict("bundled:mini-cnn", image, "", api_name="/cnn_analyse")


def test_labels_in_a_script_the_tokenizer_lacks_are_named_in_the_answer(app_url, files):
    client = Client(app_url, verbose=False)
    image = handle_file(str(files["normal"]))
    result = client.predict("bundled:mini-clip", image, "красный круг, синий квадрат, red circle", *ZERO_SHOT,
                            api_name="/zero_shot_classify")
    assert "bundled:mini-clip's tokenizer does not cover the Cyrillic script: 2 of 3 text(s)" in result[1]
    assert "“красный круг”" in result[1] and "“red circle”" not in result[1]
    english = client.predict("bundled:mini-clip", image, "red circle, blue square", *ZERO_SHOT,
                             api_name="/zero_shot_classify")
    assert "does not cover" not in english[1]


def test_eight_clients_in_parallel_each_get_their_own_results(app_url, tmp_path):
    examples = shapes.make_dataset(8, seed=CONCURRENCY_SEED, two_objects_prob=0.0, balanced=True)
    paths = []
    for i, example in enumerate(examples):
        paths.append(tmp_path / f"client{i}.png")
        example.image.save(paths[-1])
    problems: list[str] = []
    lone = Client(app_url, verbose=False)  # each image's zero-shot sliders as one client alone gets them
    expected_sliders = []
    for path in paths:
        lone.predict("bundled:mini-clip", handle_file(str(path)), ", ".join(CLASSES), "default: a photo of a {}.", "",
                     3, api_name="/zero_shot_classify")
        expected_sliders.append(lone.predict(api_name="/softmax_reset")[0]["label"])

    def one_client(i: int) -> None:
        label, image = examples[i].label, handle_file(str(paths[i]))
        client = Client(app_url, verbose=False)
        try:
            cnn = client.predict("bundled:mini-cnn", image, "", api_name="/cnn_analyse")
            if _value(cnn[7]) != label:
                problems.append(f"client {i}: CNN predicted {_value(cnn[7])!r} for {label!r}")
            client.predict("bundled:mini-clip", image, ", ".join(CLASSES), "default: a photo of a {}.", "", 3,
                           api_name="/zero_shot_classify")
            attention = client.predict("bundled:mini-clip", image, 1, "mean", 1.0, api_name="/attention_analyse")
            if "CLS" not in attention[-1]:
                problems.append(f"client {i}: attention answered {attention[-1]!r}")
            maps = client.predict("stages.0", "chosen channels", 4, str(i), "per unit", api_name="/cnn_feature_maps")
            if f"ch {i}" not in str(maps):
                problems.append(f"client {i}: feature maps for another request")
            # the sliders come from this client's stored prediction: the top class its image got when alone
            first_slider = client.predict(api_name="/softmax_reset")[0]
            if first_slider["label"] != expected_sliders[i]:
                problems.append(f"client {i}: sliders of {first_slider['label']!r}, alone {expected_sliders[i]!r}")
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            problems.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems, problems


@pytest.mark.parametrize("flags", [[], ["--device", "cpu", "--dtype", "bf16"]], ids=["float32", "bf16"])
def test_self_check_passes(flags):
    """Every view through the HTTP API, also with bf16 models (the GPU user's ``--dtype``, run here on the CPU)."""
    result = subprocess.run([sys.executable, "app.py", "--check", *flags], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("ok", "FAILED"))]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(lines) >= 13 and all(line.startswith("ok") for line in lines)
    assert "views answered" in result.stdout
