"""An attention-pool readout reads only the probes the model's output reads: CoCa's contrastive embedding is probe 0
of its 256 probes, so rollout and relevancy must use that probe's attention, not the mean over every probe."""
from __future__ import annotations

import torch

from models import load_model
from models.backends import BACKENDS
from viz.attention import attention_rollout, fuse_heads
from viz.attention_session import AttentionSession


def test_coca_rollout_uses_the_probe_the_embedding_reads(tmp_path):
    model = load_model(BACKENDS["open_clip"].save_random("coca_ViT-B-32", tmp_path / "coca", True))
    tower = model.image_tower
    assert tower.readout == "attention_pool" and tower.pool_probes == (0,)
    pixels = torch.randn(1, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(0))
    session = AttentionSession(model, pixels)
    with model.capture(["pool.attn.pattern"]) as cache:
        model.encode_image(pixels)
    pool = cache["pool.attn.pattern"][0]                       # (heads, probes, T)
    assert pool.shape[1] > 1
    joint = attention_rollout([p[None] for p in session.patterns], "mean", 0.0, session.prefix)[0]
    step = fuse_heads(pool[None, :, :1].float(), "mean")[0, 0]  # probe 0 only
    expected = (step / step.sum()) @ joint
    got = session.rollout_map("mean", 0.0)
    torch.testing.assert_close(got, expected[session.prefix:].reshape(session.grid), atol=1e-6, rtol=1e-5)
    every_probe = fuse_heads(pool[None].float(), "mean")[0].mean(dim=0)
    wrong = ((every_probe / every_probe.sum()) @ joint)[session.prefix:].reshape(session.grid)
    assert not torch.allclose(got, wrong, atol=1e-6), "the mean over all probes is not what the embedding reads"
