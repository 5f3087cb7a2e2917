"""Attention analysis on captured patterns: head fusion, rollout, gradient-weighted relevancy, mean distance.

All functions take torch tensors as models/ captures them: patterns (batch, heads, tokens, tokens) with the prefix
tokens (CLS, registers, distillation) first, then the patches row by row.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from viz.outputs import output_vector

FUSIONS = ("mean", "max", "min")


def fuse_heads(pattern: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(batch, heads, T, T) -> (batch, T, T) by mean, max or min over heads."""
    if how == "mean":
        return pattern.mean(dim=1)
    if how == "max":
        return pattern.amax(dim=1)
    if how == "min":
        return pattern.amin(dim=1)
    raise ValueError(f"Unknown head fusion {how!r}; use one of {FUSIONS}.")


def _discard_lowest(fused: torch.Tensor, ratio: float, prefix: int) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each sample's entries, never touching rows or columns of prefix tokens."""
    if ratio <= 0:
        return fused
    if not 0 <= ratio < 1:
        raise ValueError("discard_ratio must be in [0, 1).")
    batch, tokens, _ = fused.shape
    protected = torch.zeros(tokens, tokens, dtype=torch.bool, device=fused.device)
    protected[:prefix, :] = True
    protected[:, :prefix] = True
    candidates = fused.masked_fill(protected, float("inf")).reshape(batch, -1)
    count = int(ratio * int((~protected).sum()))
    if count == 0:
        return fused
    lowest = candidates.topk(count, dim=-1, largest=False).indices
    return fused.reshape(batch, -1).scatter(1, lowest, 0.0).reshape(batch, tokens, tokens)


def attention_rollout(patterns: Sequence[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0,
                      prefix_tokens: int = 1) -> torch.Tensor:
    """Abnar & Zuidema's rollout: how much each token's final state draws on each input token.

    Per layer: fuse heads, discard the weakest entries (prefix-token rows and columns are never discarded), add
    the identity for the residual path, renormalise rows; then multiply layer by layer. Returns (batch, T, T);
    row 0 is the CLS token's map over all tokens.
    """
    if not patterns:
        raise ValueError("attention_rollout needs at least one layer's pattern.")
    result = None
    for pattern in patterns:
        fused = _discard_lowest(fuse_heads(pattern.float(), head_fusion), discard_ratio, prefix_tokens)
        eye = torch.eye(fused.shape[-1], device=fused.device)
        layer = fused + eye
        layer = layer / layer.sum(dim=-1, keepdim=True)
        result = layer if result is None else layer @ result
    return result


def gradient_relevancy(patterns: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. (2021) relevancy: R = I; per layer R += mean_heads(clamp(grad * A, min=0)) @ R.

    ``patterns[i]`` and ``grads[i]`` belong to the same layer (forward order). Returns (batch, T, T).
    """
    if len(patterns) != len(grads) or not patterns:
        raise ValueError("gradient_relevancy needs one gradient per pattern, in the same layer order.")
    batch, _, tokens, _ = patterns[0].shape
    relevancy = torch.eye(tokens, device=patterns[0].device).expand(batch, tokens, tokens).clone()
    for pattern, grad in zip(patterns, grads, strict=True):
        weighted = (grad.float() * pattern.float()).clamp(min=0).mean(dim=1)
        relevancy = relevancy + weighted @ relevancy
    return relevancy


READOUTS = ("cls", "mean", "attention_pool")


def pool_rollout_step(pattern: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """An attention pool's (batch, heads, probes, T) pattern as rollout's last step, (batch, T): heads fused, probes
    averaged, renormalised. No identity is added: the pool's output has no residual path from its input tokens."""
    fused = fuse_heads(pattern.float(), head_fusion).mean(dim=1)
    return fused / fused.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def pool_relevancy_step(pattern: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Chefer's rule at an attention pool, (batch, T): mean over heads of clamp(grad * A, min=0), averaged over the
    probes; again no identity (no residual around the pool)."""
    return (grad.float() * pattern.float()).clamp(min=0).mean(dim=1).mean(dim=1)


def readout_weights(joint: torch.Tensor, readout: str = "cls", prefix_tokens: int = 1,
                    pool: torch.Tensor | None = None) -> torch.Tensor:
    """What the model's output reads, over every input token, from a (batch, T, T) rollout or relevancy: (batch, T).

    "cls": the CLS token's row (token 0); "mean": the mean of the patch tokens' rows (prefix tokens excluded);
    "attention_pool": the pool's last step ``pool`` (batch, T) over the last block's tokens, times the joint.
    """
    if readout == "cls":
        if prefix_tokens < 1:
            raise ValueError("A CLS readout needs a prefix token; this model has none.")
        return joint[:, 0]
    if readout == "mean":
        return joint[:, prefix_tokens:].mean(dim=1)
    if readout == "attention_pool":
        if pool is None:
            raise ValueError("An attention-pool readout needs the pool's attention (the site pool.attn).")
        return (pool.float().unsqueeze(1) @ joint.float()).squeeze(1)
    raise ValueError(f"Unknown readout {readout!r}; use one of {READOUTS}.")


def pool_pattern_name(tower) -> str | None:
    """The capture name of the attention pool's pattern, where the model's readout is one."""
    if getattr(tower, "readout", "cls") == "attention_pool" and "pool.attn" in tower.sites:
        return "pool.attn.pattern"
    return None


def read_probes(tower, probes: int) -> list[int]:
    """The attention pool's probes the model's output reads (CoCa: probe 0 of 256), of ``probes`` in all."""
    chosen = getattr(tower, "pool_probes", None)
    return list(range(probes)) if chosen is None else list(chosen)


def patch_distances(grid: tuple[int, int], patch_size: tuple[int, int]) -> torch.Tensor:
    """(P, P) Euclidean distances in input pixels between the centres of the grid's patches (row-major)."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten() * patch_size[0], cols.flatten() * patch_size[1]], dim=-1).float()
    return torch.cdist(centres, centres)


# How mean attention distance treats a patch query's attention to prefix tokens (CLS, registers), and how to say so.
DISTANCE_CONVENTIONS = {
    "distance_zero": "attention to CLS/prefix tokens counts as distance 0 (ViT paper)",
    "renormalise": "attention renormalised over patch keys (CLS/prefix tokens left out)",
}


def mean_attention_distance(pattern: torch.Tensor, grid: tuple[int, int], patch_size: tuple[int, int],
                            prefix_tokens: int = 1, prefix_attention: str = "distance_zero") -> torch.Tensor:
    """Per head: the attention-weighted distance in pixels between a patch query and the patches it attends to,
    averaged over patch queries and the batch (the ViT paper's Figure 7, right). Returns (heads,).

    ``prefix_attention="distance_zero"`` (the paper's convention and that of its common implementations): the
    weights are the pattern's own, so the share a query gives to prefix tokens adds nothing, as if at distance 0.
    ``"renormalise"``: the weights are renormalised over patch keys, so that share is ignored instead; a head whose
    every query gives mass m to the prefix reads 1 / (1 - m) times farther."""
    if prefix_attention not in DISTANCE_CONVENTIONS:
        raise ValueError(f"Unknown prefix_attention {prefix_attention!r}; use one of {tuple(DISTANCE_CONVENTIONS)}.")
    weights = pattern[:, :, prefix_tokens:, prefix_tokens:].float()
    if prefix_attention == "renormalise":
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    distances = patch_distances(grid, patch_size).to(pattern.device)
    return (weights * distances).sum(dim=-1).mean(dim=(0, 2))


def token_map(row: torch.Tensor, grid: tuple[int, int], prefix_tokens: int = 1) -> torch.Tensor:
    """One query's weights over all tokens (T,) -> its patch part as a (rows, cols) map."""
    return row[prefix_tokens:].reshape(grid)


def capture_patterns(model, pixels: torch.Tensor, grad_target=None) -> tuple[list, list]:
    """Every layer's attention pattern of a ViT (or a CLIP's ViT tower) for ``pixels``, in layer order, and with
    ``grad_target`` (model output -> per-image scores) also d(sum of scores)/d(pattern) per layer."""
    vit = model.image_tower
    names = [f"blocks.{i}.attn.pattern" for i in range(vit.num_layers)]
    with model.capture(names, grad=grad_target is not None) as cache:
        output = model.run_image(pixels)
        if grad_target is not None:
            grad_target(output).sum().backward()
    patterns = [cache[name] for name in names]
    grads = [cache.grad(name) for name in names] if grad_target is not None else []
    return patterns, grads


def clip_text_target(model, prompt: str):
    """Per-image cosine similarity to ``prompt``'s text embedding: the score relevancy explains for CLIP."""
    text = torch.nn.functional.normalize(model.encode_text([prompt]).float(), dim=-1)[0]
    return lambda image_features: torch.nn.functional.normalize(image_features.float(), dim=-1) @ text


def class_target(class_index: int, tower=None):
    """A classifier's logit for one class (for a feature extractor, one dimension of its readout vector)."""
    if tower is None:
        return lambda logits: logits[:, class_index]
    return lambda output: output_vector(tower, output)[:, class_index]


def _readout_relevancy(tower, cache, names: list[str]) -> torch.Tensor:
    """The readout's relevancy over every token, (batch, T), from a gradient capture of ``names`` (+ the pool)."""
    relevancy = gradient_relevancy([cache[n] for n in names], [cache.grad(n) for n in names])
    pool_name = pool_pattern_name(tower)
    pool = None
    if pool_name:
        probes = read_probes(tower, cache[pool_name].shape[2])
        pool = pool_relevancy_step(cache[pool_name][:, :, probes], cache.grad(pool_name)[:, :, probes])
    return readout_weights(relevancy, tower.readout, tower.num_prefix_tokens, pool)


def relevancy_maps(model, pixels: torch.Tensor, grad_target) -> torch.Tensor:
    """Chefer relevancy of the model's readout (CLS, mean of the patches, or attention pool) over the patch grid,
    per image: (batch, rows, cols)."""
    vit = model.image_tower
    names = [f"blocks.{i}.attn.pattern" for i in range(vit.num_layers)]
    pool_name = pool_pattern_name(vit)
    with model.capture(names + ([pool_name] if pool_name else []), grad=True) as cache:
        grad_target(model.run_image(pixels)).sum().backward()
    weights = _readout_relevancy(vit, cache, names)
    return weights[:, vit.num_prefix_tokens:].reshape(-1, *vit.grid(pixels))


def clip_caption_targets(model, captions: Sequence[str]):
    """Per-image cosine similarity to that image's own caption (batched relevancy with one prompt per image)."""
    text = torch.nn.functional.normalize(model.encode_text(list(captions)).float(), dim=-1)
    return lambda image_features: (torch.nn.functional.normalize(image_features.float(), dim=-1) * text).sum(-1)


def mean_distance_by_layer(model, pixels: torch.Tensor, prefix_attention: str = "distance_zero") -> torch.Tensor:
    """(layers, heads) mean attention distance in input pixels over a batch of images (ViT paper, Fig. 7 right);
    ``prefix_attention`` as in :func:`mean_attention_distance`."""
    vit = model.image_tower
    patterns, _ = capture_patterns(model, pixels)
    grid = vit.grid(pixels)
    return torch.stack([mean_attention_distance(p, grid, vit.patch_size, vit.num_prefix_tokens, prefix_attention)
                        for p in patterns])


def clip_prompt_relevancy(model, pixels: torch.Tensor, prompt: str) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Chefer relevancy for the image-text similarity with ``prompt``, both towers from one forward and one backward.

    Returns the image maps (batch, rows, cols) of the image readout over the patches, the prompt's tokens, and each
    token's relevance: the pooled (end-of-text) token's row of the text tower's relevancy, or the mean of the tokens'
    rows for mean-pooled text encoders.
    """
    vit = model.image_tower
    tokens = model.tokenize([prompt])
    image_names = [f"blocks.{i}.attn.pattern" for i in range(vit.num_layers)]
    text_names = [f"text.blocks.{i}.attn.pattern" for i in range(len(model.text.blocks))]
    pool_name = pool_pattern_name(vit)
    with model.capture(image_names + text_names + ([pool_name] if pool_name else []), grad=True) as cache:
        image = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
        (image * text).sum().backward()

    def relevancy(names):
        return gradient_relevancy([cache[n] for n in names], [cache.grad(n) for n in names])

    prefix = vit.num_prefix_tokens
    image_maps = _readout_relevancy(vit, cache, image_names)[:, prefix:].reshape(-1, *vit.grid(pixels)).detach().cpu()
    strings = model.token_strings(tokens[0])
    positions, pooled = model.token_positions(tokens[0])
    text = relevancy(text_names)[0]
    # the text embedding reads the pooled token's row, or for mean-pooled encoders the mean of the real tokens' rows
    rows = text[positions].mean(dim=0) if model.text.readout == "mean" else text[pooled]
    return image_maps, strings, rows[positions].detach().cpu()


def text_token_relevance(model, pixels: torch.Tensor, prompt: str) -> tuple[list[str], torch.Tensor]:
    """Relevance of each token of ``prompt`` for its similarity with ``pixels`` (see clip_prompt_relevancy)."""
    _, strings, scores = clip_prompt_relevancy(model, pixels, prompt)
    return strings, scores


def special_token_flags(model, prompt: str) -> list[bool]:
    """For each shown token of ``prompt`` (as :meth:`token_strings` lists them): is it a start, end, padding or
    class token rather than a piece of the text? Read from the tokenizer's special ids (models.tokens)."""
    ids = model.tokenize([prompt])[0].cpu()
    positions, pooled = model.token_positions(ids)
    kind = model.text.token_kind
    flags = [kind(int(ids[p])) == "special" if kind is not None else p in (0, positions[-1])
             for p in positions if p < len(ids)]
    return flags + [True] * (len(positions) - len(flags))  # CoCa's class token appended past the ids
