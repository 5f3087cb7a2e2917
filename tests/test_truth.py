"""Truth tests: the bundled models' maps point at the object, and beat a blind baseline that never runs the model.

Every test names its baselines (viz.pointing: a fixed centre blob, a uniform map, a random patch, colour contrast,
or the model's own map for another object's prompt or class) and asserts three things:
- the model's score reaches the bar (what issue 15 demands of the bundled models),
- it beats the best named baseline by a stated margin,
- each baseline's own score is below the bar, so the test fails when the model's map is replaced by a baseline's;
  :func:`_assert_truth` is also run once per baseline with the model's score swapped for the baseline's, and must
  raise.

Images come from :mod:`models.world.scenes` with seeds below 10**9 (training uses seeds >= 10**9), on the trained
compositions and on the held-out ones. Run with ``-s`` to see the measured model and baseline figures.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import load_model, shapes
from models.world.bundled_eval import zero_shot_prompt
from models.world.scenes import make_scene, make_scenes
from viz.attention import (
    attention_rollout,
    capture_patterns,
    clip_caption_targets,
    relevancy_maps,
    text_token_relevance,
)
from viz.cam import class_activation_map
from viz.pointing import (
    cell_max,
    centre_blob,
    colour_contrast,
    mean_mass_ratio,
    pointing_rate,
    random_patch,
    uniform_map,
)

SINGLE_SEEDS = {"train": 15_100, "held_out": 15_200}   # all held out: training seeds are >= 10**9
MULTI_SEED = 15_300
CAM_SEED = 15_400
TOKEN_SEED = 15_500
CAM_CELLS = (8, 8)   # CAMs point with 8 px cells of the 64 px scene: the bundled ViTs' patches
SINGLE_SCENES = 120


def test_truth_seeds_are_held_out():
    """Every scene here comes from a seed training never uses."""
    seeds = [*SINGLE_SEEDS.values(), MULTI_SEED + 3, CAM_SEED + 1, TOKEN_SEED]
    assert max(seeds) < shapes.TRAIN_SEED_START


def _score(maps, masks, cells: tuple[int, int] | None = None) -> dict[str, float]:
    """One candidate's figures over (map, mask) pairs: pointing (lenient and strict) and mean mass ratio. With
    ``cells``, pixel maps point with the cell holding their argmax pixel (:func:`cell_max`)."""
    pointers = [cell_max(m, cells) for m in maps] if cells else maps
    return {"lenient": pointing_rate(pointers, masks, "lenient"), "strict": pointing_rate(pointers, masks, "strict"),
            "mass ratio": mean_mass_ratio(maps, masks)}


def _print(title: str, scores: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    for name, figures in scores.items():
        print(f"  {name:>26}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))


def _assert_truth(scores: dict[str, dict[str, float]], model: str, baselines: list[str], key: str, bar: float,
                  margin: float) -> None:
    """``scores[model][key] >= bar``, at least ``margin`` above every baseline, and every baseline below the bar."""
    for name in baselines:
        assert scores[name][key] < bar, f"the {name} baseline reaches the {key} bar {bar}: the test cannot fail"
    got = scores[model][key]
    best = max(baselines, key=lambda name: scores[name][key])
    assert got >= bar, f"{model} {key} {got:.3f} < {bar}"
    assert got - scores[best][key] >= margin, (f"{model} {key} {got:.3f} beats the {best} baseline "
                                               f"({scores[best][key]:.3f}) by less than {margin}")


def _assert_truth_and_its_failure_on_baselines(scores, model, baselines, key, bar, margin) -> None:
    """:func:`_assert_truth`, and the demonstration that it fails when the model's map is replaced by a baseline."""
    _assert_truth(scores, model, baselines, key, bar, margin)
    for name in baselines:
        with pytest.raises(AssertionError):
            _assert_truth({**scores, model: scores[name]}, model, baselines, key, bar, margin)
        print(f"  {model} {key} {scores[model][key]:.3f} passes (bar {bar}, margin {margin}); with its map replaced "
              f"by {name} ({scores[name][key]:.3f}) the test fails")


def _blind_maps(grid, count: int, seed: int) -> dict[str, list[np.ndarray]]:
    """``count`` maps of each image-free baseline on ``grid`` (the random patches from ``seed``)."""
    rng = np.random.default_rng(seed)
    return {"centre blob": [centre_blob(grid)] * count, "uniform": [uniform_map(grid)] * count,
            "random patch": [random_patch(grid, rng) for _ in range(count)]}


@pytest.fixture(scope="module")
def clip():
    return load_model("bundled:mini-clip", device="cpu")


@pytest.fixture(scope="module", params=["train", "held_out"])
def single_object_maps(request, clip):
    """Single-object scenes (equal counts per class of the split) and mini-clip's maps of them. Split "train": the
    compositions training sees (on seeds it never used); "held_out": the 6 compositions it never sees."""
    split = request.param
    scenes = make_scenes(SINGLE_SCENES, SINGLE_SEEDS[split], balanced=True, split=split)
    pixels = clip.pixels([s.image for s in scenes])
    grid = clip.visual.grid()
    with torch.no_grad():
        patterns, _ = capture_patterns(clip, pixels)
    prompts = [zero_shot_prompt(s.colour, s.shape) for s in scenes]
    maps = {"last-layer CLS attention": patterns[-1][:, :, 0, 1:].mean(dim=1).reshape(-1, *grid),
            "rollout": attention_rollout(patterns)[:, 0, 1:].reshape(-1, *grid),
            "prompt relevancy": relevancy_maps(clip, pixels, clip_caption_targets(clip, prompts)).detach(),
            "colour contrast": [colour_contrast(s.image, grid) for s in scenes],
            **_blind_maps(grid, len(scenes), SINGLE_SEEDS[split])}
    masks = [s.objects[0].mask for s in scenes]
    return split, {name: _score(m, masks) for name, m in maps.items()}


def test_mini_clip_last_layer_cls_attention_is_on_the_object(single_object_maps):
    """Baselines: centre blob, uniform map. The mean mass ratio (share of the attention on the object over the
    object's share of the image) is >= 3 and >= 1.5 above the baselines' (a uniform map scores exactly 1; a centre
    blob ~1.6, above 1 as object centres keep half a side from the border); its argmax is on the object (lenient)
    >= 90%."""
    split, scores = single_object_maps
    model, baselines = "last-layer CLS attention", ["centre blob", "uniform"]
    _print(f"mini-clip last-layer CLS attention, {SINGLE_SCENES} single-object scenes ({split})",
           {k: scores[k] for k in [model, *baselines]})
    _assert_truth_and_its_failure_on_baselines(scores, model, baselines, "mass ratio", bar=3.0, margin=1.5)
    _assert_truth_and_its_failure_on_baselines(scores, model, baselines, "lenient", bar=0.9, margin=0.4)


@pytest.mark.parametrize("method", ["rollout", "prompt relevancy"])
def test_mini_clip_rollout_and_prompt_relevancy_point_at_single_objects(single_object_maps, method):
    """Baselines: centre blob, random patch, uniform map for pointing: lenient >= 95% and >= 0.4 above them; strict
    (>= half the argmax patch is object) >= 50% and >= 0.25 above them. On a single object a model-free saliency
    points at it as well (colour contrast: lenient ~0.95, strict ~0.93, printed), so against colour contrast the
    test asks for concentration: a mean mass ratio >= 5.5 and >= 1.0 above colour contrast's (and the blind maps');
    the multi-object test below is where colour contrast must lose on pointing."""
    split, scores = single_object_maps
    blind = ["centre blob", "random patch", "uniform"]
    _print(f"mini-clip {method} pointing, {SINGLE_SCENES} single-object scenes ({split})",
           {k: scores[k] for k in [method, *blind, "colour contrast"]})
    _assert_truth_and_its_failure_on_baselines(scores, method, blind, "lenient", bar=0.95, margin=0.4)
    _assert_truth_and_its_failure_on_baselines(scores, method, blind, "strict", bar=0.5, margin=0.25)
    _assert_truth_and_its_failure_on_baselines(scores, method, [*blind, "colour contrast"], "mass ratio",
                                               bar=5.5, margin=1.0)


# bars per object count: lenient, its margin, strict, its margin, lenient where colour contrast misses the object
MULTI_BARS = {2: (0.85, 0.25, 0.55, 0.05, 0.85), 3: (0.9, 0.4, 0.55, 0.15, 0.85)}
MULTI_SCENES = {2: 120, 3: 80}


@pytest.fixture(scope="module", params=[2, 3])
def several_objects(request, clip):
    """Scenes of two or three objects that differ in colour and shape (any composition, held-out ones included),
    every object named in turn: the pointing scores of mini-clip's relevancy for the named one and of its baselines
    (text-free or wrong-text): colour contrast (the most salient object, the same map whatever is named), the
    model's own relevancy for another object of the scene, the centre blob. Also the lenient rate on the trials
    where colour contrast misses the named object (its own rate there is 0 by construction)."""
    n_objects = request.param
    scenes = [make_scene([MULTI_SEED + n_objects, i], n_objects=n_objects, distinct=True, split="any")
              for i in range(MULTI_SCENES[n_objects])]
    pixels = clip.pixels([s.image for s in scenes])
    grid = clip.visual.grid()
    per_object = [relevancy_maps(clip, pixels, clip_caption_targets(
        clip, [zero_shot_prompt(s.objects[k].colour, s.objects[k].shape) for s in scenes])).detach()
        for k in range(n_objects)]
    contrast = [colour_contrast(s.image, grid) for s in scenes]
    maps = {"relevancy for the named": [], "relevancy for another": [], "colour contrast": [], "centre blob": []}
    masks = []
    for k in range(n_objects):
        maps["relevancy for the named"] += list(per_object[k])
        maps["relevancy for another"] += list(per_object[(k + 1) % n_objects])
        maps["colour contrast"] += contrast
        maps["centre blob"] += [centre_blob(grid)] * len(scenes)
        masks += [s.objects[k].mask for s in scenes]
    scores = {name: _score(m, masks) for name, m in maps.items()}
    misled = [i for i, (m, k) in enumerate(zip(maps["colour contrast"], masks, strict=True))
              if not pointing_rate([m], [k])]
    misled_rate = pointing_rate([maps["relevancy for the named"][i] for i in misled], [masks[i] for i in misled])
    _print(f"mini-clip relevancy on the named one of {n_objects} objects, {len(masks)} trials", scores)
    print(f"  on the {len(misled)} trials where colour contrast misses the named object: lenient {misled_rate:.3f}")
    return n_objects, scores, len(masks), len(misled), misled_rate


def test_prompt_relevancy_lands_on_the_named_one_of_several_objects(several_objects):
    """Relevancy for "a blue circle" lands on the blue circle (see the fixture for the scenes and baselines)."""
    n_objects, scores, trials, n_misled, misled_rate = several_objects
    lenient_bar, lenient_margin, strict_bar, strict_margin, misled_bar = MULTI_BARS[n_objects]
    model, baselines = "relevancy for the named", ["relevancy for another", "colour contrast", "centre blob"]
    _assert_truth_and_its_failure_on_baselines(scores, model, baselines, "lenient", lenient_bar, lenient_margin)
    _assert_truth_and_its_failure_on_baselines(scores, model, baselines, "strict", strict_bar, strict_margin)
    assert n_misled >= trials // 5, "too few scenes where saliency picks another object to test on"
    assert misled_rate >= misled_bar


@pytest.mark.xfail(strict=True, reason="issue 15's bar of 95% on the named one of two objects: the current mini-clip "
                   "lands there 91% of the time (the one before it 79%; the one before that reached the bar, but "
                   "scored 12.5% on held-out compositions); strict, so a retrained model that reaches the bar "
                   "turns this into a failure to update")
@pytest.mark.parametrize("several_objects", [2], indirect=True)   # the bar is set on two-object scenes
def test_prompt_relevancy_reaches_issue_15s_bar_on_two_objects(several_objects):
    _, scores, *_ = several_objects
    assert scores["relevancy for the named"]["lenient"] >= 0.95


# Grad-CAM pointing levels, (lenient bar, margin, strict bar, margin) on single objects and on the named one of
# two: mini-cnn's are issue 15's; mini-vit (88.6% top-1) reaches these, its issue bar is the strict xfail below.
CAM_LEVELS = {
    "mini-cnn": {"single": (0.95, 0.4, 0.5, 0.25), "named": (0.9, 0.3, 0.5, 0.2)},
    "mini-vit": {"single": (0.8, 0.4, 0.3, 0.1), "named": (0.8, 0.25, 0.35, 0.2)},
}


@pytest.fixture(scope="module", params=list(CAM_LEVELS))
def classifier(request):
    return request.param, load_model(f"bundled:{request.param}", device="cpu")


def test_grad_cam_points_at_single_objects(classifier):
    """Grad-CAM of the true class on single-object scenes (any composition) has its argmax on the object (lenient:
    any object pixel in its 8 px cell, as the patch maps count; strict: half of it) at the model's CAM_LEVELS,
    above the blind baselines (centre blob, random patch) by their margins. Colour contrast is printed, not
    asserted (one object is also the most salient thing); the two-object test below is where it must lose."""
    name, model = classifier
    scenes = make_scenes(60, CAM_SEED + 1, balanced=True, split="any")
    cams = [class_activation_map(model, model.pixels([s.image]), model.class_names.index(s.label)) for s in scenes]
    shape = cams[0].shape
    masks = [s.objects[0].mask for s in scenes]
    maps = {"Grad-CAM": cams, "colour contrast": [colour_contrast(s.image, shape) for s in scenes],
            **_blind_maps(shape, len(scenes), CAM_SEED + 1)}
    scores = {key: _score(m, masks, CAM_CELLS) for key, m in maps.items()}
    _print(f"{name} Grad-CAM pointing, {len(scenes)} single-object scenes", scores)
    lenient_bar, lenient_margin, strict_bar, strict_margin = CAM_LEVELS[name]["single"]
    _assert_truth_and_its_failure_on_baselines(scores, "Grad-CAM", ["centre blob", "random patch"], "lenient",
                                               bar=lenient_bar, margin=lenient_margin)
    _assert_truth_and_its_failure_on_baselines(scores, "Grad-CAM", ["centre blob", "random patch"], "strict",
                                               bar=strict_bar, margin=strict_margin)


@pytest.fixture(scope="module")
def named_class_cams(classifier):
    """Grad-CAM of each object's class in 80 two-object scenes (distinct colours and shapes, any composition), and
    the baselines it must beat there: the CAM of the scene's other class, the centre blob and colour contrast."""
    name, model = classifier
    scenes = [make_scene([CAM_SEED, i], n_objects=2, distinct=True, split="any") for i in range(80)]
    cams = []
    for scene in scenes:
        pixels = model.pixels([scene.image])
        cams.append([class_activation_map(model, pixels, model.class_names.index(o.label)) for o in scene.objects])
    shape = cams[0][0].shape
    maps = {"Grad-CAM of the named class": [], "Grad-CAM of the other class": [], "colour contrast": [],
            "centre blob": []}
    masks = []
    for k in range(2):
        maps["Grad-CAM of the named class"] += [c[k] for c in cams]
        maps["Grad-CAM of the other class"] += [c[1 - k] for c in cams]
        maps["colour contrast"] += [colour_contrast(s.image, shape) for s in scenes]
        maps["centre blob"] += [centre_blob(shape)] * len(scenes)
        masks += [s.objects[k].mask for s in scenes]
    scores = {key: _score(m, masks, CAM_CELLS) for key, m in maps.items()}
    _print(f"{name} Grad-CAM on the named one of 2 objects, {len(masks)} trials", scores)
    return name, scores


def test_grad_cam_of_the_named_class_lands_on_that_object(named_class_cams):
    """Grad-CAM of each object's class lands on that object (lenient and strict, as above) at the model's
    CAM_LEVELS, above every baseline of the fixture by their margins."""
    name, scores = named_class_cams
    lenient_bar, lenient_margin, strict_bar, strict_margin = CAM_LEVELS[name]["named"]
    baselines = ["Grad-CAM of the other class", "colour contrast", "centre blob"]
    _assert_truth_and_its_failure_on_baselines(scores, "Grad-CAM of the named class", baselines, "lenient",
                                               bar=lenient_bar, margin=lenient_margin)
    _assert_truth_and_its_failure_on_baselines(scores, "Grad-CAM of the named class", baselines, "strict",
                                               bar=strict_bar, margin=strict_margin)


@pytest.mark.xfail(strict=True, reason="issue 15's bar of 90% for Grad-CAM of the named class: the current mini-vit "
                   "(88.6% top-1) lands there 83% of the time (the one before it, 78% top-1, 23%); strict, so a "
                   "retrained mini-vit that reaches the bar turns this into a failure to update")
@pytest.mark.parametrize("classifier", ["mini-vit"], indirect=True)
def test_mini_vit_grad_cam_reaches_issue_15s_bar(named_class_cams):
    _, scores = named_class_cams
    assert scores["Grad-CAM of the named class"]["lenient"] >= 0.9


def _content_share(weights: np.ndarray) -> float:
    """The colour and shape words' share of the relevance of the three words of "a {colour} {shape}"."""
    return float((weights[1] + weights[2]) / weights.sum())


def test_text_token_relevance_on_mini_clip_favours_the_content_words(clip):
    """For "a {colour} {shape}" against an image of it, the colour and shape words hold >= 90% of the three words'
    relevance, >= 0.05 above the baselines: uniform (each word 1/3: 2/3) and positional (weight growing with the
    position, 1:2:3, as a causal tower's end-of-text readout might favour later tokens: 5/6)."""
    scenes = make_scenes(36, TOKEN_SEED, balanced=True, split="any")
    shares = []
    for scene in scenes:
        tokens, scores = text_token_relevance(clip, clip.pixels([scene.image]), zero_shot_prompt(scene.colour,
                                                                                                   scene.shape))
        words = scores[1:-1].numpy()   # without the start and end tokens
        assert len(words) == 3, tokens
        shares.append(_content_share(words))
    scores = {"mini-clip": {"content share": float(np.mean(shares))},
              "uniform": {"content share": _content_share(np.ones(3))},
              "positional": {"content share": _content_share(np.array([1.0, 2.0, 3.0]))}}
    _print("mini-clip text-token relevance of the content words, 36 prompts", scores)
    _assert_truth_and_its_failure_on_baselines(scores, "mini-clip", ["uniform", "positional"], "content share",
                                               bar=0.9, margin=0.05)
