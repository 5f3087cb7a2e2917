"""The bundled models' training objectives, checked against brute-force references on small scenes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.world import bundled_eval, scenes, shapes
from models.world import train_bundled as tb

SEED = 123


@pytest.fixture(scope="module")
def crowded():
    """Scenes of three objects (occlusions included), drawn from a training seed as the training does."""
    return [scenes.make_scene([shapes.training_seed(SEED, 0), i], n_objects=3) for i in range(4)]


def test_present_class_targets_share_evenly_over_what_each_scene_holds(crowded):
    for attribute, values in (("label", shapes.class_names()), ("colour", list(shapes.COLOURS)),
                              ("shape", list(shapes.SHAPES))):
        targets = tb.present_class_targets(crowded, values, attribute)
        for row, scene in zip(targets, crowded, strict=True):
            present = {getattr(o, attribute) for o in scene.objects}
            expected = torch.tensor([1 / len(present) if v in present else 0.0 for v in values])
            torch.testing.assert_close(row, expected)


def test_patch_attribute_targets_count_each_patchs_pixels(crowded):
    values = list(shapes.COLOURS)
    targets = tb.patch_attribute_targets(crowded, "colour", values, grid=8)
    assert targets.shape == (len(crowded), 64, len(values) + 1)
    for scene, per_patch in zip(crowded, targets, strict=True):
        for patch in (0, 9, 27, 63):
            r, c = divmod(patch, 8)
            expected = np.zeros(len(values) + 1)
            for y in range(r * 8, r * 8 + 8):          # brute force: pixel by pixel
                for x in range(c * 8, c * 8 + 8):
                    owners = [o for o in scene.objects if o.mask[y, x]]
                    assert len(owners) <= 1            # visible masks never overlap
                    expected[values.index(owners[0].colour) if owners else -1] += 1 / 64
            np.testing.assert_allclose(per_patch[patch].numpy(), expected, atol=1e-6)
    torch.testing.assert_close(targets.sum(dim=-1), torch.ones(len(crowded), 64))


def test_token_label_loss_is_the_soft_cross_entropy_of_both_read_outs(crowded):
    torch.manual_seed(0)
    head = tb.TokenLabelHead(16)
    tokens = torch.randn(len(crowded), 64, 16)
    expected = 0.0
    for attribute, values, linear in (("colour", list(shapes.COLOURS), head.colour),
                                      ("shape", list(shapes.SHAPES), head.shape)):
        targets = tb.patch_attribute_targets(crowded, attribute, values, grid=8)
        log_p = torch.log_softmax(linear(tokens), dim=-1)
        expected += (-(targets * log_p).sum(-1).mean()).item()
    assert tb.token_label_loss(tokens, head, crowded).item() == pytest.approx(expected, rel=1e-5)


def test_supervision_prompts_never_name_a_held_out_composition():
    prompts = tb.supervision_prompts()
    classes, texts = prompts["label"]
    assert not set(classes) & set(scenes.HELD_OUT_COMPOSITIONS)
    assert len(classes) == len(shapes.class_names()) - len(scenes.HELD_OUT_COMPOSITIONS)
    assert "an orange shape" in prompts["colour"][1] and "a star" in prompts["shape"][1]
    assert all(t.split(" ", 1)[1] == c for c, t in zip(classes, texts, strict=True))


@pytest.mark.xfail(strict=True, reason="issue 15: the colour-swapped hard negatives recombine a scene's two objects "
                   "and so name a held-out composition ('a red star and a blue cross' for a blue star beside a red "
                   "cross): 44% of the bundled recipe's negatives do (203 of 460 over 20 sampled steps), so the "
                   "bundled mini-clip was trained that 'a blue cross' is a wrong caption; the fix changes the "
                   "training and waits on a retrain of the bundled weights")
def test_mini_clip_training_text_never_names_a_held_out_composition():
    recipe = tb.RECIPES["mini-clip"]
    texts = []
    for step in (0, 1, 2):
        captions, negatives = tb.step_captions(tb.training_batch(0, step, recipe), np.random.default_rng([0, step, 7]))
        texts += captions + negatives
    assert len(texts) > 3 * recipe.batch_size + 10  # the steps have hard negatives to check
    named = [text for text in texts if bundled_eval.names_held_out_composition(text)]
    assert not named, f"{len(named)} texts name a held-out composition, e.g. {named[:3]}"


def test_prompt_loss_by_hand(crowded):
    torch.manual_seed(1)
    prompts = tb.supervision_prompts()
    features = {k: (values, torch.randn(len(values), 8)) for k, (values, _) in prompts.items()}
    images, scale = torch.randn(len(crowded), 8), torch.tensor(2.0)
    expected = 0.0
    for attribute, (values, text) in features.items():
        targets = tb.present_class_targets(crowded, values, attribute)
        logits = scale.exp() * F.normalize(images, dim=-1) @ F.normalize(text, dim=-1).T
        weight = {"label": 1.0, "colour": 0.5, "shape": 0.5}[attribute]
        expected += weight * float(-(targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean())
    assert float(tb.prompt_loss(images, features, crowded, scale)) == pytest.approx(expected, rel=1e-5)


def test_two_training_steps_save_an_open_clip_model_with_fixed_2d_position_embeddings(tmp_path):
    """A real (two-step) mini-clip training run: it saves a model open_clip reloads, with no pre-norm (so that
    mini-vit copies it exactly) and the fixed 2-d sin-cos position table the training never changed."""
    import open_clip

    recipe = tb.Recipe(steps=2, batch_size=8, lr=1e-3, weight_decay=0.1, warmup=1)
    info = tb.train_clip(tmp_path, recipe, seed=0, device=torch.device("cpu"), bf16=False)
    assert len(info["history"]) == 1 and np.isfinite(info["history"][0]["loss"])
    model = open_clip.create_model("local-dir:" + str(tmp_path)).eval()
    assert isinstance(model.visual.ln_pre, torch.nn.Identity)
    assert not model.visual.output_tokens
    fresh, _ = tb.build_clip()
    torch.testing.assert_close(model.visual.positional_embedding, fresh.visual.positional_embedding.half().float())
    table = model.visual.positional_embedding[1:].float()
    table = F.normalize(table - table.mean(0), dim=-1).view(8, 8, -1)
    assert float((table[0, 0] * table[0, 1]).sum()) > float((table[0, 0] * table[7, 7]).sum())


def test_mimetic_init_sets_each_heads_query_key_and_each_layers_value_output_product():
    """Brute force: the targets drawn again from the same generator; W_o W_v is its (full-rank) target exactly and
    each head's W_q^T W_k the best rank-head_width approximation of its target (numpy's SVD)."""
    model, _ = tb.build_clip()
    tb.mimetic_init(model.visual.transformer, seed=5)
    generator = torch.Generator().manual_seed(5)
    for block in model.visual.transformer.resblocks:
        width, heads = block.attn.embed_dim, block.attn.num_heads
        head_width = width // heads
        q, k, v = block.attn.in_proj_weight.detach().double().chunk(3)
        for head in range(heads):
            target = tb._noisy_identity(width, *tb.MIMETIC_QK, generator).double().numpy()
            u, s, vh = np.linalg.svd(target)
            best = (u[:, :head_width] * s[:head_width]) @ vh[:head_width]
            rows = slice(head * head_width, (head + 1) * head_width)
            np.testing.assert_allclose((q[rows].T @ k[rows]).numpy(), best, atol=1e-5)
        target = tb._noisy_identity(width, tb.MIMETIC_VO[0], -tb.MIMETIC_VO[1], generator).double()
        np.testing.assert_allclose((block.attn.out_proj.weight.detach().double() @ v).numpy(), target.numpy(),
                                   atol=1e-5)


def _first_block_attention_to_neighbours_over_far_patches(model) -> float:
    """Block 0's mean attention from a patch to its 4-neighbours over that to patches >= 4 cells away, for the
    position table alone (a blank image adds the same vector to every patch)."""
    visual = model.visual
    block = visual.transformer.resblocks[0]
    tokens = block.ln_1(visual.positional_embedding[1:].detach())
    heads = block.attn.num_heads
    q, k, _ = F.linear(tokens, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    q, k = (t.view(64, heads, -1).transpose(0, 1) for t in (q, k))
    attention = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1).mean(0)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    distance = (rows.flatten()[:, None] - rows.flatten()).abs() + (cols.flatten()[:, None] - cols.flatten()).abs()
    return float(attention[distance == 1].mean() / attention[distance >= 4].mean())


def test_mimetic_init_makes_the_first_blocks_attention_local_where_the_default_init_is_not():
    """Baseline: open_clip's default initialisation, whose attention over the same positions is near uniform."""
    torch.manual_seed(0)
    default, _ = tb.build_clip()
    mimetic, _ = tb.build_clip()
    tb.mimetic_init(mimetic.visual.transformer, seed=0)
    with torch.no_grad():
        default_ratio = _first_block_attention_to_neighbours_over_far_patches(default)
        mimetic_ratio = _first_block_attention_to_neighbours_over_far_patches(mimetic)
    assert default_ratio < 1.2
    assert mimetic_ratio > 2.0
