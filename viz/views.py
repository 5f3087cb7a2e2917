"""The view registry: a view is a unit. One registered function per view takes a :class:`Subject` (a model, an image,
and the hooked forwards its views share) plus its parameters, and returns named figures.

The app's tabs bind widgets to these views, ``app.py --check``, the payload benchmark and the coverage matrix
(``python -m models coverage``) read the same registry, so every face runs exactly the same code.

    from viz.views import Subject, run_view, views_for
    subject = Subject(load_model("bundled:mini-clip"), image)
    figures = run_view("attention.rollout", subject, fusion="max")   # {"rollout": go.Figure}

A view applies to a model by its capabilities only (``has_attention``, ``has_feature_maps``, ``has_text``, class
names, hook points), never by its family or backend.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from models.adapters.base import ModelAdapter
from models.coverage import ViewOutcome
from viz.provenance import stamp_figures

CHECK_IMAGE_SEED = 2024  # held out: training seeds are >= shapes.TRAIN_SEED_START, and split="held_out" scenes


class Subject:
    """One model and (optionally) one image, and the hooked forwards its views share: each session is built on first
    use and kept, so switching a view's parameters never runs the model again unless that view needs it."""

    def __init__(self, model: ModelAdapter | None, image: Image.Image | None = None):
        """``model`` may be None for a view handed all its data (an embedding set read from disk)."""
        self.model = model
        self.image = image
        self._memo: dict[str, Any] = {}

    def require_image(self) -> Image.Image:
        if self.image is None:
            raise ValueError("Upload an image or pick an example first.")
        return self.image

    def remember(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()`` once per key for this subject (sessions, zero-shot results), then the kept value."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def attention(self):
        """The attention session of the image: patterns, Q, K, V and the residual stream of every block."""
        from viz.attention_session import AttentionSession
        return self.remember("attention", lambda: AttentionSession(self.model, self.require_image()))

    def stage_attention(self):
        """The stage-attention session of the image (hierarchical towers): every stage's window patterns."""
        from viz.hierarchical import StageAttentionSession
        return self.remember("stage_attention", lambda: StageAttentionSession(self.model, self.require_image()))

    def cnn(self):
        """The CNN session of the image: the stem and stage maps, prediction scores."""
        from viz.cnn_session import CNNSession
        return self.remember("cnn", lambda: CNNSession(self.model, self.require_image()))


Figures = dict[str, Any]   # name -> Plotly figure, Markdown text, table rows or gallery items


@dataclass(frozen=True)
class View:
    """One view: where the app shows it, which models it applies to, and the function that draws it.

    ``run(subject, **params)`` returns named figures; every parameter has a default. ``checks`` are the parameter
    sets :func:`check_views` runs (small, so the check is quick; ``{}`` = the defaults).
    """

    name: str
    tab: str
    applies: Callable[[ModelAdapter], bool]
    run: Callable[..., Figures]
    checks: tuple[dict, ...] = field(default=({},))
    doc: str = ""


VIEWS: dict[str, View] = {}


def register(view: View) -> View:
    """Add (or replace) a view; returns it."""
    VIEWS[view.name] = view
    return view


def view(name: str, tab: str, applies: Callable[[ModelAdapter], bool], checks: tuple[dict, ...] = ({},)):
    """Decorator: register the function as the view ``name`` (its docstring is the view's description)."""
    def decorate(run: Callable[..., Figures]) -> Callable[..., Figures]:
        register(View(name, tab, applies, run, checks, (run.__doc__ or "").strip().split("\n")[0]))
        return run
    return decorate


def views_for(model: ModelAdapter, tab: str | None = None) -> list[View]:
    """Every registered view that applies to ``model`` (optionally of one tab), in registration order."""
    return [v for v in VIEWS.values() if (tab is None or v.tab == tab) and v.applies(model)]


def run_view(name: str, subject: Subject, **params) -> Figures:
    """Run one view on ``subject`` with ``params`` (the others take their defaults)."""
    if name not in VIEWS:
        raise KeyError(f"No view {name!r}; registered: {', '.join(VIEWS)}.")
    figures = VIEWS[name].run(subject, **params)
    if not isinstance(figures, dict) or not figures:
        raise TypeError(f"View {name} returned {type(figures).__name__}, not named figures.")
    return stamp_figures(figures, name, subject, params)   # each figure says which view, model, image, settings


def check_image() -> Image.Image:
    """The procedural image :func:`check_views` runs every view on: a held-out scene of the bundled world (two
    objects, so text-conditioned views have a choice), 224 px as an upload would be."""
    from models.world import scenes
    return scenes.make_scenes(1, seed=CHECK_IMAGE_SEED, split="held_out", n_objects=2)[0].image.resize((224, 224))


def _check_label(view: View, params: dict) -> str:
    if not params:
        return view.name
    return f"{view.name}[{', '.join(f'{k}={v}' for k, v in params.items())}]"


def check_views(model: ModelAdapter, image: Image.Image | None = None) -> list[ViewOutcome]:
    """Run every view that applies to ``model`` once per check parameter set, on a procedural image, and serialise
    its Plotly figures as the app would; each failure becomes its outcome's error (never raised), so one broken view
    does not hide the others."""
    subject = Subject(model, image if image is not None else check_image())
    outcomes = []
    for one in VIEWS.values():
        try:
            applies = one.applies(model)
        except Exception as exc:  # noqa: BLE001 - a capability that cannot be read is that view's failure
            outcomes.append(ViewOutcome(one.name, f"applies: {type(exc).__name__}: {exc}"[:300]))
            continue
        if not applies:
            continue
        for params in one.checks:
            label = _check_label(one, params)
            try:
                for figure in run_view(one.name, subject, **params).values():
                    if hasattr(figure, "to_json"):
                        figure.to_json()   # what gr.Plot sends: a figure that cannot be serialised fails here
                outcomes.append(ViewOutcome(label))
            except Exception as exc:  # noqa: BLE001 - every view failure is reported, the others still run
                where = traceback.extract_tb(exc.__traceback__)[-1]
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                outcomes.append(ViewOutcome(label, f"{type(exc).__name__}: {text} "
                                                   f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"[:300]))
    return outcomes


# -- capabilities the views ask ----------------------------------------------------------------------------------------
def has_token_grid(model: ModelAdapter) -> bool:
    """Does the image tower attend over one token grid (prefix tokens, then patches), block by block?"""
    tower = model.image_tower
    return model.has_attention and "blocks.0.attn" in tower.sites and callable(getattr(tower, "grid", None))


def any_model(model: ModelAdapter) -> bool:
    """Views every image model has (structure, prediction, CAM targets)."""
    return True


# -- the views: each module registers its views when imported; a new module of views adds its import here --------------
from viz import model_views, attention_views, patch_views, cnn_views, zero_shot_views, embedding_views  # noqa: E402,F401,I001
from viz import hierarchical  # noqa: E402,F401 - per-stage window-attention views
from viz import decomposition_views  # noqa: E402,F401 - the Decomposition tab's views
from viz import intervention_views  # noqa: E402,F401 - the Ablate & patch tab's views
