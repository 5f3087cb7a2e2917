"""Hierarchical transformers (Swin, MaxViT, FastViT / MobileCLIP hybrids): window attention kinds against each
module's own eager computation and a brute-force window attention, window-to-grid placement against a brute-force
reference, channels-first stages against the native intermediates, and outputs unchanged by capture."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.adapters.hierarchical import HierarchicalAdapter, place_query_row
from models.preprocess import Preprocess

SIZE = 64


def _wrap(layout, model, forward=None) -> HierarchicalAdapter:
    preprocess = Preprocess(size=(SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_to=None)
    return HierarchicalAdapter(layout, forward=forward or model, module=model, preprocess=preprocess, model_id="tiny",
                               backend="test", device=torch.device("cpu"), dtype=torch.float32)


def _pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def timm_swin():
    import timm

    from models.backends.timm import swin_layout
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=SIZE, embed_dim=24,
                              depths=(2, 2, 2, 2), num_heads=(2, 2, 2, 2), window_size=4, num_classes=5).eval()
    return _wrap(swin_layout(model, list("abcde")), model)


@pytest.fixture(scope="module")
def hf_swin():
    import transformers

    from models.backends.hf import swin_layout
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=SIZE, patch_size=4, embed_dim=16, depths=[2, 2, 2],
                                     num_heads=[2, 2, 2], window_size=4, num_labels=3)
    model = transformers.SwinForImageClassification(config).eval()
    return _wrap(swin_layout(model), model, forward=lambda px: model(pixel_values=px).logits)


@pytest.fixture(scope="module")
def torchvision_swin():
    from torchvision.models import SwinTransformer

    from models.backends.torchvision import swin_layout
    torch.manual_seed(0)
    # 64 px: grids 16, 8, 4, 2 with 4x4 windows: shifted; shifted; shift dropped (window covers the grid); padded
    model = SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2, 2, 2], num_heads=[2, 2, 2, 2],
                            window_size=[4, 4], num_classes=5).eval()
    return _wrap(swin_layout(model, []), model)


@pytest.fixture(scope="module")
def maxvit():
    from torchvision.models import MaxVit

    from models.backends.torchvision import maxvit_layout
    torch.manual_seed(0)
    model = MaxVit((SIZE, SIZE), stem_channels=8, partition_size=2, block_channels=[16, 16, 32, 32],
                   block_layers=[1, 1, 1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=5).eval()
    return _wrap(maxvit_layout(model, []), model)


@pytest.fixture(scope="module")
def fastvit():
    import timm

    from models.backends.timm import fastvit_layout
    torch.manual_seed(0)
    model = timm.create_model("fastvit_mci1", pretrained=False, layers=(1, 1, 1, 2), embed_dims=(16, 32, 64, 64),
                              num_classes=5).eval()
    return _wrap(fastvit_layout(model, list("abcde")), model)


ALL = ["timm_swin", "hf_swin", "torchvision_swin", "maxvit", "fastvit"]


# -- attention parity against each module's own eager code ------------------------------------------------------------
def _eager(name: str, adapter, pixels) -> dict[str, torch.Tensor]:
    from models.coverage import record_site_calls

    if name == "hf_swin":   # transformers' own eager attention returns its weights
        calls = record_site_calls(adapter, pixels, None)
        config = adapter.module.config
        before, config._attn_implementation = config._attn_implementation, "eager"
        try:
            with torch.no_grad():
                return {site: adapter.sites[site].module(*args, **kwargs)[1] for site, (args, kwargs) in calls.items()}
        finally:
            config._attn_implementation = before
    if name in ("torchvision_swin", "maxvit"):   # torchvision returns none: the softmax inside its own forward
        from models.backends.torchvision import eager_patterns
        return eager_patterns(adapter, pixels, None)
    from models.backends.timm import eager_patterns  # fused_attn=False, the softmax it computes
    return eager_patterns(adapter, pixels, None)


@pytest.mark.parametrize("name", ALL)
def test_window_attention_equals_module_eager(name, request):
    adapter = request.getfixturevalue(name)
    pixels = _pixels()
    eager = _eager(name, adapter, pixels)
    assert set(eager) == set(adapter.sites) and eager
    with adapter.capture("stages.*.blocks.*.attn.pattern") as cache:
        adapter.forward(pixels)
    for site, reference in eager.items():
        ours = cache[f"{site}.pattern"]
        assert ours.shape == reference.shape, site
        torch.testing.assert_close(ours, reference.float(), atol=1e-5, rtol=0, msg=site)
        torch.testing.assert_close(ours.sum(-1), torch.ones_like(ours.sum(-1)), atol=1e-5, rtol=0)


def test_kinds_are_detected(timm_swin, hf_swin, torchvision_swin, maxvit, fastvit):
    kinds = {name: {site.kind for site in adapter.sites.values()} for name, adapter in
             [("timm", timm_swin), ("hf", hf_swin), ("tv", torchvision_swin), ("maxvit", maxvit), ("fast", fastvit)]}
    assert kinds == {"timm": {"TimmWindowAttentionSite"}, "hf": {"HFSwinAttentionSite"},
                     "tv": {"TorchvisionWindowAttentionSite"}, "maxvit": {"MaxVitAttentionSite"},
                     "fast": {"FastVitAttentionSite"}}


def _regions(size: int, window: int, shift: int) -> np.ndarray:
    """Swin's shift regions along one axis: [0, size - window), [size - window, size - shift), [size - shift, size)."""
    index = np.arange(size)
    return (index >= size - window).astype(int) + (index >= size - shift).astype(int)


def test_timm_shifted_window_equals_brute_force(timm_swin):
    """A hand-written shifted-window attention (roll, windows, relative position bias, -100 between shift regions)
    on the block's recorded input equals the site's pattern."""
    model = timm_swin.module
    block = model.layers[0].blocks[1]
    assert block.shift_size == (2, 2)
    pixels = _pixels(1)
    seen = {}
    handle = block.norm1.register_forward_hook(lambda m, a, out: seen.setdefault("x", out))
    with timm_swin.capture("stages.0.blocks.1.attn.pattern") as cache:
        timm_swin.forward(pixels)
    handle.remove()
    x = seen["x"][0].detach()                                  # (H, W, C) what the attention reads
    height, width, channels = x.shape
    window, shift, heads = 4, 2, block.attn.num_heads
    head_dim = channels // heads
    attn = block.attn
    region = _regions(height, window, shift)[:, None] * 3 + _regions(width, window, shift)[None, :]
    table = attn.relative_position_bias_table.detach()
    expected = torch.zeros(height // window * (width // window), heads, window * window, window * window)
    for wr in range(height // window):
        for wc in range(width // window):
            cells = [(wr * window + i, wc * window + j) for i in range(window) for j in range(window)]
            source = [((r + shift) % height, (c + shift) % width) for r, c in cells]   # roll by -shift
            tokens = torch.stack([x[r, c] for r, c in source])
            q, k, _ = (tokens @ attn.qkv.weight.detach().T + attn.qkv.bias.detach()).chunk(3, dim=-1)
            for h in range(heads):
                qh, kh = q[:, h * head_dim:(h + 1) * head_dim], k[:, h * head_dim:(h + 1) * head_dim]
                logits = (qh @ kh.T) * head_dim ** -0.5
                for a, (ra, ca) in enumerate(cells):
                    for b, (rb, cb) in enumerate(cells):
                        dr, dc = (ra - rb) + window - 1, (ca - cb) + window - 1
                        logits[a, b] += table[dr * (2 * window - 1) + dc, h]
                        if region[ra, ca] != region[rb, cb]:
                            logits[a, b] -= 100.0
                expected[wr * (width // window) + wc, h] = logits.softmax(-1)
    torch.testing.assert_close(cache["stages.0.blocks.1.attn.pattern"], expected, atol=1e-5, rtol=0)


# -- the query's window on the stage grid ------------------------------------------------------------------------------
def test_place_query_row_against_brute_force():
    """Each window token's row lands on the cells of its own window's tokens, batch-major windows."""
    generator = torch.Generator().manual_seed(0)
    grid, windows, tokens, heads, batch = (3, 4), 3, 4, 2, 2
    positions = torch.randperm(12, generator=generator).reshape(windows, tokens)
    pattern = torch.rand(batch * windows, heads, tokens, tokens, generator=generator)
    for b in range(batch):
        for cell in range(12):
            placed = place_query_row(pattern, positions, grid, *divmod(cell, 4), batch=b)
            expected = torch.zeros(heads, 12)
            w, t = [(w, t) for w in range(windows) for t in range(tokens) if positions[w, t] == cell][0]
            for j in range(tokens):
                expected[:, positions[w, j]] = pattern[b * windows + w, :, t, j]
            torch.testing.assert_close(placed, expected.reshape(heads, *grid))


def _brute_force_window(kind: str, grid, window: int, shift: int, row: int, col: int) -> np.ndarray:
    """The cells sharing the query's window: Swin (map rolled by -shift, then cut), MaxViT window / grid."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    if kind == "swin":
        key = lambda r, c: (((r - shift) % grid[0]) // window, ((c - shift) % grid[1]) // window)  # noqa: E731
    elif kind == "window":
        key = lambda r, c: (r // window, c // window)  # noqa: E731
    else:  # grid: a dilated grid, one cell of every (grid / window)-sized block
        key = lambda r, c: (r % (grid[0] // window), c % (grid[1] // window))  # noqa: E731
    return (key(rows, cols)[0] == key(row, col)[0]) & (key(rows, cols)[1] == key(row, col)[1])


@pytest.mark.parametrize("name", ["timm_swin", "hf_swin", "torchvision_swin"])
def test_swin_windows_follow_the_shift(name, request):
    adapter = request.getfixturevalue(name)
    grid = adapter.stage_grid(0)
    assert grid == (16, 16)
    for block, shift in ((0, 0), (1, 2)):
        site = f"stages.0.blocks.{block}.attn"
        for row, col in ((0, 0), (5, 9), (15, 3), (13, 14)):
            window = adapter.query_window(site, grid, row, col).numpy()
            np.testing.assert_array_equal(window, _brute_force_window("swin", grid, 4, shift, row, col))


@pytest.mark.parametrize("name", ["timm_swin", "hf_swin", "torchvision_swin"])
def test_swin_query_map_is_its_own_row(name, request):
    """The placed map holds the query's row of its own window, each value at its key's cell, zero elsewhere."""
    adapter = request.getfixturevalue(name)
    with adapter.capture("stages.0.blocks.1.attn.pattern") as cache:
        adapter.forward(_pixels())
    pattern = cache["stages.0.blocks.1.attn.pattern"]
    grid, window, shift = (16, 16), 4, 2
    for row, col in ((0, 0), (7, 14)):
        placed = adapter.query_map(pattern, "stages.0.blocks.1.attn", grid, row, col, batch=1)
        rolled = lambda r, c: ((r - shift) % 16, (c - shift) % 16)  # noqa: E731
        qr, qc = rolled(row, col)
        index = 16 + (qr // window) * 4 + qc // window        # batch 1 of 16 windows per image
        expected = torch.zeros(2, 16, 16)
        for r in range(16):
            for c in range(16):
                kr, kc = rolled(r, c)
                if (kr // window, kc // window) == (qr // window, qc // window):
                    expected[:, r, c] = pattern[index, :, (qr % window) * window + qc % window,
                                                (kr % window) * window + kc % window]
        torch.testing.assert_close(placed, expected)
        torch.testing.assert_close(placed.sum((1, 2)), torch.ones(2), atol=1e-5, rtol=0)


def test_padded_windows_drop_padding_cells(torchvision_swin):
    """Stage 3's 2x2 grid is padded to one 4x4 window: the map covers the 4 real cells and sums to < 1 there."""
    grid = torchvision_swin.stage_grid(3)
    assert grid == (2, 2)
    positions = torchvision_swin.window_positions("stages.3.blocks.0.attn", grid)
    assert positions.shape == (1, 16) and (positions >= 0).sum() == 4
    with torchvision_swin.capture("stages.3.blocks.0.attn.pattern") as cache:
        torchvision_swin.forward(_pixels())
    placed = torchvision_swin.query_map(cache["stages.3.blocks.0.attn.pattern"], "stages.3.blocks.0.attn", grid, 1, 0)
    assert placed.shape == (2, 2, 2) and bool((placed.sum((1, 2)) < 1).all())


def test_maxvit_block_and_grid_partitions(maxvit):
    grid = maxvit.stage_grid(0)
    assert grid == (16, 16)
    kinds = [maxvit.sites[s].partition_kind for s in maxvit.stage_sites(0)]
    assert kinds == ["window", "grid"]
    for row, col in ((0, 0), (5, 11)):
        for block, kind in ((0, "window"), (1, "grid")):
            window = maxvit.query_window(f"stages.0.blocks.{block}.attn", grid, row, col).numpy()
            np.testing.assert_array_equal(window, _brute_force_window(kind, grid, 2, 0, row, col))


def test_hybrid_attention_is_global(fastvit):
    assert fastvit.attention_stages == [3]
    grid = fastvit.stage_grid(3)
    assert fastvit.query_window("stages.3.blocks.0.attn", grid, 0, 1).all()


# -- stages channels-first, outputs unchanged -------------------------------------------------------------------------
def _native_outputs(modules: list, run) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, a, out, i=i: seen.setdefault(i, out)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return [seen[i] for i in range(len(modules))]


@pytest.mark.parametrize("name", ["timm_swin", "torchvision_swin"])
def test_channels_last_stages_become_channels_first(name, request):
    adapter = request.getfixturevalue(name)
    pixels = _pixels()
    native = _native_outputs(adapter.layout.stages, lambda: adapter.module(pixels))
    names = [f"stages.{i}" for i in range(adapter.num_stages)]
    with adapter.capture(names) as cache:
        adapter.forward(pixels)
    for i, tensor in enumerate(native):   # native (B, H, W, C)
        torch.testing.assert_close(cache[names[i]], tensor.permute(0, 3, 1, 2))
    assert native[0].shape[1:] == (16, 16, 24)
    assert cache["stages.0"].shape[1:] == (24, 16, 16)   # 24 channels of 16x16, not 16 channels of 16x24
    assert cache["stages.1"].shape[1:] == (48, 8, 8)
    assert adapter.stage_shapes()["stem"] == (24, 16, 16)


def test_hf_stages_match_its_reshaped_hidden_states(hf_swin):
    pixels = _pixels()
    with torch.no_grad():
        reference = hf_swin.module(pixel_values=pixels, output_hidden_states=True).reshaped_hidden_states
    with hf_swin.capture(["stem", "stages.*"]) as cache:
        hf_swin.forward(pixels)
    torch.testing.assert_close(cache["stem"], reference[0])
    # the last stage (no patch merging) is read after the final norm, the tensor the classifier reads
    normed = hf_swin.module.swin.layernorm(reference[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(cache["stages.2"], normed)
    blocks = [stage.blocks[-1] for stage in hf_swin.module.swin.encoder.layers[:2]]   # before patch merging
    for i, (tokens, _) in enumerate(_native_outputs(blocks, lambda: hf_swin.module(pixel_values=pixels))):
        side = 16 // 2 ** i
        torch.testing.assert_close(cache[f"stages.{i}"], tokens.reshape(2, side, side, -1).permute(0, 3, 1, 2))
    assert [tuple(cache[f"stages.{i}"].shape[1:]) for i in range(3)] == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]


@pytest.mark.parametrize("name", ALL)
def test_outputs_unchanged_by_capture(name, request):
    adapter = request.getfixturevalue(name)
    pixels = _pixels()
    plain = adapter.forward(pixels)
    with adapter.capture(["stem", "stages.*", "stages.*.blocks.*.attn.pattern", adapter.layout.head_name]) as cache:
        hooked = adapter.forward(pixels)
    assert torch.equal(plain, hooked)
    assert torch.equal(adapter.forward(pixels), plain)
    assert cache[adapter.layout.head_name].shape == plain.shape


def test_pattern_gradient_matches_autograd(torchvision_swin):
    """dL/dA from the module's output gradient (windows partitioned like its input) equals autograd through an
    explicit recomputation on the recorded windows."""
    site_name = "stages.0.blocks.1.attn"
    site = torchvision_swin.sites[site_name]
    with torchvision_swin.capture([f"{site_name}.pattern"], grad=True) as cache:
        torchvision_swin.forward(_pixels(1)).sum().backward()
    ours = cache.grad(f"{site_name}.pattern")
    x = cache.attention_inputs[site_name].detach()
    with torch.no_grad():
        q, k, v = site.qkv(x, context=cache.attention_contexts[site_name])
        pattern = site.pattern(q, k, cache.attention_contexts[site_name])
    pattern.requires_grad_(True)
    out = (pattern @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    grad_out = site.grad_output_batch_first(cache.attention_output_grads[site_name])
    (site.module.proj(out) * grad_out).sum().backward()
    torch.testing.assert_close(ours, pattern.grad, atol=1e-6, rtol=1e-4)


# -- views -----------------------------------------------------------------------------------------------------------
def test_window_outline_against_brute_force():
    from viz.hierarchical import window_outline
    inside = np.zeros((4, 5), dtype=bool)
    inside[0:2, 0:2] = True
    inside[3, 4] = True
    xs, ys = window_outline(inside)
    segments = {tuple(sorted([(xs[i], ys[i]), (xs[i + 1], ys[i + 1])])) for i in range(0, len(xs), 3)}
    assert len(segments) == 8 + 4   # a 2x2 block has 8 unit edges on its border, a single cell 4
    assert ((0, 0), (1, 0)) in segments and ((4, 3), (5, 3)) in segments and ((1, 1), (1, 2)) not in segments


def test_views_draw_windows(torchvision_swin):
    from PIL import Image

    from viz.views import Subject, run_view, views_for
    names = [v.name for v in views_for(torchvision_swin)]
    assert {"hierarchical.window_query", "hierarchical.window_heads", "hierarchical.stages"} <= set(names)
    assert not any(n.startswith("attention.") and n != "attention.query" and "blocks.0.attn" in n for n in names)
    subject = Subject(torchvision_swin, Image.new("RGB", (SIZE, SIZE), (200, 40, 40)))
    figures = run_view("hierarchical.window_query", subject, block=1, row=0, col=0)
    overlay = figures["overlay"]
    assert [type(t).__name__ for t in overlay.data] == ["Image", "Heatmap", "Scatter"]
    heat = np.asarray(overlay.data[1].z)
    assert heat.shape == (16, 16) and abs(heat.sum() - 1) < 1e-5
    window = _brute_force_window("swin", (16, 16), 4, 2, 0, 0)
    assert heat[~window].max() == 0 and "16 cells" in figures["query_info"]
    heads = run_view("hierarchical.window_heads", subject, row=3, col=3)["heads"]
    assert len(heads.layout.annotations) == 2
    table = run_view("hierarchical.stages", subject)
    assert table["stage_choices"] == [0, 1, 2, 3]


def _swin_spans(stages: int, blocks: int, window: int, patch: int) -> list[tuple[int, int, int]]:
    """(lo, hi, jump) of each Swin stage's field by hand: the patch conv, then per block a (2w - 1)-cell window
    around each cell, and a 2x2 merge before every stage but the first."""
    lo, hi, jump, spans = 0, patch - 1, patch, []
    for stage in range(stages):
        if stage:
            hi, jump = hi + jump, jump * 2
        for _ in range(blocks):
            lo, hi = lo - (window - 1) * jump, hi + (window - 1) * jump
        spans.append((lo, hi, jump))
    return spans


@pytest.mark.parametrize("name", ["timm_swin", "hf_swin", "torchvision_swin"])
def test_stage_receptive_fields_through_windows(name, request):
    """The traced field of each stage, through window attention (bounded by 2w - 1 cells) and patch merging, is the
    hand-computed one, for all three Swin implementations alike."""
    from models.receptive_field import trace_receptive_fields
    from viz.cnn import module_path
    adapter = request.getfixturevalue(name)
    stages = [f"stages.{i}" for i in range(adapter.num_stages)][:3]
    paths = [module_path(adapter, s) for s in stages]
    with torch.no_grad():
        fields = trace_receptive_fields(adapter.module, (SIZE, SIZE), paths, forward=adapter.forward,
                                        mixers=adapter.token_mixers())
    for path, (lo, hi, jump), grid in zip(paths, _swin_spans(3, 2, 4, 4), (16, 8, 4), strict=True):
        field = fields[path]
        assert field.map_size == (grid, grid)
        assert (field.rows.lo, field.rows.hi, field.rows.jump) == (lo, hi, jump)
        assert (field.cols.lo, field.cols.hi, field.cols.jump) == (lo, hi, jump)


def test_global_attention_sees_the_whole_image(fastvit, maxvit):
    from models.receptive_field import trace_receptive_fields
    from viz.cnn import module_path
    for adapter, stage in ((fastvit, "stages.3"), (maxvit, "stages.0")):   # FastViT attention, MaxViT grid
        path = module_path(adapter, stage)
        with torch.no_grad():
            field = trace_receptive_fields(adapter.module, (SIZE, SIZE), [path], forward=adapter.forward,
                                           mixers=adapter.token_mixers())[path]
        assert field.is_global


@pytest.mark.parametrize("name", ["timm_swin", "hf_swin", "torchvision_swin"])
def test_partition_names_follow_the_grid(name, request):
    """Odd blocks shift their windows, except where the window covers the whole grid (stage 2: 4x4 grid) and the
    block drops the shift."""
    adapter = request.getfixturevalue(name)
    describe = [[adapter.sites[s].describe(adapter.stage_grid(stage)) for s in adapter.stage_sites(stage)]
                for stage in (0, 1, 2)]
    assert describe == [["window", "shifted window"], ["window", "shifted window"], ["window", "window"]]
    assert "0: shifted window, window" in adapter.facts()["attention stages"]
