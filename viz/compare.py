"""Side by side: one registered view with two settings, or on two models, for the same image. Two heads of a layer,
two CAM methods, or a CLIP's rollout against a ViT's are all "view A with parameters A next to view B with
parameters B", so comparing needs no view of its own: it runs the registry twice and shares the hooked forward when
both sides use the same model.

    figures_a, figures_b = compare(Side("attention.query", model, {"layer": 1, "head": 0}),
                                   Side("attention.query", model, {"layer": 1, "head": 1}), image)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from PIL import Image

from models.adapters.base import ModelAdapter
from viz.views import VIEWS, Figures, Subject, run_view

# views that answer "what does this model do with this image" in one figure (the Compare tab's choices)
COMPARABLE = ("attention.query", "attention.heads", "attention.rollout", "attention.relevancy",
              "patches.token_similarity", "patches.islands", "cnn.feature_maps", "cnn.cam", "cnn.receptive_field",
              "cnn.prediction", "zero_shot.classify", "decomposition.score", "decomposition.head_patches")


def comparable_views() -> list[str]:
    """The registered views the Compare tab offers (those of COMPARABLE that exist)."""
    return [name for name in COMPARABLE if name in VIEWS]


def view_parameters(view_name: str) -> dict[str, object]:
    """The view's parameters and their defaults (what a settings line may set)."""
    if view_name not in VIEWS:
        raise ValueError(f"No view {view_name!r}; choose one of {', '.join(comparable_views())}.")
    parameters = list(inspect.signature(VIEWS[view_name].run).parameters.values())[1:]  # after the subject
    return {p.name: p.default for p in parameters}


def _value(text: str) -> object:
    """A settings value: none, true/false, an int, a float, a list (``a; b; c``) or the text itself."""
    text = text.strip()
    if text.lower() in ("none", ""):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if ";" in text:
        return tuple(part.strip() for part in text.split(";") if part.strip())
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_settings(view_name: str, text: str) -> dict[str, object]:
    """``"layer=3, head=1"`` -> ``{"layer": 3, "head": 1}`` for ``view_name``; an unknown name is a ValueError that
    lists the view's parameters. Lists are written ``prompts=a red circle; a blue star``."""
    known = view_parameters(view_name)
    settings: dict[str, object] = {}
    for item in _split_items(text or ""):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"Settings are name=value pairs separated by commas (got {item.strip()!r}).")
        if name not in known:
            listed = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
            raise ValueError(f"{view_name} has no parameter {name!r}; its parameters (defaults): {listed}.")
        settings[name] = _value(value)
    return settings


def _split_items(text: str) -> list[str]:
    """Split at commas that start a new ``name=`` (so a prompt may contain commas)."""
    items: list[str] = []
    for piece in text.split(","):
        if items and "=" not in piece:
            items[-1] += "," + piece
        elif piece.strip():
            items.append(piece)
    return items


@dataclass
class Side:
    """One side of a comparison: a view, the model it runs on and its settings."""

    view: str
    model: ModelAdapter
    settings: dict = field(default_factory=dict)


def compare(a: Side, b: Side, image: Image.Image) -> tuple[Figures, Figures]:
    """Run both sides on ``image``; a model shared by both sides runs its hooked forward once."""
    subjects: dict[int, Subject] = {}
    results = []
    for side in (a, b):
        if side.view not in VIEWS:
            raise ValueError(f"No view {side.view!r}; choose one of {', '.join(comparable_views())}.")
        if not VIEWS[side.view].applies(side.model):
            raise ValueError(f"{side.view} does not apply to {side.model.model_id} (the {VIEWS[side.view].tab} "
                             "tab says what it needs); pick another view or model.")
        subject = subjects.setdefault(id(side.model), Subject(side.model, image))
        results.append(run_view(side.view, subject, **side.settings))
    return results[0], results[1]


def first_figure(figures: Figures):
    """The first Plotly figure of a view's output (every comparable view has one)."""
    for value in figures.values():
        if hasattr(value, "to_json"):
            return value
    raise ValueError("This view draws no figure to compare.")
