"""Window attention of hierarchical transformers (Swin, MaxViT) and hybrids (MobileCLIP / FastViT attention stages),
stage by stage: where one query cell of a stage's grid looks, inside its own window (shifted windows, MaxViT's
block and grid partitions, or the whole grid for global attention), per head or heads fused.

Pure functions and :class:`StageAttentionSession` return arrays; the figure builders return Plotly figures; the views
at the bottom register themselves in :mod:`viz.views` (tab "Attention") and apply to any model whose image tower
has stage attention (``attention_stages``), whatever its backend.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from viz.attention import FUSIONS, fuse_heads
from viz.attention_figures import head_grid_figure, overlay_figure
from viz.views import Figures, Subject, view


def has_stage_attention(model) -> bool:
    """Does the image tower have attention per stage on a grid per stage (windowed or global)?"""
    tower = model.image_tower
    return callable(getattr(tower, "query_map", None)) and bool(tower.attention_stages)


class StageAttentionSession:
    """One image through a model with stage attention: every stage attention's pattern from one hooked forward."""

    def __init__(self, model, image: Image.Image | torch.Tensor):
        self.model = model
        self.tower = model.image_tower
        self.pixels = image if torch.is_tensor(image) else self.tower.pixels([image])
        self.source_size = None if torch.is_tensor(image) else image.size   # (width, height) before preprocessing
        self.size = tuple(self.pixels.shape[-2:])
        names = [f"{site}.pattern" for site in self.tower.sites if not site.startswith("text.")]
        with self.tower.capture(names) as cache:
            self.tower.forward(self.pixels[:1])
        self.patterns = {name.rsplit(".", 1)[0]: cache[name].detach() for name in names}
        self.image = self.tower.preprocess.unnormalize(self.pixels[0])   # (H, W, 3) uint8: what the model saw

    @property
    def stages(self) -> list[int]:
        return self.tower.attention_stages

    def stage(self, stage: int | None) -> int:
        """``stage`` checked: None is the first attention stage (the finest grid), negative counts from the last."""
        stages = self.stages
        if stage is None:
            return stages[0]
        chosen = stages[int(stage)] if -len(stages) <= int(stage) < 0 else int(stage)
        if chosen not in stages:
            raise ValueError(f"Stage {stage} has no attention: this model has attention in stages {stages}.")
        return chosen

    def site(self, stage: int, block: int) -> str:
        sites = self.tower.stage_sites(self.stage(stage))
        if not 0 <= int(block) < len(sites):
            raise ValueError(f"Stage {stage} has attention blocks 0 to {len(sites) - 1}, not {block}.")
        return sites[int(block)]

    def grid(self, stage: int) -> tuple[int, int]:
        return self.tower.stage_grid(self.stage(stage), self.size)

    def cell(self, stage: int, row: int | None, col: int | None) -> tuple[int, int]:
        """The query cell (default: the grid's centre), checked against the stage grid."""
        height, width = self.grid(stage)
        row = height // 2 if row is None else int(row)
        col = width // 2 if col is None else int(col)
        if not (0 <= row < height and 0 <= col < width):
            raise ValueError(f"Cell ({row}, {col}) is outside stage {stage}'s {height}x{width} grid.")
        return row, col

    def cell_at_pixel(self, stage: int, x: float, y: float) -> tuple[int, int]:
        """The stage-grid cell under input pixel (x, y), e.g. a click on the image the model saw."""
        height, width = self.grid(stage)
        return (min(int(y * height / self.size[0]), height - 1), min(int(x * width / self.size[1]), width - 1))

    def cell_centre(self, stage: int, row: int, col: int) -> tuple[float, float]:
        """Input pixel (x, y) at the centre of cell (row, col) of the stage grid (checked)."""
        height, width = self.grid(stage)
        row, col = self.cell(stage, row, col)
        return (col + 0.5) * self.size[1] / width, (row + 0.5) * self.size[0] / height

    def input_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Where pixel (x, y) of the original image (e.g. a click on the upload) lands in the model's input, through
        resize and centre crop; a point outside the crop is an error."""
        if self.source_size is None:
            raise ValueError("This session was built from a tensor: there is no source image to click on.")
        in_x, in_y = self.tower.preprocess.source_to_input(x, y, *self.source_size)
        if not (0 <= in_x < self.size[1] and 0 <= in_y < self.size[0]):
            raise ValueError("That point is outside the centre crop the model sees; click inside the crop.")
        return float(in_x), float(in_y)

    def cell_at_source_pixel(self, stage: int, x: float, y: float) -> tuple[int, int]:
        """The stage-grid cell under pixel (x, y) of the original image."""
        return self.cell_at_pixel(stage, *self.input_pixel(x, y))

    def query_maps(self, stage: int, block: int, row: int, col: int) -> torch.Tensor:
        """(heads, h, w): each head's attention row of the query cell on the stage grid, zero outside its window."""
        site = self.site(stage, block)
        return self.tower.query_map(self.patterns[site], site, self.grid(stage), row, col)

    def query_map(self, stage: int, block: int, row: int, col: int, head: int | str = "mean") -> torch.Tensor:
        """(h, w): one head's map, or the heads fused ("mean", "max", "min")."""
        maps = self.query_maps(stage, block, row, col)
        if head in FUSIONS:
            return fuse_heads(maps[None], str(head))[0]
        if not 0 <= int(head) < maps.shape[0]:
            raise ValueError(f"Head {head} does not exist: this block has heads 0 to {maps.shape[0] - 1}.")
        return maps[int(head)]

    def window(self, stage: int, block: int, row: int, col: int) -> torch.Tensor:
        """(h, w) boolean: the cells of the window the query attends within."""
        return self.tower.query_window(self.site(stage, block), self.grid(stage), row, col)

    def partition_kind(self, stage: int, block: int) -> str:
        """"window", "shifted window", "grid" or "global", as the block partitions this stage's grid."""
        return self.tower.sites[self.site(stage, block)].describe(self.grid(stage))

    def summary(self) -> list[dict]:
        """One row per attention stage: grid, blocks, heads, window tokens and partition kinds."""
        rows = []
        for stage in self.stages:
            sites = self.tower.stage_sites(stage)
            first = self.patterns[sites[0]]
            kinds = sorted({self.partition_kind(stage, b) for b in range(len(sites))})
            rows.append({"stage": stage, "grid": "x".join(map(str, self.grid(stage))), "blocks": len(sites),
                         "heads": int(first.shape[1]), "window tokens": int(first.shape[-1]),
                         "windows": int(first.shape[0]), "partitions": ", ".join(kinds)})
        return rows


def window_outline(inside: np.ndarray) -> tuple[list, list]:
    """x, y segments (None-separated, in cell units) of the boundary of a boolean (h, w) region: every cell edge
    between a cell inside and one outside (or the map's border). Shifted windows wrap, so regions may be split."""
    inside = np.asarray(inside, dtype=bool)
    padded = np.pad(inside, 1)
    xs: list = []
    ys: list = []
    for r, c in zip(*np.nonzero(inside), strict=True):
        for dr, dc, segment in ((-1, 0, ((c, r), (c + 1, r))), (1, 0, ((c, r + 1), (c + 1, r + 1))),
                                (0, -1, ((c, r), (c, r + 1))), (0, 1, ((c + 1, r), (c + 1, r + 1)))):
            if not padded[r + 1 + dr, c + 1 + dc]:
                xs += [segment[0][0], segment[1][0], None]
                ys += [segment[0][1], segment[1][1], None]
    return xs, ys


def window_attention_figure(image: np.ndarray, heat, inside, query_cell: tuple[int, int], title: str) -> go.Figure:
    """The query's attention at the stage's resolution over the image, its window outlined, the query boxed."""
    fig = overlay_figure(image, heat, title, query_cell=query_cell)
    rows, cols = np.asarray(inside).shape
    height, width = image.shape[:2]
    xs, ys = window_outline(inside)
    fig.add_trace(go.Scatter(x=[None if x is None else x * width / cols for x in xs],
                             y=[None if y is None else y * height / rows for y in ys],
                             mode="lines", line={"color": "white", "width": 2}, name="window", hoverinfo="skip"))
    fig.update_layout(showlegend=False)
    return fig


def stages_table_figure(rows: list[dict]) -> go.Figure:
    """The attention stages as a table: grid, blocks, heads, window tokens, windows and partition kinds."""
    keys = list(rows[0]) if rows else ["stage"]
    fig = go.Figure(go.Table(header={"values": keys}, cells={"values": [[row[k] for row in rows] for k in keys]}))
    fig.update_layout(title="Attention stages", margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=80 + 30 * len(rows))
    return fig


# -- views -------------------------------------------------------------------------------------------------------------
def _session(subject: Subject) -> StageAttentionSession:
    return subject.stage_attention()


def _head(head: int | str) -> int | str:
    """A fusion name, or the head index of ``3`` / ``"3"`` / ``"head 3"``."""
    if head in FUSIONS:
        return str(head)
    text = str(head).strip().removeprefix("head").strip()
    if not text.isdigit():
        raise ValueError(f"Head must be one of {', '.join(FUSIONS)} or 'head N', not {head!r}.")
    return int(text)


@view("hierarchical.window_query", "Attention", has_stage_attention,
      checks=({}, {"block": -1, "row": 0, "col": 0, "head": "head 0"}, {"stage": -1, "head": "max"}))
def window_query_view(subject: Subject, stage: int | None = None, block: int = 0, row: int | None = None,
                      col: int | None = None, head: int | str = "mean",
                      pixel: tuple[float, float] | None = None) -> Figures:
    """Where one cell of a stage's grid looks, inside its window (shift and partition as the block does it);
    default: the centre cell of the first attention stage, heads averaged. ``pixel`` (x, y of the model's input)
    picks the cell under it instead of ``row`` / ``col``; "query" says which cell, grid, blocks and heads it was."""
    session = _session(subject)
    stage = session.stage(stage)
    blocks = len(session.tower.stage_sites(stage))
    block = blocks - 1 if int(block) == -1 else int(block)
    if pixel is not None:
        row, col = session.cell_at_pixel(stage, *pixel)
    row, col = session.cell(stage, row, col)
    chosen = _head(head)
    heat = session.query_map(stage, block, row, col, chosen)
    inside = session.window(stage, block, row, col).numpy()
    height, width = session.grid(stage)
    kind = session.partition_kind(stage, block)
    heads = f"head {chosen}" if isinstance(chosen, int) else f"{chosen} over heads"
    title = f"stage {stage}, block {block} ({kind}), {heads}: where cell ({row}, {col}) looks"
    return {"overlay": window_attention_figure(session.image, heat, inside, (row, col), title),
            "query_info": (f"Stage {stage} grid {height}x{width}; query cell ({row}, {col}); its {kind} holds "
                           f"{int(inside.sum())} cells (outlined). Click the image to pick a cell."),
            "query": {"stage": stage, "block": block, "row": row, "col": col, "grid": (height, width),
                      "blocks": blocks, "heads": int(session.query_maps(stage, block, row, col).shape[0]),
                      "pixel": session.cell_centre(stage, row, col)}}


@view("hierarchical.window_heads", "Attention", has_stage_attention)
def window_heads_view(subject: Subject, stage: int | None = None, block: int = 0, row: int | None = None,
                      col: int | None = None) -> Figures:
    """Every head's attention of one query cell in its window, on the stage grid."""
    session = _session(subject)
    stage = session.stage(stage)
    row, col = session.cell(stage, row, col)
    maps = session.query_maps(stage, int(block), row, col)
    return {"heads": head_grid_figure(maps, f"stage {stage}, block {int(block)}: every head, cell ({row}, {col})")}


@view("hierarchical.stages", "Attention", has_stage_attention)
def stages_view(subject: Subject) -> Figures:
    """The stages with attention (the stage selector's choices): grid, blocks, heads, window size, partitions."""
    session = _session(subject)
    rows = session.summary()
    return {"stages": stages_table_figure(rows), "stage_choices": [row["stage"] for row in rows],
            "stage_blocks": {row["stage"]: row["blocks"] for row in rows},
            "stage_heads": {row["stage"]: row["heads"] for row in rows}}
