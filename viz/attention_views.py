"""Views of the Attention tab: one query's attention (overlay, every head, step by step), rollout, relevancy with
prompt-token relevance, per-patch zero-shot and mean attention distance; all but the last read one hooked forward."""
from __future__ import annotations

import torch

from models.world import scenes
from viz.attention import FUSIONS, mean_distance_by_layer, special_token_flags
from viz.attention_figures import (
    head_grid_figure,
    head_phrase,
    mean_distance_figure,
    overlay_figure,
    overview_figure,
    patch_zero_shot_figure,
    steps_figure,
    token_relevance_figure,
)
from viz.cam import output_index
from viz.domain import domain_notes
from viz.outputs import output_vector
from viz.views import Figures, Subject, has_token_grid, view

DEFAULT_PROMPT = "a red triangle"
DEFAULT_PATCH_PROMPTS = ("a red triangle", "an orange circle", "a background")
DISTANCE_SEED = 7


def has_text_and_grid(model) -> bool:
    return model.has_text and has_token_grid(model)


def token_label(session, token: int) -> str:
    """"CLS", "REG0", ... for prefix tokens, "patch (row, col)" for patches."""
    if token < session.prefix:
        return session.vit.prefix_tokens[token].upper()
    row, col = divmod(token - session.prefix, session.grid[1])
    return f"patch ({row}, {col})"


def head_choice(head: int | str, heads: int) -> int | str:
    """"mean" / "max" / "min", an index, or "head N" (checked against the model's head count)."""
    if head in FUSIONS:
        return head
    try:
        index = int(str(head).split()[-1])
    except (ValueError, IndexError):
        raise ValueError(f"Head {head!r}: use 'head N' or one of {list(FUSIONS)}.") from None
    if not 0 <= index < heads:
        raise ValueError(f"Head {index} does not exist: this model has heads 0 to {heads - 1}.")
    return index


def _layer(session, layer: int) -> int:
    return min(max(int(layer), 0), session.vit.num_layers - 1)


def _query(session, query: int) -> int:
    if not 0 <= int(query) < session.num_tokens:
        raise ValueError(f"Token {query} does not exist: this model has tokens 0 to {session.num_tokens - 1}.")
    return int(query)


def _seen(session):
    return session.vit.preprocess.unnormalize(session.pixels[0])


@view("attention.query", "Attention", has_token_grid, checks=({}, {"head": "head 0", "query": -1}))
def query_view(subject: Subject, layer: int = 0, head: int | str = "mean", query: int = 0) -> Figures:
    """Where one query token (prefix token or patch; -1 = the last) looks at one layer, for one head or heads
    fused."""
    session = subject.attention()
    layer = _layer(session, layer)
    query = session.num_tokens - 1 if int(query) == -1 else _query(session, query)
    chosen = head_choice(head, session.vit.num_heads)
    label = token_label(session, query)
    cell = None if query < session.prefix else divmod(query - session.prefix, session.grid[1])
    overlay = overlay_figure(_seen(session), session.query_map(layer, chosen, query),
                             f"layer {layer}, {head_phrase(chosen, session.vit.num_heads)}: where {label} looks",
                             query_cell=cell)
    info = f"Query: **{label}** (token {query}). Click the image to pick a patch."
    return {"overlay": overlay, "query_info": "\n\n".join([info, *domain_notes(subject.model, [subject.image])])}


@view("attention.heads", "Attention", has_token_grid)
def heads_view(subject: Subject, layer: int = 0, query: int = 0) -> Figures:
    """Every head's map for one query token at one layer."""
    session = subject.attention()
    layer, query = _layer(session, layer), _query(session, query)
    return {"heads": head_grid_figure(session.all_heads(layer, query),
                                      f"layer {layer}: every head, query {token_label(session, query)}")}


@view("attention.overview", "Attention", has_token_grid, checks=({}, {"query": -1}))
def overview_view(subject: Subject, query: int = 0) -> Figures:
    """Every layer x head at once for one query token (each map scaled to its own maximum)."""
    session = subject.attention()
    query = session.num_tokens - 1 if int(query) == -1 else _query(session, query)
    maps = [session.all_heads(layer, query) for layer in range(session.vit.num_layers)]
    return {"overview": overview_figure(torch.stack(maps), f"Every layer × head: where {token_label(session, query)} "
                                                           "looks (each map scaled to its own maximum)")}


@view("attention.steps", "Attention", has_token_grid, checks=({"temperature": 0.5},))
def steps_view(subject: Subject, layer: int = 0, head: int | str = 0, query: int = 0,
               temperature: float = 1.0) -> Figures:
    """One attention row computed step by step: scores, softmax at a temperature, weighted values."""
    session = subject.attention()
    layer, query = _layer(session, layer), _query(session, query)
    chosen = head_choice(head, session.vit.num_heads)
    shown = range(session.vit.num_heads) if isinstance(chosen, str) else [chosen]  # a fusion: every head, fused
    labels = [token_label(session, t) for t in range(session.num_tokens)]
    steps = [session.steps(layer, h, query, float(temperature)) for h in shown]
    return {"steps": steps_figure(steps, labels, layer, chosen, token_label(session, query), session.prefix)}


@view("attention.rollout", "Attention", has_token_grid, checks=({}, {"fusion": "max", "discard": 0.5}))
def rollout_view(subject: Subject, fusion: str = "mean", discard: float = 0.0) -> Figures:
    """Attention rollout: what the model's readout draws on, through every layer (no forward)."""
    session = subject.attention()
    heat = session.rollout_map(fusion, float(discard))
    return {"rollout": overlay_figure(_seen(session), heat,
                                      f"Rollout ({fusion} over heads, discard {float(discard):.0%})")}


@view("attention.relevancy", "Attention", has_token_grid)
def relevancy_view(subject: Subject, target: str | int | None = None) -> Figures:
    """Chefer relevancy for a prompt (text models; with each prompt token's relevance) or an output (default: the
    model's top output)."""
    session = subject.attention()
    model = subject.model
    if model.has_text:
        prompt = str(target).strip() if target is not None and str(target).strip() else DEFAULT_PROMPT
        heat = session.relevancy(prompt)
        tokens, scores = session.token_relevance(prompt)
        return {"relevancy": overlay_figure(_seen(session), heat, f"Relevancy for “{prompt}”"),
                "token_relevance": token_relevance_figure(tokens, scores, special_token_flags(model, prompt))}
    index = output_index(model.image_tower.class_names, target, output_vector(session.vit, session.output)[0])
    heat = session.relevancy(index)
    return {"relevancy": overlay_figure(_seen(session), heat, f"Relevancy for {model.output_label(index)}")}


@view("attention.patch_zero_shot", "Attention", has_text_and_grid)
def patch_zero_shot_view(subject: Subject, prompts: tuple[str, ...] | list[str] = DEFAULT_PATCH_PROMPTS) -> Figures:
    """Which prompt each final patch token matches, through the model's own final norm and projection."""
    session = subject.attention()
    prompts = [p.strip() for p in prompts if p and p.strip()]
    return {"patch_zero_shot": patch_zero_shot_figure(_seen(session), session.patch_zero_shot(prompts), prompts)}


@view("attention.mean_distance", "Attention", has_token_grid,
      checks=({"images": 2}, {"images": 2, "prefix_attention": "renormalise"}))
def mean_distance_view(subject: Subject, images: int = 16, prefix_attention: str = "distance_zero") -> Figures:
    """Mean attention distance per head against depth over procedural images (the ViT paper's Figure 7); attention
    to prefix tokens counts as distance 0 as in the paper, or with ``prefix_attention="renormalise"`` is left out."""
    model = subject.model
    pictures = [e.image for e in scenes.make_scenes(int(images), DISTANCE_SEED, split="any")]
    distances = mean_distance_by_layer(model, model.pixels(pictures), prefix_attention)
    return {"mean_distance": mean_distance_figure(distances, prefix_attention)}
