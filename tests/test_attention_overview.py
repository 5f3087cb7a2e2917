"""The every-layer x head overview: each tile is that layer's and head's own attention row for the query (scaled to
its maximum, the raw weight in the hover), and a click on a tile names that layer and head."""
from __future__ import annotations

import numpy as np

from models import load_model
from viz.figure_clicks import mosaic_cell
from viz.views import Subject, check_image, run_view


def test_each_tile_is_its_layers_and_heads_row_and_a_click_finds_it():
    subject = Subject(load_model("bundled:mini-clip"), check_image())
    session = subject.attention()
    query = session.prefix + 5
    figure = run_view("attention.overview", subject, query=query)["overview"]
    heat = figure.data[0]
    z, raw = np.asarray(heat.z, dtype=float), np.asarray(heat.customdata, dtype=float)
    layers, heads, (h, w) = session.vit.num_layers, session.vit.num_heads, session.grid
    assert z.shape == (layers * (h + 1) - 1, heads * (w + 1) - 1)
    tiles = []
    for layer in range(layers):
        truth = session.all_heads(layer, query).numpy()
        for head in range(heads):
            top, left = layer * (h + 1), head * (w + 1)
            np.testing.assert_allclose(raw[top:top + h, left:left + w], truth[head], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(z[top:top + h, left:left + w], truth[head] / truth[head].max(), rtol=1e-5)
            # a click at the tile's centre picks this layer and head
            index, _, _ = mosaic_cell(left + (w - 1) / 2, top + (h - 1) / 2, (h, w), layers * heads, heads)
            assert divmod(index, heads) == (layer, head)
            tiles.append(truth[head])
    # not one map repeated: the heads and layers look at different places
    assert np.std(np.stack(tiles), axis=0).max() > 0.05
    assert "patch" in figure.layout.title.text and figure.layout.xaxis.ticktext[1] == "head 1"
