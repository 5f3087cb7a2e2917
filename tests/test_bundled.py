"""The bundled models load through load_model from their real formats and meet their quality bars on a fresh
held-out seed (the model cards hold the full figures; these sets are kept small so the suite stays fast)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import bundled_eval, load_model, shapes
from models.world import scenes

SEED = 424_242  # held out: training seeds are >= shapes.TRAIN_SEED_START
BUNDLED = Path(__file__).resolve().parent.parent / "models" / "bundled"


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


def test_mass_on_mask_by_hand():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True                      # the top-left quarter: patch (0, 0) of a 2x2 grid, fully covered
    mask[2, 2] = True                        # a quarter of patch (1, 1)
    heat = np.array([[3.0, 1.0], [0.0, 4.0]])
    inside, share = bundled_eval.mass_on_mask(heat, mask)
    assert inside == pytest.approx((3.0 * 1 + 4.0 * 0.25) / 8.0)
    assert share == pytest.approx((1 + 0.25) / 4)
    assert bundled_eval.mass_on_mask(torch.tensor(heat), mask) == pytest.approx((inside, share))


def test_bundled_weights_are_small_safetensors_in_real_formats():
    files = list(BUNDLED.rglob("*"))
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    assert sum(f.stat().st_size for f in weights) <= 25 * 2**20
    assert (BUNDLED / "mini-clip" / "open_clip_config.json").exists()
    assert (BUNDLED / "mini-vit" / "config.json").exists() and (BUNDLED / "mini-cnn" / "config.json").exists()
    for name in ("mini-clip", "mini-vit", "mini-cnn"):
        assert (BUNDLED / name / "README.md").exists(), f"{name} has no model card"


def test_mini_clip_is_an_open_clip_vit_with_its_own_tokenizer(clip):
    assert clip.family == "clip" and clip.backend == "bundled (open_clip)"
    assert clip.visual.grid()[0] >= 8 and clip.visual.prefix_tokens == ["cls"]
    assert clip.visual.num_layers >= 4 and clip.visual.num_heads >= 4
    assert clip.vocab_size == 49408
    tokens = clip.tokenize(["a red star"])
    assert tokens.shape == (1, clip.context_length)


CHANCE = 1 / len(shapes.class_names())


def _zero_shot(clip, split: str, n: int, seed: int) -> dict:
    return bundled_eval.clip_zero_shot_accuracy(clip.encode_image, clip.encode_text, clip.preprocess, n=n, seed=seed,
                                                split=split)


@pytest.fixture(scope="module")
def trained_zero_shot(clip) -> dict:
    """Zero-shot accuracy on 180 held-out single-shape scenes of the trained compositions."""
    return _zero_shot(clip, "train", 180, SEED)


def test_mini_clip_zero_shot_top1_at_random_positions_sizes_and_rotations(trained_zero_shot):
    """Baseline: chance over the 36 prompts (2.8%). Scenes from held-out seeds and held-out photo backgrounds; the
    current weights measure 86% on 720 (see the strict xfail below for the bar issue 15 sets)."""
    result = trained_zero_shot
    print(f"mini-clip zero-shot top-1 over 36 classes, trained compositions: {result['top1']:.3f}")
    assert result["top1"] >= 0.83 and result["top1"] - CHANCE >= 0.8


@pytest.mark.xfail(strict=True, reason="issue 15's bar: the current mini-clip measures 86% on trained compositions "
                   "and 50% on the 6 held-out ones (blue cross 0%; 38 minutes of CPU training do not reach "
                   "the bar); strict, so a retrained model that reaches the bar turns this into a failure to update")
def test_mini_clip_reaches_issue_15s_zero_shot_bars(clip, trained_zero_shot):
    seen, unseen = trained_zero_shot, _zero_shot(clip, "held_out", 120, SEED + 10)
    print(f"mini-clip zero-shot: trained compositions {seen['top1']:.3f}, held-out {unseen['top1']:.3f} "
          f"{unseen['per_class']}")
    assert seen["top1"] >= 0.97 and unseen["top1"] >= 0.80


def test_attribute_accuracy_is_each_images_nearest_attribute_prompt(clip):
    """The one-attribute read-out against a brute-force loop: each image alone, its cosine to each prompt by hand."""
    for attribute, values, prompt in (("colour", list(shapes.COLOURS), "a {} shape"),
                                      ("shape", list(shapes.SHAPES), "a {}")):
        examples = scenes.make_scenes(36, SEED + 12, balanced=True, split="held_out")
        texts = F.normalize(clip.encode_text([shapes._articles(prompt.format(v)) for v in values]).float(), dim=-1)
        hits = []
        for example in examples:
            image = F.normalize(clip.encode_image(clip.preprocess([example.image])).float(), dim=-1)[0]
            scores = [float(image @ text) for text in texts]
            hits.append(values[int(np.argmax(scores))] == getattr(example, attribute))
        measured = bundled_eval.clip_zero_shot_accuracy(clip.encode_image, clip.encode_text, clip.preprocess, n=36,
                                                        seed=SEED + 12, split="held_out", batch_size=8,
                                                        attributes=(attribute,))["alone"][attribute]
        assert measured == pytest.approx(np.mean(hits))
    with pytest.raises(ValueError, match="colour' or 'shape"):
        bundled_eval.clip_zero_shot_accuracy(clip.encode_image, clip.encode_text, clip.preprocess, n=6,
                                             attributes=("size",))


def test_mini_clip_names_colour_alone_everywhere_and_shape_alone_on_trained_pairs(clip):
    """Each attribute named alone ("a red shape", "a star"; chance 1/6). Colour must be read on trained and never-
    seen pairs alike, shape on trained pairs; on never-seen pairs the current weights read shape at about chance
    (18% of 360, in the card): that is what the held-out bar of the strict xfail above waits on."""
    read = {(split, attribute): accuracy for split in ("train", "held_out")
            for attribute, accuracy in bundled_eval.clip_zero_shot_accuracy(
                clip.encode_image, clip.encode_text, clip.preprocess, n=120, seed=SEED + 13, split=split,
                attributes=("colour", "shape"))["alone"].items()}
    print(f"mini-clip one attribute alone: {read}")
    assert read["train", "colour"] >= 0.95 and read["held_out", "colour"] >= 0.95
    assert read["train", "shape"] >= 0.8 and read["train", "shape"] - 1 / 6 >= 0.6


@pytest.fixture(scope="module")
def binding_rate(clip) -> float:
    """How often the true "a X and a Y" beats the colour-swapped caption, on 150 held-out two-shape scenes."""
    return bundled_eval.clip_binding_accuracy(clip.encode_image, clip.encode_text, clip.preprocess,
                                              n=150, seed=SEED + 11)


def test_mini_clip_binds_colours_to_shapes(binding_rate):
    """True "a X and a Y" vs the colour-swapped caption on two-shape scenes. Baseline: 50%, what chance and any
    bag-of-words text encoder score (both captions hold the same words). 150 scenes: a level that catches a
    regression; issue 15's 90% bar is measured on 2000 below."""
    print(f"mini-clip binding (true over colour-swapped caption): {binding_rate:.3f}")
    assert binding_rate >= 0.75 and binding_rate - 0.5 >= 0.25


@pytest.mark.xfail(strict=True, reason="issue 15's bar, reached overall (91.6%) only through a training leak: the "
                   "colour-swapped hard negatives of mini-clip's training name held-out compositions (see "
                   "test_train_bundled); on the scenes whose swapped caption names one (about 4 in 10), a caption "
                   "the model was trained to reject, it scores 100%, on the others 85.3%. Strict, so a retrained "
                   "model that reaches the bar on both turns this into a failure to update")
def test_mini_clip_reaches_issue_15s_binding_bar(clip):
    """Issue 15's bar, true over colour-swapped caption >= 90%, on 2000 held-out two-shape scenes (five seeds of
    400: one seed's 400 alone varies by about 2 points either way), overall and on the scenes whose swapped caption
    names only trained compositions."""
    results = [bundled_eval.clip_binding_results(clip.encode_image, clip.encode_text, clip.preprocess, n=400,
                                                 seed=SEED + 20 + k) for k in range(5)]
    rates = [r["all"] for r in results]
    split = {key: np.mean([r[key] for r in results]) for key in ("swap_trained_only", "swap_names_held_out")}
    print(f"mini-clip binding on 5 x 400 scenes: {np.round(rates, 3)}, mean {np.mean(rates):.3f}; {split}")
    assert np.mean(rates) >= 0.90 and split["swap_trained_only"] >= 0.90


def test_binding_results_split_the_scenes_by_what_the_swap_names(clip):
    """The two groups of clip_binding_results partition the scenes by whether the swapped caption names a
    held-out composition (checked against the scenes by hand), and the overall rate is their size-weighted mean."""
    results = bundled_eval.clip_binding_results(clip.encode_image, clip.encode_text, clip.preprocess, n=60,
                                                seed=SEED + 14)
    examples = [scenes.make_scene([SEED + 14, i], n_objects=2, distinct=True, split="train") for i in range(60)]
    held = sum(bundled_eval.names_held_out_composition(scenes.colour_swapped_caption(e.objects)) for e in examples)
    assert results["swap_names_held_out_n"] == held and 0 < held < 60
    assert results["swap_trained_only_n"] == 60 - held
    weighted = (held * results["swap_names_held_out"] + (60 - held) * results["swap_trained_only"]) / 60
    assert results["all"] == pytest.approx(weighted)


def test_mini_clip_text_to_image_recall_at_5(clip):
    """Each held-out scene's caption retrieves its own scene among 120. Baseline: chance, 5 / 120 = 4%."""
    recall = bundled_eval.clip_text_to_image_recall(clip.encode_image, clip.encode_text, clip.preprocess,
                                                    n=120, seed=SEED + 1)
    print(f"mini-clip text->image recall@5: {recall:.3f}")
    assert recall >= 0.85 and recall - 5 / 120 >= 0.8


VIT_BAR = pytest.mark.xfail(strict=True, reason="issue 15's bar: the current mini-vit measures 89% on 720 held-out "
                             "scenes (12 minutes of fine-tuning from mini-clip's image tower, itself at 86%); strict, "
                             "so a retrained mini-vit that reaches 97% turns this into a failure to update")


@pytest.mark.parametrize("name, family", [pytest.param("mini-vit", "vit", marks=VIT_BAR), ("mini-cnn", "cnn")])
def test_bundled_classifiers_top1(name, family):
    """Single-shape scenes at random positions, sizes and rotations (held-out seeds). Baseline: chance, 2.8%."""
    model = load_model(f"bundled:{name}", device="cpu")
    assert model.family == family
    assert model.class_names == shapes.class_names()
    accuracy = bundled_eval.classifier_accuracy(model.forward, model.preprocess, model.class_names,
                                                n=180, seed=SEED + 3)
    print(f"{name} top-1: {accuracy:.3f}")
    assert accuracy >= 0.97 and accuracy - CHANCE >= 0.9


def test_mini_vit_beats_chance_and_the_model_it_replaced():
    """Baseline: chance (2.8%) and the previous mini-vit (fine-tuned under a head whose logits started ~15x too
    large), which scored 78% on such scenes. What the current mini-vit does reach (91% here; the bar above is
    issue 15's)."""
    model = load_model("bundled:mini-vit", device="cpu")
    accuracy = bundled_eval.classifier_accuracy(model.forward, model.preprocess, model.class_names,
                                                n=180, seed=SEED + 3)
    print(f"mini-vit top-1: {accuracy:.3f}")
    assert accuracy >= 0.85 and accuracy - 0.78 >= 0.07


def test_low_frequency_share_by_hand():
    noise = torch.randn(64, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    assert bundled_eval.low_frequency_share(noise) == pytest.approx(9 / 49, abs=0.03)  # white: its share of bins
    rows, cols = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    blob = torch.exp(-((rows - 3) ** 2 + (cols - 3) ** 2) / 4)[None, None]
    assert bundled_eval.low_frequency_share(blob) > 0.95
    checker = (torch.arange(7)[:, None] + torch.arange(7)[None, :]) % 2 * 2.0 - 1.0
    assert bundled_eval.low_frequency_share(checker[None, None]) < 0.05


def test_mini_cnn_stem_kernels_are_spatially_smooth():
    """Baseline: the same architecture at its random initialisation; the trained stem must hold at least twice
    its share of energy at low spatial frequencies."""
    from models.world.train_bundled import build_cnn, first_conv

    model = load_model("bundled:mini-cnn", device="cpu")
    trained = bundled_eval.low_frequency_share(first_conv(model.module).weight)
    torch.manual_seed(0)
    initial = bundled_eval.low_frequency_share(first_conv(build_cnn()).weight)
    print(f"mini-cnn stem low-frequency share: trained {trained:.2f}, at initialisation {initial:.2f}")
    assert trained >= 2 * initial


def test_mini_vit_initialisation_is_mini_clips_image_tower_and_zero_shot_head():
    """What `vit_from_clip` starts mini-vit from: its logits equal mini-clip's zero-shot logits (scale x cosine)
    times each image's embedding norm over the mean norm on a training batch (so they keep CLIP's range).
    mini-clip has no ln_pre (transformers' ViT has none), so the copy is exact."""
    import open_clip
    import torch.nn.functional as F

    from models.world.train_bundled import to_pixels, vit_from_clip

    vit = vit_from_clip(BUNDLED / "mini-clip").eval()
    clip = open_clip.create_model("local-dir:" + str(BUNDLED / "mini-clip")).eval()
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(BUNDLED / "mini-clip"))
    pixels = to_pixels([e.image for e in shapes.make_dataset(3, seed=SEED)])
    prompts = [bundled_eval.zero_shot_prompt(*name.split(" ")) for name in vit.config.id2label.values()]
    with torch.no_grad():
        image = clip.encode_image(pixels)
        text = F.normalize(clip.encode_text(tokenizer(prompts)), dim=-1)
        calibration = [e.image for e in scenes.make_scenes(128, shapes.training_seed(0, 0))]
        typical_norm = clip.encode_image(to_pixels(calibration)).norm(dim=-1).mean()
        expected = clip.logit_scale.exp() * image @ text.T / typical_norm   # unnormalised image: the head's view
        torch.testing.assert_close(vit(pixel_values=pixels).logits, expected, atol=1e-3, rtol=1e-4)
    cosine_logits = clip.logit_scale.exp().detach() * F.normalize(image, dim=-1) @ text.T
    assert float((expected - cosine_logits).abs().max()) < 0.3 * float(cosine_logits.abs().max())
