"""One image through one ViT, captured once: every attention view is then read from the stored tensors.

Switching layer, head, fusion or query never runs the model again; only relevancy (which needs a backward for its
target) and the per-patch zero-shot map (which needs prompts) compute more, and they reuse nothing stale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from viz.attention import (
    attention_rollout,
    class_target,
    clip_prompt_relevancy,
    fuse_heads,
    pool_pattern_name,
    pool_rollout_step,
    read_probes,
    readout_weights,
    relevancy_maps,
)


@dataclass
class AttentionSteps:
    """softmax(q K^T / sqrt(d)) V for one layer, head and query, step by step (all float32, on the CPU)."""

    q: torch.Tensor            # (head_dim,)
    keys: torch.Tensor         # (tokens, head_dim)
    raw_scores: torch.Tensor   # (tokens,) q . k
    scale: float               # 1 / sqrt(d)
    temperature: float
    weights: torch.Tensor      # (tokens,) softmax(raw * scale / temperature)
    values: torch.Tensor       # (tokens, head_dim)
    output: torch.Tensor       # (head_dim,) weights @ values

    @property
    def entropy(self) -> float:
        """Entropy of the weights in nats: 0 for one-hot, log(tokens) for uniform."""
        w = self.weights.clamp_min(1e-12)
        return float(-(w * w.log()).sum())


class AttentionSession:
    """The captured attention of one image: patterns, Q, K, V for every layer."""

    def __init__(self, model, image: Image.Image | torch.Tensor):
        self.model = model
        self.vit = model.image_tower
        self.pixels = image if torch.is_tensor(image) else model.pixels([image])
        self.source_size = None if torch.is_tensor(image) else image.size  # (width, height) before preprocessing
        self.grid = self.vit.grid(self.pixels)
        self.prefix = self.vit.num_prefix_tokens
        layers = range(self.vit.num_layers)
        names = [f"blocks.{i}.attn.{v}" for i in layers for v in ("q", "k", "v", "pattern")]
        stream = [f"blocks.{i}.{q}" for i in layers for q in ("resid_post", "attn_out", "mlp_out")]
        static = ["pos_embed"] if "pos_embed" in self.vit.points else []
        pool = [pool_pattern_name(self.vit)] if pool_pattern_name(self.vit) else []
        with model.capture(names + stream + static + pool) as cache:
            self.output = model.run_image(self.pixels)
        # the attention pool's probes over the last block's tokens (heads, probes, T), where the readout is one
        self.pool_pattern = None
        if pool:  # only the probes the output reads
            self.pool_pattern = cache[pool[0]][0].cpu()[:, read_probes(self.vit, cache[pool[0]].shape[2])]
        self.pos_table = cache["pos_embed"].cpu() if static else None  # as stored, prefix rows first
        self.stream = {name: cache[name][:1].cpu() for name in stream}   # residual stream, for the Patches views
        self.patterns = [cache[f"blocks.{i}.attn.pattern"][0].cpu() for i in layers]   # (heads, T, T)
        self.qkv = [tuple(cache[f"blocks.{i}.attn.{v}"][0].float().cpu() for v in "qkv") for i in layers]
        self.scales = [self.vit.sites[f"blocks.{i}.attn"].scale for i in layers]
        self.last_tokens = cache[f"blocks.{self.vit.num_layers - 1}.resid_post"]
        self._relevancy: dict[str, torch.Tensor] = {}
        self._token_relevance: dict[str, tuple[list[str], torch.Tensor]] = {}

    # -- queries --------------------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.patterns[0].shape[-1]

    def token_of_patch(self, row: int, col: int) -> int:
        """Token index of the patch at (row, col) of the grid."""
        if not (0 <= row < self.grid[0] and 0 <= col < self.grid[1]):
            raise ValueError(f"Patch ({row}, {col}) is outside the {self.grid[0]}x{self.grid[1]} grid.")
        return self.prefix + row * self.grid[1] + col

    def token_at_pixel(self, x: float, y: float, width: int, height: int) -> int:
        """Token of the patch under pixel (x, y) of an image shown at width x height (e.g. a click)."""
        col = min(int(x / width * self.grid[1]), self.grid[1] - 1)
        row = min(int(y / height * self.grid[0]), self.grid[0] - 1)
        return self.token_of_patch(max(row, 0), max(col, 0))

    def token_at_source_pixel(self, x: float, y: float) -> int:
        """Token of the patch under pixel (x, y) of the original image, through resize and centre crop."""
        if self.source_size is None:
            raise ValueError("This session was built from a tensor: there is no source image to click on.")
        in_x, in_y = self.vit.preprocess.source_to_input(x, y, *self.source_size)
        height, width = self.pixels.shape[-2:]
        if not (0 <= in_x < width and 0 <= in_y < height):
            raise ValueError("That point is outside the centre crop the model sees; click inside the crop.")
        return self.token_at_pixel(in_x, in_y, width, height)

    # -- views ----------------------------------------------------------------------------------------------------
    def head_pattern(self, layer: int, head: int | str) -> torch.Tensor:
        """(T, T) pattern of one head, or heads fused by "mean" / "max" / "min"."""
        pattern = self.patterns[layer]
        return pattern[head] if isinstance(head, int) else fuse_heads(pattern[None], head)[0]

    def query_map(self, layer: int, head: int | str, query: int) -> torch.Tensor:
        """Where one query token looks: its attention over the patches as a (rows, cols) map."""
        return self.head_pattern(layer, head)[query, self.prefix:].reshape(self.grid)

    def prefix_attention(self, layer: int, head: int | str, query: int) -> dict[str, float]:
        """The query's attention to each prefix token (CLS, registers, distillation), by name."""
        row = self.head_pattern(layer, head)[query]
        return {name: float(row[i]) for i, name in enumerate(self.vit.prefix_tokens)}

    def all_heads(self, layer: int, query: int) -> torch.Tensor:
        """(heads, rows, cols): every head's map for one query."""
        return self.patterns[layer][:, query, self.prefix:].reshape(-1, *self.grid)

    def rollout_map(self, head_fusion: str = "mean", discard_ratio: float = 0.0,
                    query: int | None = None) -> torch.Tensor:
        """Attention rollout over the patches: of what the model's output reads (its readout: CLS, the mean of the
        patches, or the attention pool as the last step), or of one token ``query``."""
        joint = attention_rollout([p[None] for p in self.patterns], head_fusion, discard_ratio, self.prefix)
        if query is not None:
            return joint[0, query, self.prefix:].reshape(self.grid)
        pool = pool_rollout_step(self.pool_pattern[None], head_fusion) if self.pool_pattern is not None else None
        return readout_weights(joint, self.vit.readout, self.prefix, pool)[0, self.prefix:].reshape(self.grid)

    def steps(self, layer: int, head: int, query: int, temperature: float = 1.0) -> AttentionSteps:
        """The computation of one attention row, from the captured Q, K, V; temperature divides the scores."""
        if temperature <= 0:
            raise ValueError("temperature must be > 0.")
        q, k, v = self.qkv[layer]
        q_row, keys, values = q[head, query], k[head], v[head]
        raw = keys @ q_row
        scale = self.scales[layer]
        weights = (raw * scale / temperature).softmax(dim=-1)
        return AttentionSteps(q_row, keys, raw, scale, temperature, weights, values, weights @ values)

    def relevancy(self, target: str | int) -> torch.Tensor:
        """Chefer relevancy (rows, cols) for a CLIP prompt (str) or a classifier class index (int); cached."""
        key = repr(target)
        if key not in self._relevancy:
            if isinstance(target, str):
                if not self.model.has_text:
                    raise ValueError("A text prompt needs a CLIP model; give a class index for classifiers.")
                maps, tokens, scores = clip_prompt_relevancy(self.model, self.pixels, target)
                self._relevancy[key], self._token_relevance[target] = maps[0], (tokens, scores)
            else:
                maps = relevancy_maps(self.model, self.pixels, class_target(int(target), self.vit))
                self._relevancy[key] = maps[0].detach().cpu()
        return self._relevancy[key]

    def token_relevance(self, prompt: str) -> tuple[list[str], torch.Tensor]:
        """Relevance of each token of a CLIP prompt, from the same backward as :meth:`relevancy` (cached)."""
        if prompt not in self._token_relevance:
            self.relevancy(prompt)
        return self._token_relevance[prompt]

    def patch_zero_shot(self, prompts: list[str]) -> torch.Tensor:
        """(rows, cols, prompts) cosine similarity of each final patch token, projected by the model's own final
        norm and projection, with each prompt's text embedding."""
        if not self.model.has_text:
            raise ValueError("The per-patch zero-shot map needs a CLIP model.")
        if not prompts:
            raise ValueError("Give at least one prompt.")
        patches = self.vit.project_tokens(self.last_tokens[:, self.prefix:])[0].float()
        text = self.model.encode_text(prompts).float()
        sims = torch.nn.functional.normalize(patches, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
        return sims.reshape(*self.grid, len(prompts)).cpu()

