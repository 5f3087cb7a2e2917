"""What ablation and activation patching do to a model's prediction: clean against ablated scores, the batched
head-importance sweep, patching another image's activations in, and zero-shot accuracy of the bundled world with
layers mean-ablated.

The scores are the model's own: a CLIP's image-text logits (scale x cosine + bias) against labels, a classifier's
logits, or a feature extractor's output vector; probabilities as the model makes them (softmax or sigmoid).

    python -m viz.interventions            # zero-shot accuracy of bundled:mini-clip, layers mean-ablated (a table)
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.adapters.interventions import head_ablation_supported
from models.world import bundled_eval, scenes
from viz.outputs import output_vector
from viz.zero_shot import DEFAULT_LABELS, DEFAULT_TEMPLATE, TEXT_FEATURES, parse_labels

REFERENCE_SEED = 424_242     # held-out scenes (training seeds are >= 10**9) the mean ablation averages over
REFERENCE_COUNT = 32
SWEEP_BATCH = 64             # copies of the image per forward in the head sweep


def reference_images(count: int = REFERENCE_COUNT, seed: int = REFERENCE_SEED) -> list[Image.Image]:
    """Held-out procedural scenes (any class, position, size, background): the set mean ablation averages over."""
    return [scene.image for scene in scenes.make_scenes(int(count), seed, split="any")]


def reference_pixels(model, mode: str, reference=None) -> torch.Tensor | None:
    """What mean ablation averages over, preprocessed once (a sweep enters many ablations): ``reference`` images
    or pixels, the held-out reference scenes by default; None for zero ablation."""
    if mode != "mean":
        return None
    reference = reference_images() if reference is None else reference
    return model.pixels(reference if torch.is_tensor(reference) else list(reference))


# -- scores ---------------------------------------------------------------------------------------------------------
class Scorer:
    """One score per label for a batch of pixels, from whatever forward runs now (ablated or not): a CLIP's
    image-text logits against ``labels`` (prompt templates ensembled), else the image tower's output vector."""

    def __init__(self, model, labels: Sequence[str] | str | None = None,
                 templates: Sequence[str] = (DEFAULT_TEMPLATE,)):
        self.model = model
        self.text = None
        if model.has_text:
            self.labels = parse_labels(labels if labels is not None else DEFAULT_LABELS)
            self.text = TEXT_FEATURES.get(model, self.labels, list(templates)).features
        else:
            self.labels = list(model.image_tower.class_names)

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, labels) float32 on the CPU."""
        if self.text is not None:
            return self.model.logits(self.model.encode_image(pixels), self.text.to(self.model.device)).float().cpu()
        scores = output_vector(self.model.image_tower, self.model.run_image(pixels)).float().cpu()
        if not self.labels:   # a feature extractor: its outputs are the labels
            self.labels = [self.model.output_label(i) for i in range(scores.shape[-1])]
        return scores

    def probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return self.model.probabilities(logits).numpy()

    def index(self, label: str | int | None, logits: torch.Tensor) -> int:
        """The target class: a label (or its index); None = the top class of ``logits``."""
        if label is None or label == "":
            return int(logits.argmax())
        if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.isdigit()):
            index = int(label)
            if not 0 <= index < len(self.labels):
                raise ValueError(f"Target {index} is out of range: the model has {len(self.labels)} outputs.")
            return index
        if label not in self.labels:
            raise ValueError(f"Target {label!r} is not one of the labels ({', '.join(self.labels[:8])}…).")
        return self.labels.index(label)


@dataclass
class Comparison:
    """Scores of one image under two forwards (clean and changed), per label."""

    labels: list[str]
    clean: np.ndarray                  # logits
    changed: np.ndarray
    clean_probabilities: np.ndarray
    changed_probabilities: np.ndarray
    what: str                          # what was changed, in words (figure titles)
    changed_name: str = "ablated"      # the changed forward's name in legends: "ablated" or "patched"

    @property
    def delta(self) -> np.ndarray:
        """Change of each label's probability."""
        return self.changed_probabilities - self.clean_probabilities

    def shown(self, k: int) -> list[int]:
        """The labels worth drawing: the top k of either forward, most probable (clean) first."""
        top = list(np.argsort(-self.clean_probabilities, kind="stable")[:k])
        top += [i for i in np.argsort(-self.changed_probabilities, kind="stable")[:k] if i not in top]
        return [int(i) for i in top]


def describe(names: Sequence[str], mode: str) -> str:
    """"zero-ablated blocks.3.attn.head.1, blocks.5.mlp_out" (shortened beyond four names)."""
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{mode}-ablated {shown}"


def compare_ablation(model, image: Image.Image, names: Sequence[str], mode: str = "zero", reference=None,
                     labels: Sequence[str] | str | None = None, templates: Sequence[str] = (DEFAULT_TEMPLATE,)
                     ) -> Comparison:
    """The prediction for ``image`` clean and with ``names`` ablated (``mode`` "mean": over ``reference`` images,
    the held-out reference scenes by default)."""
    if not names:
        raise ValueError("Tick at least one head or layer to ablate.")
    scorer = Scorer(model, labels, templates)
    pixels = model.pixels([image])
    clean = scorer.logits(pixels)
    reference = reference_pixels(model, mode, reference)
    with model.ablate(list(names), mode=mode, reference=reference):
        changed = scorer.logits(pixels)
    return Comparison(scorer.labels, clean[0].numpy(), changed[0].numpy(), scorer.probabilities(clean)[0],
                      scorer.probabilities(changed)[0], describe(list(names), mode))


# -- the head-importance sweep ----------------------------------------------------------------------------------------
def sweep_sites(model) -> list[str]:
    """The image tower's attention sites whose heads can be ablated one by one, in forward order."""
    return [name for name, site in model.sites.items() if not name.startswith("text.") and
            head_ablation_supported(site)]


@dataclass
class HeadImportance:
    """Drop of the target's logit when each head is ablated alone: ``drop[s, h]`` for site ``sites[s]``, head
    ``h`` (NaN where a site has fewer heads than the widest)."""

    sites: list[str]
    drop: np.ndarray
    target: int
    target_label: str
    clean_logit: float
    mode: str

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k heads whose removal lowers the target most: (name, drop)."""
        flat = np.nan_to_num(self.drop, nan=-np.inf).reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        width = self.drop.shape[1]
        return [(f"{self.sites[i // width]}.head.{i % width}", float(flat[i])) for i in order]


def _chosen_sites(model, layers: Sequence[int] | None) -> list[str]:
    """The sweep's sites: every one, or those at the ``layers`` positions (negative counts from the end)."""
    sites = sweep_sites(model)
    if not sites:
        raise ValueError(f"{model.model_id} has no attention heads the sweep can ablate one by one.")
    if layers is None:
        return sites
    bad = [layer for layer in layers if not -len(sites) <= int(layer) < len(sites)]
    if bad:
        raise ValueError(f"Layers {bad} are out of range: the sweep has {len(sites)} attention layers.")
    return list(dict.fromkeys(sites[int(layer)] for layer in layers))


def _head_names(model, sites: Sequence[str]) -> list[str]:
    return [f"{site}.head.{h}" for site in sites for h in range(model.sites[site].num_heads)]


def _sweep_result(model, sites, names, ablated, clean_logit, target, labels, mode) -> HeadImportance:
    width = max(model.sites[site].num_heads for site in sites)
    drop = np.full((len(sites), width), np.nan)
    for name, value in zip(names, ablated, strict=True):
        site, _, head = name.rpartition(".head.")
        drop[sites.index(site), int(head)] = clean_logit - value
    return HeadImportance(list(sites), drop, target, labels[target], clean_logit, mode)


def head_importance(model, image: Image.Image, target: str | int | None = None, mode: str = "zero",
                    reference=None, labels: Sequence[str] | str | None = None,
                    templates: Sequence[str] = (DEFAULT_TEMPLATE,), batch: int = SWEEP_BATCH,
                    layers: Sequence[int] | None = None) -> HeadImportance:
    """Ablate every head of the image tower (of the ``layers`` positions only, if given) alone and read the target's
    logit (target: a label, an index, or None for the clean top class). Batched: copies of the image run in one
    forward, copy i with head i ablated (a row mask per head), ``batch`` copies at a time."""
    sites = _chosen_sites(model, layers)
    scorer = Scorer(model, labels, templates)
    pixels = model.pixels([image])
    clean = scorer.logits(pixels)[0]
    index = scorer.index(target, clean)
    reference = reference_pixels(model, mode, reference)
    names = _head_names(model, sites)
    ablated: list[float] = []
    for start in range(0, len(names), batch):
        chunk = names[start:start + batch]
        rows = {name: [i == j for j in range(len(chunk))] for i, name in enumerate(chunk)}
        with model.ablate(chunk, mode=mode, reference=reference, rows=rows):
            ablated.extend(scorer.logits(pixels.expand(len(chunk), *pixels.shape[1:]))[:, index].tolist())
    return _sweep_result(model, sites, names, ablated, float(clean[index]), index, scorer.labels, mode)


def head_importance_one_at_a_time(model, image: Image.Image, target: str | int | None = None, mode: str = "zero",
                                  reference=None, labels: Sequence[str] | str | None = None,
                                  templates: Sequence[str] = (DEFAULT_TEMPLATE,),
                                  layers: Sequence[int] | None = None) -> HeadImportance:
    """The same sweep, one forward per head: the reference the batched sweep is checked and timed against."""
    sites = _chosen_sites(model, layers)
    scorer = Scorer(model, labels, templates)
    pixels = model.pixels([image])
    clean = scorer.logits(pixels)[0]
    index = scorer.index(target, clean)
    reference = reference_pixels(model, mode, reference)
    names = _head_names(model, sites)
    ablated = []
    for name in names:
        with model.ablate([name], mode=mode, reference=reference):
            ablated.append(float(scorer.logits(pixels)[0, index]))
    return _sweep_result(model, sites, names, ablated, float(clean[index]), index, scorer.labels, mode)


# -- activation patching ----------------------------------------------------------------------------------------------
TOKEN_SETS = ("all", "prefix", "box")


def token_indices(model, which: str = "all", box: Sequence[float] | None = None) -> list[int] | None:
    """Token indices of the image tower's sequence: None for every token, the prefix tokens (CLS, registers), or
    the patches whose centre lies in ``box`` = (x0, y0, x1, y1) as fractions of the image's width and height."""
    tower = model.image_tower
    prefix = getattr(tower, "num_prefix_tokens", 0)
    if which == "all":
        return None
    if which == "prefix":
        if not prefix:
            raise ValueError(f"{model.model_id} has no prefix tokens (no CLS): patch all tokens or a box.")
        return list(range(prefix))
    if which != "box":
        raise ValueError(f"Token set {which!r}: use one of {', '.join(TOKEN_SETS)}.")
    x0, y0, x1, y1 = (float(v) for v in (box or (0.0, 0.0, 1.0, 1.0)))
    rows, cols = tower.grid()
    cells = [prefix + r * cols + c for r in range(rows) for c in range(cols)
             if x0 <= (c + 0.5) / cols <= x1 and y0 <= (r + 0.5) / rows <= y1]
    if not cells:
        raise ValueError(f"The box ({x0:.2f}, {y0:.2f})-({x1:.2f}, {y1:.2f}) holds no patch centre of the "
                         f"{rows}x{cols} grid: draw a bigger box.")
    return cells


def describe_tokens(model, tokens: list[int] | None) -> str:
    if tokens is None:
        return "all tokens"
    prefix = getattr(model.image_tower, "num_prefix_tokens", 0)
    if tokens == list(range(prefix)):
        return "the prefix token" + ("s" if prefix > 1 else "") + " (CLS)"
    return f"{len(tokens)} patch{'es' if len(tokens) > 1 else ''}"


def compare_patch(model, image: Image.Image, source: Image.Image, point: str, tokens: list[int] | None = None,
                  labels: Sequence[str] | str | None = None, templates: Sequence[str] = (DEFAULT_TEMPLATE,)
                  ) -> tuple[Comparison, np.ndarray]:
    """The prediction for ``image`` clean and with ``point`` (at ``tokens``) patched from ``source``'s forward;
    also the source's own probabilities."""
    scorer = Scorer(model, labels, templates)
    with model.capture([point]) as cache:
        source_logits = scorer.logits(model.pixels([source]))
    pixels = model.pixels([image])
    clean = scorer.logits(pixels)
    with model.patch({point: cache}, tokens=tokens):
        patched = scorer.logits(pixels)
    comparison = Comparison(scorer.labels, clean[0].numpy(), patched[0].numpy(), scorer.probabilities(clean)[0],
                            scorer.probabilities(patched)[0], f"{point} ({describe_tokens(model, tokens)}) patched",
                            "patched")
    return comparison, scorer.probabilities(source_logits)[0]


@dataclass
class PatchSweep:
    """Probability of the image's own top class and the source's top class when ``points[i]`` is patched."""

    points: list[str]
    own: np.ndarray
    source: np.ndarray
    own_label: str
    source_label: str
    tokens: str


def patch_every_layer(model, image: Image.Image, source: Image.Image, tokens: list[int] | None = None,
                      labels: Sequence[str] | str | None = None, templates: Sequence[str] = (DEFAULT_TEMPLATE,)
                      ) -> PatchSweep:
    """Patch each block's ``resid_post`` (at ``tokens``) from ``source`` in turn: where along the depth does the
    prediction move from the image's class to the source's?"""
    scorer = Scorer(model, labels, templates)
    points = [name for name in model.image_tower.points if name.startswith("blocks.") and name.endswith(".resid_post")]
    if not points:
        raise ValueError(f"{model.model_id} has no blocks.N.resid_post points to patch.")
    with model.capture(points) as cache:
        source_logits = scorer.logits(model.pixels([source]))
    pixels = model.pixels([image])
    own_class = int(scorer.logits(pixels)[0].argmax())
    source_class = int(source_logits[0].argmax())
    own, moved = [], []
    for point in points:
        with model.patch({point: cache}, tokens=tokens):
            probabilities = scorer.probabilities(scorer.logits(pixels))[0]
        own.append(probabilities[own_class])
        moved.append(probabilities[source_class])
    return PatchSweep(points, np.array(own), np.array(moved), scorer.labels[own_class], scorer.labels[source_class],
                      describe_tokens(model, tokens))


# -- the bundled world: zero-shot accuracy with layers mean-ablated ----------------------------------------------------
def ablation_accuracy_table(model, n: int = 360, reference_count: int = REFERENCE_COUNT,
                            mode: str = "mean") -> list[tuple[str, float]]:
    """Zero-shot top-1 of a CLIP on ``n`` held-out scenes (all 36 classes) clean, with each layer's attention or
    MLP ablated, with every attention and with all MLPs ablated (``mode`` over the held-out reference scenes)."""
    reference = reference_images(reference_count)
    layers = sorted({int(name.split(".")[1]) for name in model.image_tower.points
                     if name.startswith("blocks.") and name.endswith(".attn_out")})
    settings: list[tuple[str, list[str]]] = [("clean", [])]
    settings += [(f"layer {layer} attention", [f"blocks.{layer}.attn_out"]) for layer in layers]
    settings += [(f"layer {layer} MLP", [f"blocks.{layer}.mlp_out"]) for layer in layers]
    settings += [("every attention", [f"blocks.{layer}.attn_out" for layer in layers]),
                 ("all MLPs", [f"blocks.{layer}.mlp_out" for layer in layers])]
    rows = []
    for label, names in settings:
        with model.ablate(names, mode=mode, reference=reference) if names else contextlib.nullcontext():
            result = bundled_eval.clip_zero_shot_accuracy(model.encode_image, model.encode_text, model.pixels, n=n,
                                                          split="any")
        rows.append((label, result["top1"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    from models.registry import load_model

    parser = argparse.ArgumentParser(description="Zero-shot accuracy of a CLIP on held-out scenes of the bundled "
                                                 "world with layers ablated.")
    parser.add_argument("--model", default="bundled:mini-clip")
    parser.add_argument("--n", type=int, default=360, help="held-out scenes (equal counts of the 36 classes)")
    parser.add_argument("--reference", type=int, default=REFERENCE_COUNT, help="reference scenes for the mean")
    parser.add_argument("--mode", default="mean", choices=["mean", "zero"])
    args = parser.parse_args(argv)
    rows = ablation_accuracy_table(load_model(args.model), n=args.n, reference_count=args.reference, mode=args.mode)
    print(f"{args.model}: zero-shot top-1 on {args.n} held-out scenes (36 classes, chance 2.8%), "
          f"{args.mode}-ablated over {args.reference} reference scenes")
    print(f"{'ablated':<22} top-1")
    for label, accuracy in rows:
        print(f"{label:<22} {accuracy:6.1%}")


if __name__ == "__main__":
    main()
