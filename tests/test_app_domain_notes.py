"""Through the app's real HTTP API: a bundled model says what it was trained on (Model tab, next to its answers), a
photograph analysed with it gets a one-line notice pointing to a real checkpoint, a procedural image does not, and a
real (here: tiny, non-bundled) checkpoint never shows either."""
from __future__ import annotations

import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from PIL import Image

from models import shapes
from viz.domain import REAL_CLIP, REAL_CNN

ZERO_SHOT = ("red circle, blue star, green square", "default: a photo of a {}.", "", 3)
PHOTO_NOTICE = "looks like a photograph"
TRAINED_ONLY = "trained only on"
SEED = 464_646  # held out: training seeds are >= shapes.TRAIN_SEED_START


@pytest.fixture(scope="module")
def app_url(tiny_ids):
    with running_app("--model", tiny_ids["open_clip_vit"]) as url:
        yield url


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """A photograph (scikit-image's cat) and a procedural scene at the world's own size."""
    from skimage import data

    root = tmp_path_factory.mktemp("domain")
    Image.fromarray(data.chelsea()).save(root / "photo.png")
    shapes.make_dataset(1, seed=SEED)[0].image.save(root / "world.png")
    return {"photo": str(root / "photo.png"), "world": str(root / "world.png")}


def test_a_photograph_with_a_bundled_model_gets_the_notice(app_url, images):
    client = Client(app_url, verbose=False)
    notice = client.predict("bundled:mini-clip", handle_file(images["photo"]), *ZERO_SHOT,
                            api_name="/zero_shot_classify")[1]
    assert PHOTO_NOTICE in notice and REAL_CLIP in notice and TRAINED_ONLY in notice
    summary = client.predict("bundled:mini-cnn", handle_file(images["photo"]), "", api_name="/cnn_analyse")[0]
    assert PHOTO_NOTICE in summary and REAL_CNN in summary and TRAINED_ONLY in summary
    query_info = client.predict("bundled:mini-clip", handle_file(images["photo"]), 1, "mean", 1.0,
                                api_name="/attention_analyse")[6]
    assert PHOTO_NOTICE in query_info and "Query:" in query_info
    patches_notes = client.predict("bundled:mini-vit", handle_file(images["photo"]), 1,
                                   api_name="/patches_analyse")[-1]
    assert PHOTO_NOTICE in patches_notes and TRAINED_ONLY in patches_notes
    probe_note = client.predict("bundled:mini-cnn", handle_file(images["photo"]), "bundled:mini-vit", 2,
                                api_name="/cnn_probes")[3]
    assert PHOTO_NOTICE in probe_note and "bundled:mini-cnn** was trained only" in probe_note
    assert "bundled:mini-vit** was trained only" in probe_note       # the compared model says so too
    known = client.predict("bundled:mini-clip", api_name="/describe_model")[4]
    assert TRAINED_ONLY in known and REAL_CLIP in known


def test_a_procedural_image_gets_no_notice(app_url, images):
    client = Client(app_url, verbose=False)
    notice = client.predict("bundled:mini-clip", handle_file(images["world"]), *ZERO_SHOT,
                            api_name="/zero_shot_classify")[1]
    assert TRAINED_ONLY in notice and PHOTO_NOTICE not in notice


def test_a_real_checkpoint_never_shows_either(app_url, images, tiny_ids):
    client = Client(app_url, verbose=False)
    notice = client.predict(tiny_ids["open_clip_vit"], handle_file(images["photo"]), *ZERO_SHOT,
                            api_name="/zero_shot_classify")[1]
    assert "labels ×" in notice  # the ordinary notes are there
    assert PHOTO_NOTICE not in notice and TRAINED_ONLY not in notice
    assert client.predict(tiny_ids["open_clip_vit"], api_name="/describe_model")[4] == ""
