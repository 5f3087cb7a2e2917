"""Views of the "Ablate & patch" tab: ablate heads or layers and compare the prediction with the clean run, the
head-importance sweep (layer x head map of the target logit's drop), and activation patching from a source image
at a chosen layer and token set."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from models.world import scenes
from viz.intervention_figures import comparison_figure, head_importance_figure, patch_sweep_figure
from viz.interventions import (
    REFERENCE_COUNT,
    compare_ablation,
    compare_patch,
    head_importance,
    patch_every_layer,
    reference_images,
    sweep_sites,
    token_indices,
)
from viz.views import Figures, Subject, has_token_grid, view
from viz.zero_shot import DEFAULT_TEMPLATE

SOURCE_SEED = 777_000   # held-out procedural scenes offered as patching sources


def ablation_choices(model) -> dict[str, list[str]]:
    """What the tab offers to tick: every head of the image tower's attention sites that can be ablated alone, and
    whole layers (attention and MLP outputs; stages for CNNs and hierarchical towers)."""
    tower_points = [name for name in model.image_tower.points]
    heads = [f"{site}.head.{h}" for site in sweep_sites(model) for h in range(model.sites[site].num_heads)]
    layers = [name for name in tower_points if name.endswith((".attn_out", ".mlp_out"))
              or (name.startswith("stages.") and name.count(".") == 1)]
    return {"heads": heads, "layers": layers}


def can_ablate(model) -> bool:
    choices = ablation_choices(model)
    return bool(choices["heads"] or choices["layers"])


def can_sweep(model) -> bool:
    return bool(sweep_sites(model))


def can_patch(model) -> bool:
    return has_token_grid(model) and any(name.endswith(".resid_post") for name in model.image_tower.points)


def default_names(model) -> list[str]:
    """Every head of the last attention site, else the last whole layer the tab offers."""
    choices = ablation_choices(model)
    if choices["heads"]:
        last = choices["heads"][-1].rpartition(".head.")[0]
        return [name for name in choices["heads"] if name.startswith(last + ".head.")]
    return choices["layers"][-1:]


def _reference(mode: str, count: int):
    return reference_images(int(count)) if mode == "mean" else None


def source_scene(seed: int = SOURCE_SEED) -> Image.Image:
    """A held-out procedural scene to patch from, when the user gives no source image."""
    return scenes.make_scenes(1, int(seed), split="any")[0].image


@view("poke.ablate", "Ablate & patch", can_ablate, checks=({}, {"mode": "mean", "reference_count": 4}))
def ablate_view(subject: Subject, names: Sequence[str] | None = None, mode: str = "zero",
                reference_count: int = REFERENCE_COUNT, labels: Sequence[str] | str | None = None,
                templates: Sequence[str] = (DEFAULT_TEMPLATE,), k: int = 5) -> Figures:
    """The prediction with the ticked heads or layers ablated (zeroed or mean-replaced) against the clean run."""
    model = subject.model
    names = list(names) if names else default_names(model)
    comparison = compare_ablation(model, subject.require_image(), names, mode, _reference(mode, reference_count),
                                  labels, templates)
    top_clean = int(comparison.clean_probabilities.argmax())
    top_changed = int(comparison.changed_probabilities.argmax())
    moved = ("the top class stays" if top_clean == top_changed else
             f"the top class moves to **{comparison.labels[top_changed]}**")
    reference = f" over {int(reference_count)} held-out reference scenes" if mode == "mean" else ""
    notice = (f"{len(names)} part(s) {mode}-ablated{reference}: top class clean **{comparison.labels[top_clean]}** "
              f"({comparison.clean_probabilities[top_clean]:.1%} → {comparison.changed_probabilities[top_clean]:.1%});"
              f" {moved}.")
    if any(".head." in name for name in names):
        notice += " Heads are removed at the attention output, before the output projection."
    return {"bars": comparison_figure(comparison, int(k)), "notice": notice}


# the check sweeps the last layer only: a sweep costs one forward per head, too much for every row of the matrix
# (the mean reference is checked by poke.ablate)
@view("poke.sweep", "Ablate & patch", can_sweep, checks=({"layers": [-1]},))
def sweep_view(subject: Subject, target: str | None = None, mode: str = "zero",
               reference_count: int = REFERENCE_COUNT, labels: Sequence[str] | str | None = None,
               templates: Sequence[str] = (DEFAULT_TEMPLATE,), layers: Sequence[int] | None = None) -> Figures:
    """Head importance: the drop of the target logit (default: the clean top class) when each head of the image
    tower (of every attention layer, or of the ``layers`` positions) is ablated alone, as a layer x head map (one
    batched forward per 64 heads)."""
    importance = head_importance(subject.model, subject.require_image(), target or None, mode,
                                 _reference(mode, reference_count), labels, templates, layers=layers)
    top = ", ".join(f"{name.replace('.attn.head.', ' head ')} ({drop:+.2f})" for name, drop in importance.top(5))
    notice = (f"Target **{importance.target_label}**, clean logit {importance.clean_logit:.3f}. Heads whose "
              f"removal lowers it most: {top}.")
    return {"importance": head_importance_figure(importance), "notice": notice}


# the checks patch one layer only (every_layer=False): the layer sweep costs one forward per layer
@view("poke.patch", "Ablate & patch", can_patch,
      checks=({"every_layer": False}, {"tokens": "box", "box": (0.0, 0.0, 0.5, 0.5), "every_layer": False}))
def patch_view(subject: Subject, source: Image.Image | None = None, layer: int | None = None, tokens: str = "all",
               box: Sequence[float] | None = None, labels: Sequence[str] | str | None = None,
               templates: Sequence[str] = (DEFAULT_TEMPLATE,), k: int = 5, source_seed: int = SOURCE_SEED,
               every_layer: bool = True) -> Figures:
    """Activation patching: the source image's residual stream (blocks.N.resid_post, at all tokens, the prefix
    tokens or the patches under a box) put into the image's forward; with ``every_layer``, each layer patched in
    turn (the prediction moving along the depth)."""
    model = subject.model
    source = source if source is not None else source_scene(source_seed)
    layers = [name for name in model.image_tower.points if name.startswith("blocks.") and name.endswith(".resid_post")]
    layer = len(layers) // 2 if layer is None else int(layer)
    if not 0 <= layer < len(layers):
        raise ValueError(f"Layer {layer} is out of range: the model has layers 0..{len(layers) - 1}.")
    chosen = token_indices(model, tokens, box)
    comparison, source_probabilities = compare_patch(model, subject.require_image(), source, layers[layer], chosen,
                                                     labels, templates)
    own, theirs = int(comparison.clean_probabilities.argmax()), int(source_probabilities.argmax())
    notice = (f"{comparison.what[0].upper()}{comparison.what[1:]} from the source. The image's class "
              f"**{comparison.labels[own]}**, the source's **{comparison.labels[theirs]}**: patching layer {layer} "
              f"gives the source's class {comparison.changed_probabilities[theirs]:.1%} (the image's own "
              f"{comparison.changed_probabilities[own]:.1%}).")
    figures = {"bars": comparison_figure(comparison, int(k), source_probabilities), "notice": notice}
    if every_layer:
        sweep = patch_every_layer(model, subject.require_image(), source, chosen, labels, templates)
        figures["layers"] = patch_sweep_figure(sweep)
    return figures
