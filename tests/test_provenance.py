"""Each view's figures are stamped with what they show (viz.provenance): view, model, image fingerprint, settings."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from viz.provenance import figure_filename, image_fingerprint, slug, stamp_figures
from viz.views import Subject


class _Model:
    model_id = "open_clip:ViT-B-32/openai"


def test_stamp_names_view_model_image_and_plain_settings():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    subject = Subject(_Model(), image)
    figures = {"map": go.Figure(), "note": "some text"}
    stamp_figures(figures, "zero_shot.similarity", subject,
                  {"count": 3, "images": [image], "texts": ("a", "b"), "pixels": np.zeros((2, 3)),
                   "embedding_set": object()})
    stamp = figures["map"].layout.meta["clipscope"]
    assert stamp["view"] == "zero_shot.similarity" and stamp["model"] == "open_clip:ViT-B-32/openai"
    assert stamp["settings"] == {"count": 3, "images": ["image 4x4"], "texts": ["a", "b"], "pixels": "array (2, 3)",
                                 "embedding_set": "<object>"}
    assert stamp["image"] == {"size": [4, 4], "sha256": image_fingerprint(image)["sha256"]}
    assert len(stamp["image"]["sha256"]) == 16 and figures["note"] == "some text"
    other = image_fingerprint(Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)))
    assert other["sha256"] != stamp["image"]["sha256"]
    assert figure_filename(figures["map"].layout.meta) == "clipscope_vit-b-32-openai_zero_shot_similarity"
    assert figure_filename(None, "rollout") == "clipscope_rollout"


def test_slugs_drop_the_backend_and_keep_names_readable():
    assert [slug(t) for t in ("bundled:mini-clip", "hf:openai/clip-vit-base-patch32", "local-dir:/data/my model",
                              "attention.rollout")] == ["mini-clip", "openai-clip-vit-base-patch32", "my_model",
                                                        "attention_rollout"]
