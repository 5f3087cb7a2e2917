"""Views of the Patches tab: the patch grid, patch-embedding filter components, position-embedding similarity,
token similarity, PCA "islands", residual-stream norms and attention correlation; all from one hooked forward."""
from __future__ import annotations

import math

from viz.attention_figures import patch_grid_figure
from viz.domain import domain_notes
from viz.patch_figures import (
    attention_correlation_figure,
    filters_figure,
    patch_pca_figure,
    position_similarity_figure,
    residual_figure,
    token_similarity_figure,
)
from viz.patches import (
    filters_to_rgb_tiles,
    patch_filter_components,
    patch_pca_rgb,
    position_similarity,
    token_similarity,
)
from viz.residual import attention_map_correlation, residual_norms
from viz.views import Figures, Subject, has_token_grid, view


def has_patch_filters(model) -> bool:
    return has_token_grid(model) and callable(getattr(model.image_tower, "patch_embed_weight", None))


def has_position_table(model) -> bool:
    return has_token_grid(model) and "pos_embed" in model.image_tower.points


def _seen(session):
    return session.vit.preprocess.unnormalize(session.pixels[0])


def _layer(session, layer: int) -> int:
    return min(max(int(layer), 0), session.vit.num_layers - 1)


@view("patches.grid", "Patches", has_token_grid)
def grid_view(subject: Subject) -> Figures:
    """The input as the model sees it, cut into its patch grid, with token indices (prefix tokens first)."""
    session = subject.attention()
    vit = session.vit
    return {"grid": patch_grid_figure(_seen(session), session.grid, vit.patch_size, vit.prefix_tokens),
            "notes": "\n\n".join(domain_notes(subject.model, [subject.image]))}   # what the model knows


@view("patches.filters", "Patches", has_patch_filters)
def filters_view(subject: Subject, components: int = 28) -> Figures:
    """Principal components of the patch-embedding filters as RGB tiles (the ViT paper's Figure 7, left)."""
    found, explained = patch_filter_components(subject.model.image_tower.patch_embed_weight(), int(components))
    return {"filters": filters_figure(filters_to_rgb_tiles(found), explained)}


@view("patches.positions", "Patches", has_position_table)
def positions_view(subject: Subject) -> Figures:
    """Cosine similarity of each position embedding with all others, on the model's patch grid."""
    session = subject.attention()
    if session.pos_table is None:
        raise ValueError(f"{subject.model.model_id} captured no position table.")
    prefix_rows = session.vit.pos_embed_prefix_rows
    side = math.isqrt(session.pos_table.shape[0] - prefix_rows)
    return {"positions": position_similarity_figure(
        position_similarity(session.pos_table, (side, side), prefix_rows, target_grid=session.grid))}


@view("patches.token_similarity", "Patches", has_token_grid, checks=({"layer": 1, "query": -1},))
def token_similarity_view(subject: Subject, layer: int = 0, query: int | None = None) -> Figures:
    """Cosine similarity of every patch token to one token at a layer (default: the first patch; -1 = the last)."""
    session = subject.attention()
    layer = _layer(session, layer)
    query = session.prefix if query is None else (session.num_tokens - 1 if int(query) == -1 else int(query))
    tokens = session.stream[f"blocks.{layer}.resid_post"][0]
    similarity = token_similarity(tokens, query)[session.prefix:].reshape(session.grid)
    cell = (0, 0) if query < session.prefix else divmod(query - session.prefix, session.grid[1])
    return {"similarity": token_similarity_figure(similarity, cell)}


@view("patches.islands", "Patches", has_token_grid)
def islands_view(subject: Subject, layer: int = 0) -> Figures:
    """The patch tokens of a layer mapped to colours by their first three principal components ("islands")."""
    session = subject.attention()
    tokens = session.stream[f"blocks.{_layer(session, layer)}.resid_post"][0]
    return {"islands": patch_pca_figure(patch_pca_rgb(tokens[session.prefix:], session.grid))}


@view("patches.residual", "Patches", has_token_grid)
def residual_view(subject: Subject) -> Figures:
    """Mean norm of the residual stream and of each block's attention and MLP writes, against depth."""
    session = subject.attention()
    return {"residual": residual_figure(residual_norms(session.stream, session.vit.num_layers))}


@view("patches.attention_correlation", "Patches", has_token_grid)
def attention_correlation_view(subject: Subject) -> Figures:
    """Correlation of the head-averaged attention maps between every pair of blocks."""
    session = subject.attention()
    return {"correlation": attention_correlation_figure(
        attention_map_correlation([p[None] for p in session.patterns]))}
