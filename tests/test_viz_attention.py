"""viz.attention against brute-force references written out loop by loop."""
from __future__ import annotations

import math

import pytest
import torch

from viz.attention import (
    attention_rollout,
    fuse_heads,
    gradient_relevancy,
    mean_attention_distance,
    patch_distances,
    pool_relevancy_step,
    pool_rollout_step,
    readout_weights,
    token_map,
)


def _random_patterns(layers=3, batch=2, heads=4, tokens=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, tokens, generator=generator).softmax(-1) for _ in range(layers)]


def _rollout_loops(patterns, fusion, discard_ratio=0.0, prefix=1):
    batch, _, tokens, _ = patterns[0].shape
    out = []
    for b in range(batch):
        joint = None
        for pattern in patterns:
            a = [[0.0] * tokens for _ in range(tokens)]
            for i in range(tokens):
                for j in range(tokens):
                    values = [float(pattern[b, h, i, j]) for h in range(pattern.shape[1])]
                    a[i][j] = {"mean": sum(values) / len(values), "max": max(values), "min": min(values)}[fusion]
            free = sorted((a[i][j], i, j) for i in range(tokens) for j in range(tokens) if i >= prefix and j >= prefix)
            for _, i, j in free[:int(discard_ratio * len(free))]:
                a[i][j] = 0.0
            for i in range(tokens):
                a[i][i] += 1.0
                total = sum(a[i])
                a[i] = [v / total for v in a[i]]
            if joint is None:
                joint = a
            else:
                joint = [[sum(a[i][k] * joint[k][j] for k in range(tokens)) for j in range(tokens)]
                         for i in range(tokens)]
        out.append(joint)
    return torch.tensor(out)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5])
def test_rollout_equals_loop_reference(fusion, discard):
    patterns = _random_patterns()
    got = attention_rollout(patterns, head_fusion=fusion, discard_ratio=discard)
    torch.testing.assert_close(got, _rollout_loops(patterns, fusion, discard), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 5), atol=1e-5, rtol=0)


def test_rollout_never_discards_cls_entries():
    patterns = _random_patterns(layers=1)
    fused = fuse_heads(patterns[0])
    got = attention_rollout(patterns, discard_ratio=0.9)
    kept_row = fused[:, 0] + torch.eye(5)[0]
    torch.testing.assert_close(got[:, 0], kept_row / kept_row.sum(-1, keepdim=True))


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="Unknown head fusion"):
        fuse_heads(torch.rand(1, 2, 3, 3), "median")


def test_relevancy_equals_loop_reference():
    patterns = _random_patterns(layers=2, batch=1, heads=2, tokens=3)
    generator = torch.Generator().manual_seed(5)
    grads = [torch.randn(p.shape, generator=generator) for p in patterns]
    tokens = 3
    r = [[1.0 if i == j else 0.0 for j in range(tokens)] for i in range(tokens)]
    for pattern, grad in zip(patterns, grads, strict=True):
        cam = [[sum(max(float(grad[0, h, i, j] * pattern[0, h, i, j]), 0.0) for h in range(2)) / 2
                for j in range(tokens)] for i in range(tokens)]
        update = [[sum(cam[i][k] * r[k][j] for k in range(tokens)) for j in range(tokens)] for i in range(tokens)]
        r = [[r[i][j] + update[i][j] for j in range(tokens)] for i in range(tokens)]
    torch.testing.assert_close(gradient_relevancy(patterns, grads)[0], torch.tensor(r), atol=1e-6, rtol=1e-5)


def test_mean_distance_zero_for_self_attention_and_known_for_uniform():
    grid, patch, prefix = (3, 3), (16, 16), 1
    tokens = 1 + 9
    self_only = torch.eye(tokens).expand(1, 2, tokens, tokens)
    assert torch.allclose(mean_attention_distance(self_only, grid, patch, prefix), torch.zeros(2))
    uniform = torch.full((1, 1, tokens, tokens), 1.0 / tokens)
    centres = [(r * 16, c * 16) for r in range(3) for c in range(3)]
    over_patches = sum(math.dist(a, b) for a in centres for b in centres) / 81
    # the paper's default: the 1/10 each query gives CLS counts as distance 0
    torch.testing.assert_close(mean_attention_distance(uniform, grid, patch, prefix),
                               torch.tensor([over_patches * 9 / 10]))
    torch.testing.assert_close(mean_attention_distance(uniform, grid, patch, prefix, "renormalise"),
                               torch.tensor([over_patches]))


def _mean_distance_loops(pattern, grid, patch, prefix, renormalise):
    batch, heads, tokens, _ = pattern.shape
    centres = [(r * patch[0], c * patch[1]) for r in range(grid[0]) for c in range(grid[1])]
    out = []
    for h in range(heads):
        total = 0.0
        for b in range(batch):
            for q in range(prefix, tokens):
                on_patches = sum(float(pattern[b, h, q, k]) for k in range(prefix, tokens))
                weighted = sum(float(pattern[b, h, q, k]) * math.dist(centres[q - prefix], centres[k - prefix])
                               for k in range(prefix, tokens))
                total += weighted / on_patches if renormalise else weighted
        out.append(total / (batch * (tokens - prefix)))
    return torch.tensor(out)


@pytest.mark.parametrize("prefix", [1, 2])
def test_mean_distance_matches_a_double_loop_under_both_conventions(prefix):
    grid, patch = (2, 3), (8, 16)
    tokens = prefix + 6
    logits = torch.randn(2, 3, tokens, tokens, generator=torch.Generator().manual_seed(prefix))
    logits[..., :prefix] += 1.5   # a real share of every row on the prefix tokens
    pattern = logits.softmax(-1)
    for convention, renormalise in (("distance_zero", False), ("renormalise", True)):
        torch.testing.assert_close(mean_attention_distance(pattern, grid, patch, prefix, convention),
                                   _mean_distance_loops(pattern, grid, patch, prefix, renormalise))
    torch.testing.assert_close(mean_attention_distance(pattern, grid, patch, prefix),
                               _mean_distance_loops(pattern, grid, patch, prefix, False))   # the default
    with pytest.raises(ValueError, match="prefix_attention"):
        mean_attention_distance(pattern, grid, patch, prefix, "renormalize")


@pytest.mark.parametrize("mass", [0.0, 0.18, 0.6])
def test_mass_on_cls_scales_the_paper_distance_by_one_minus_it(mass):
    grid, patch, patches = (3, 3), (16, 16), 9
    on_patches = torch.rand(1, 2, patches, patches, generator=torch.Generator().manual_seed(5))
    on_patches = on_patches / on_patches.sum(-1, keepdim=True)
    pattern = torch.zeros(1, 2, 1 + patches, 1 + patches)
    pattern[:, :, 0, 0] = 1.0                          # CLS's own query row (not a patch query: never read)
    pattern[:, :, 1:, 0] = mass
    pattern[:, :, 1:, 1:] = (1 - mass) * on_patches   # the same patch part, its mass moved to CLS
    paper = mean_attention_distance(pattern, grid, patch, 1)
    renormalised = mean_attention_distance(pattern, grid, patch, 1, "renormalise")
    torch.testing.assert_close(paper, (1 - mass) * renormalised)
    torch.testing.assert_close(renormalised, mean_attention_distance(on_patches, grid, patch, 0))
    if mass:
        assert (paper < renormalised).all()


def test_patch_distances_and_token_map():
    distances = patch_distances((2, 3), (8, 8))
    assert distances.shape == (6, 6) and distances[0, 5] == pytest.approx(math.hypot(8, 16))
    row = torch.arange(7.0)
    assert token_map(row, (2, 3)).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_relevancy_is_batched_and_equals_one_image_at_a_time():
    from models import load_model, shapes
    from viz.attention import clip_text_target, relevancy_maps

    model = load_model("bundled:mini-clip", device="cpu")
    pixels = model.pixels([e.image for e in shapes.make_dataset(4, seed=99)])
    target = clip_text_target(model, "a red star")
    batched = relevancy_maps(model, pixels, target)
    single = torch.cat([relevancy_maps(model, pixels[i:i + 1], target) for i in range(4)])
    assert batched.shape == (4, 8, 8)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["open_clip_vit", "hf_clip"])
def test_text_token_relevance_names_the_prompt_tokens(name, tiny_ids):
    """Token names, and relevance that explains the image-text similarity: it changes with the image (text-only
    self-relevancy, or a gradient cut at the image embedding, would give the same scores for any image). Whether the
    content words win is a truth test on trained weights (tests/test_truth.py)."""
    from models import load_model
    from viz.attention import text_token_relevance

    model = load_model(tiny_ids[name])
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randn(1, 3, 32, 32, generator=generator) for _ in range(2))
    tokens, scores = text_token_relevance(model, first, "a red star")
    assert len(tokens) == len(scores) >= 4
    assert "".join(t.strip() for t in tokens[1:-1]).replace(" ", "") == "aredstar"
    again_tokens, other = text_token_relevance(model, second, "a red star")
    assert again_tokens == tokens and torch.isfinite(scores).all()
    assert not torch.allclose(scores, other, rtol=1e-3, atol=1e-6)


# -- readouts: what the model's output reads (CLS, mean of the patches, attention-pool probes) -------------------------
def _matmul_loops(row, joint):
    tokens = len(row)
    return [sum(row[i] * joint[i][j] for i in range(tokens)) for j in range(tokens)]


def _pool_loops(pattern, b, fusion="mean"):
    """One image's pool step: heads fused, probes averaged, renormalised; no identity (the pool has no residual)."""
    _, heads, probes, tokens = pattern.shape
    fused = []
    for j in range(tokens):
        per_probe = []
        for q in range(probes):
            values = [float(pattern[b, h, q, j]) for h in range(heads)]
            per_probe.append({"mean": sum(values) / heads, "max": max(values), "min": min(values)}[fusion])
        fused.append(sum(per_probe) / probes)
    total = sum(fused)
    return [v / total for v in fused]


@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_rollout_readouts_equal_loop_references(fusion):
    patterns = _random_patterns(batch=2, tokens=5)
    joint = attention_rollout(patterns, head_fusion=fusion, prefix_tokens=1)
    reference = _rollout_loops(patterns, fusion).tolist()
    prefix, tokens = 1, 5
    torch.testing.assert_close(readout_weights(joint, "cls", prefix), torch.tensor([r[0] for r in reference]))
    mean = [[sum(r[i][j] for i in range(prefix, tokens)) / (tokens - prefix) for j in range(tokens)]
            for r in reference]
    torch.testing.assert_close(readout_weights(joint, "mean", prefix), torch.tensor(mean), atol=1e-6, rtol=1e-5)
    generator = torch.Generator().manual_seed(9)
    pool = torch.randn(2, 4, 2, tokens, generator=generator).softmax(-1)   # (batch, heads, probes, tokens)
    got = readout_weights(joint, "attention_pool", prefix, pool_rollout_step(pool, fusion))
    expected = [_matmul_loops(_pool_loops(pool, b, fusion), reference[b]) for b in range(2)]
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-6, rtol=1e-5)
    assert torch.allclose(got.sum(-1), torch.ones(2))   # a distribution: every step's rows sum to 1


def test_models_without_prefix_tokens_read_the_mean_or_the_pool():
    patterns = _random_patterns(batch=1, tokens=4)
    joint = attention_rollout(patterns, prefix_tokens=0)
    reference = _rollout_loops(patterns, "mean", prefix=0).tolist()[0]
    mean = [sum(reference[i][j] for i in range(4)) / 4 for j in range(4)]
    torch.testing.assert_close(readout_weights(joint, "mean", 0)[0], torch.tensor(mean), atol=1e-6, rtol=1e-5)
    pool = torch.rand(1, 2, 1, 4).softmax(-1)
    expected = _matmul_loops(_pool_loops(pool, 0), reference)
    torch.testing.assert_close(readout_weights(joint, "attention_pool", 0, pool_rollout_step(pool))[0],
                               torch.tensor(expected), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="needs a prefix token"):
        readout_weights(joint, "cls", 0)
    with pytest.raises(ValueError, match="pool.attn"):
        readout_weights(joint, "attention_pool", 0)
    with pytest.raises(ValueError, match="Unknown readout"):
        readout_weights(joint, "last", 0)


def test_relevancy_with_an_attention_pool_equals_chefers_rule_written_out():
    """R = I; R += mean_h(clamp(grad * A, 0)) @ R per block; then the pool's own gradient-weighted attention as
    the last step, without the identity (the pool has no residual)."""
    tokens, heads = 3, 2
    patterns = _random_patterns(layers=2, batch=1, heads=heads, tokens=tokens)
    generator = torch.Generator().manual_seed(5)
    grads = [torch.randn(p.shape, generator=generator) for p in patterns]
    pool = torch.rand(1, heads, 1, tokens, generator=generator).softmax(-1)
    pool_grad = torch.randn(pool.shape, generator=generator)
    r = [[1.0 if i == j else 0.0 for j in range(tokens)] for i in range(tokens)]
    for pattern, grad in zip(patterns, grads, strict=True):
        cam = [[sum(max(float(grad[0, h, i, j] * pattern[0, h, i, j]), 0.0) for h in range(heads)) / heads
                for j in range(tokens)] for i in range(tokens)]
        update = [[sum(cam[i][k] * r[k][j] for k in range(tokens)) for j in range(tokens)] for i in range(tokens)]
        r = [[r[i][j] + update[i][j] for j in range(tokens)] for i in range(tokens)]
    last = [sum(max(float(pool_grad[0, h, 0, j] * pool[0, h, 0, j]), 0.0) for h in range(heads)) / heads
            for j in range(tokens)]
    expected = _matmul_loops(last, r)
    got = readout_weights(gradient_relevancy(patterns, grads), "attention_pool", 0,
                          pool_relevancy_step(pool, pool_grad))
    torch.testing.assert_close(got[0], torch.tensor(expected), atol=1e-6, rtol=1e-5)


def _timm_vit(path, **args):
    """A tiny timm ViT (2 blocks of width 64 on a 4x4 grid) with the given readout arguments, saved as timm does."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 8, "depth": 2, "num_heads": 4, "embed_dim": 64, **args}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **args)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 1.0}
    save_for_hf(model, path, model_args=args, safe_serialization=True)
    return f"timm:local-dir:{path}"


@pytest.mark.parametrize(("readout", "args"), [("mean", {"class_token": False, "global_pool": "avg"}),
                                               ("attention_pool", {"class_token": False, "global_pool": "map"})])
def test_session_rollout_and_relevancy_follow_the_models_readout(tmp_path, readout, args):
    from models import load_model, shapes
    from viz.attention import gradient_relevancy
    from viz.attention_session import AttentionSession

    model = load_model(_timm_vit(tmp_path / readout, **args))
    assert model.readout == readout and model.num_prefix_tokens == 0
    session = AttentionSession(model, shapes.make_dataset(1, seed=3)[0].image)
    joint = _rollout_loops([p[None] for p in session.patterns], "mean", prefix=0).tolist()[0]
    tokens = len(joint)
    if readout == "mean":
        expected = [sum(joint[i][j] for i in range(tokens)) / tokens for j in range(tokens)]
    else:
        assert session.pool_pattern.shape == (4, 1, tokens)
        expected = _matmul_loops(_pool_loops(session.pool_pattern[None], 0), joint)
    torch.testing.assert_close(session.rollout_map(), torch.tensor(expected).reshape(session.grid),
                               atol=1e-5, rtol=1e-4)
    names = [f"blocks.{i}.attn.pattern" for i in range(2)] + (["pool.attn.pattern"] if readout != "mean" else [])
    with model.capture(names, grad=True) as cache:
        model.run_image(session.pixels)[:, 3].sum().backward()
    relevancy = gradient_relevancy([cache[n] for n in names[:2]], [cache.grad(n) for n in names[:2]])
    pool = pool_relevancy_step(cache[names[2]], cache.grad(names[2])) if readout != "mean" else None
    expected = readout_weights(relevancy, readout, 0, pool)[0].reshape(session.grid)
    torch.testing.assert_close(session.relevancy(3), expected.detach().cpu(), atol=1e-5, rtol=1e-4)
