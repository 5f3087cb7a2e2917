"""Hierarchical-transformer adapter (Swin, MaxViT, FastViT / MobileCLIP hybrids): a grid per stage.

It is a CNN adapter in what it shows of the stages (so every CNN view works on it unchanged), plus attention per
stage. Canonical names:

  stem                       the patch embedding / conv stem, (batch, C, h, w) channels-first whatever the backend
  stages.S                   stage S's output at that stage's grid, (batch, C, h, w) channels-first
  stages.S.blocks.B.attn.*   attention B of stage S (q, k, v, scores, pattern), in the module's own window layout:
                             (batch * windows, heads, window_tokens, window_tokens), batch-major
  logits | image_embed       the classifier's logits, or a CLIP tower's image embedding

:meth:`HierarchicalAdapter.query_map` puts one query's attention row back on its stage grid: the query's window is
found with the block's own padding, shift (the map is rolled by -shift before partitioning) and partition, and the
row lands on the grid cells of its window's tokens (zero elsewhere).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from models.adapters.attention import AttentionSite
from models.adapters.attention_window import Partition, WindowAttentionSite
from models.adapters.capture import HookPoint
from models.adapters.cnn import CNNAdapter, CNNLayout
from models.receptive_field import Mixer

SITE_NAME = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.attn")


def channels_last_to_first(x: torch.Tensor) -> torch.Tensor:
    """(batch, h, w, C) -> (batch, C, h, w), the layout CNN views read (timm and torchvision Swin are channels-last)."""
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x


@dataclass
class StageAttention:
    """One attention module of a stage, and how its block cuts the stage grid into windows."""

    stage: int
    block: int
    module: nn.Module
    partition: Partition | None = None   # None: the kind knows its own (torchvision Swin, global attention)
    partition_kind: str | None = None    # "window", "shifted window", "grid", "global"; None: the kind's default


@dataclass
class HierarchicalLayout(CNNLayout):
    """A CNN layout (stem, stages, head) plus the attention modules of each stage."""

    attention: list[StageAttention] = field(default_factory=list)
    channels_last: bool = False          # are the native stem and stage outputs (batch, h, w, C)?
    points: dict[str, HookPoint] = field(default_factory=dict)   # backend-made points that replace the defaults
    # modules that move grid cells in ways a receptive-field trace cannot follow op by op (window attention blocks,
    # patch merging): module -> the sliding window bounding what each output cell reads (see models.receptive_field)
    mixers: dict[nn.Module, Mixer] = field(default_factory=dict)


def window_reach(window: int | tuple[int, int]) -> Mixer:
    """What a cell reads through window attention of ``window`` cells: at most the (2w - 1) cells around it."""
    size = max(window) if isinstance(window, (tuple, list)) else int(window)
    return (2 * size - 1, 1, size - 1)


PATCH_MERGE: Mixer = (2, 2, 0)   # Swin patch merging: each output cell is a 2x2 block of input cells
GLOBAL: Mixer = None             # global or dilated-grid attention: every cell reads the whole grid


@dataclass
class TokenGridPoint(HookPoint):
    """A module whose output is flat tokens (batch, h*w, C) on a grid its call or output names (HF Swin); the tokens
    become (batch, C, h, w). ``grid_of(args, output)`` reads the grid at each call; a module whose call does not
    name it has a fixed ``grid`` (checked against the token count), which also lets code that hooks the module
    itself (the CAM library) reshape with :attr:`transform`."""

    grid_of: Callable[[tuple, object], tuple[int, int]] | None = None
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        self.transform = self._to_grid
        self._seen: tuple[int, int] | None = None

    def pick(self, args, kwargs, output=None):
        if self.grid_of is not None:
            self._seen = tuple(int(v) for v in self.grid_of(args, output))
        return super().pick(args, kwargs, output)

    def _to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        if isinstance(tokens, (tuple, list)):
            tokens = tokens[0]
        height, width = self.grid if self.grid is not None else self._seen
        if tokens.shape[1] != height * width:
            raise ValueError(f"{tokens.shape[1]} tokens do not fill the {height}x{width} grid of this stage.")
        return tokens.reshape(tokens.shape[0], height, width, tokens.shape[-1]).permute(0, 3, 1, 2)


def place_query_row(pattern: torch.Tensor, positions: torch.Tensor, grid: tuple[int, int], row: int, col: int,
                    batch: int = 0) -> torch.Tensor:
    """(heads, h, w): the attention row of query cell (row, col) on the stage grid, zero outside its window.

    ``pattern`` is (batch * windows, heads, tokens, tokens); ``positions`` (windows, tokens) holds each window token's
    flat grid index (-1 for padding), as :meth:`WindowAttentionSite.positions` gives it.
    """
    height, width = grid
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"Cell ({row}, {col}) is outside the {height}x{width} stage grid.")
    windows = positions.shape[0]
    if pattern.shape[0] % windows:
        raise ValueError(f"Pattern of {pattern.shape[0]} windows does not fit {windows} windows per image.")
    window, token = (positions == row * width + col).nonzero()[0].tolist()
    attention_row = pattern[batch * windows + window, :, token, :].float()   # (heads, tokens)
    cells = positions[window].to(pattern.device)
    valid = cells >= 0
    placed = attention_row.new_zeros(attention_row.shape[0], height * width)
    placed[:, cells[valid]] = attention_row[:, valid]
    return placed.reshape(-1, height, width)


class HierarchicalAdapter(CNNAdapter):
    """Swin / MaxViT classifiers, and hybrid image towers (MobileCLIP): CNN-style stages plus per-stage attention."""

    family = "hierarchical"

    def __init__(self, layout: HierarchicalLayout, forward: Callable[[torch.Tensor], torch.Tensor], **kwargs):
        super().__init__(layout, forward, **kwargs)
        if layout.channels_last:
            for name, point in self.points.items():
                if name == "stem" or name.startswith("stages."):
                    point.transform = channels_last_to_first
        self.points.update(layout.points)
        for entry in layout.attention:
            site = AttentionSite.detect(entry.module)
            if entry.partition is not None:
                site.partition = entry.partition
            if entry.partition_kind is not None:
                site.partition_kind = entry.partition_kind
            self.sites[f"stages.{entry.stage}.blocks.{entry.block}.attn"] = site
        self._grids: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}

    # -- structure --------------------------------------------------------------------------------------------------
    @property
    def attention_stages(self) -> list[int]:
        """Indices of the stages that have attention (all of them for Swin / MaxViT, the last ones for hybrids)."""
        return sorted({self.stage_of(name) for name in self.sites})

    def stage_sites(self, stage: int) -> list[str]:
        """The attention sites of one stage, in forward order."""
        return [name for name in self.sites if self.stage_of(name) == stage]

    @staticmethod
    def stage_of(site_name: str) -> int:
        match = SITE_NAME.fullmatch(site_name)
        if match is None:
            raise ValueError(f"{site_name!r} is not a stage attention site (stages.S.blocks.B.attn).")
        return int(match.group(1))

    def stage_grid(self, stage: int, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of stage ``stage`` for one input of ``size`` (the grid its attention windows cut)."""
        size = tuple(size or self.preprocess.size)
        if size not in self._grids:
            self._grids[size] = self.stage_shapes(size)
        return tuple(self._grids[size][f"stages.{stage}"][1:])

    def token_mixers(self) -> dict[nn.Module, Mixer]:
        """Modules that mix grid cells (window attention, patch merging) and how far, for receptive-field traces."""
        return dict(self.layout.mixers)

    # -- placing attention on the stage grid ---------------------------------------------------------------------------
    def window_positions(self, site_name: str, grid: tuple[int, int]) -> torch.Tensor:
        """(windows, tokens) flat grid index of each window token of ``site_name`` on ``grid`` (-1: padding)."""
        site = self.sites[site_name]
        if not isinstance(site, WindowAttentionSite):
            raise ValueError(f"{site_name} ({site.kind}) has no window partition.")
        return site.positions(grid)

    def query_window(self, site_name: str, grid: tuple[int, int], row: int, col: int) -> torch.Tensor:
        """(h, w) boolean map of the cells in the window that query (row, col) attends within."""
        positions = self.window_positions(site_name, grid)
        window = (positions == row * grid[1] + col).nonzero()[0, 0]
        cells = positions[window]
        inside = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
        inside[cells[cells >= 0]] = True
        return inside.reshape(grid)

    def query_map(self, pattern: torch.Tensor, site_name: str, grid: tuple[int, int], row: int, col: int,
                  batch: int = 0) -> torch.Tensor:
        """(heads, h, w): query (row, col)'s attention row on the stage grid, zero outside its window."""
        return place_query_row(pattern, self.window_positions(site_name, grid), grid, row, col, batch)

    def facts(self) -> dict:
        facts = super().facts()
        facts["attention stages"] = "; ".join(
            f"{s}: " + ", ".join(sorted({self.sites[n].describe(self.stage_grid(s)) for n in self.stage_sites(s)}))
            for s in self.attention_stages) or "none"
        return facts
