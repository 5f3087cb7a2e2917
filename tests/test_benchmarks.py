"""The benchmarks: the quick run as a CI smoke test (numbers present and sane, no timing thresholds), and the
helpers with arithmetic in them against plain references."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from benchmarks.app_latency import summarise
from benchmarks.app_server import cpu_seconds
from benchmarks.gpu import count_flops, measure_model, mfu, peak_tflops
from benchmarks.payload import entry, value_bytes
from benchmarks.projection import rows as projection_rows
from benchmarks.report import table, verdict

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["capture_overhead", "view_latency", "embedding_throughput", "embed_engines", "projection", "map_scale",
            "payload", "app_latency", "gpu", "head_sweep"]


def _numbers(node, key: str = ""):
    """Every (key, number) in a JSON tree (booleans are not numbers)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v, key)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield key, node


@pytest.mark.slow
def test_quick_run_writes_every_section_with_sane_numbers(tmp_path):
    out = tmp_path / "bench"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=480,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "results.json").read_text())
    text = (out / "results.md").read_text()
    assert report["options"]["quick"] is True
    assert {"cpu", "cores", "torch_threads", "torch", "date", "load_average"} <= set(report["machine"])
    sections = report["sections"]
    assert list(sections) == SECTIONS
    for name, section in sections.items():
        assert "error" not in section, f"{name}: {section.get('error')}"
        assert section["title"] in text and section["command"] in text
    for key, value in _numbers(sections):
        assert math.isfinite(value), key
        if key.endswith(("median_s", "_per_s", "bytes", "p50_s", "p95_s")) or key.startswith(("ratio", "first")):
            assert value > 0, key

    capture = sections["capture_overhead"]["reports"]
    assert {r["model"] for r in capture} == {"bundled:mini-clip", "bundled:mini-vit"}
    for report_ in capture:
        for variants in report_["results"].values():
            assert variants["bare"]["ratio_to_bare"] == 1.0
            assert variants["resid_post (all blocks)"]["verdict"] in ("pass", "miss")
    views = sections["view_latency"]["attention"][0]["views"]
    assert len(views) >= 5 and all(v["ratio_to_first"] > 0 for v in views)
    throughput = sections["embedding_throughput"]["reports"][0]["rows"]
    engines = {r["engine"]: r for r in sections["embed_engines"]["rows"]}
    assert set(engines) == {"single process", "ray"} and engines["single process"]["ratio_end_to_end"] == 1.0
    assert engines["ray"]["verdict"] in ("pass", "miss", "n/a")
    assert [r["throughput_ratio_to_bare"] for r in throughput][0] == 1.0
    projection = sections["projection"]["rows"]
    assert {(r["method"], r["state"]) for r in projection} == {("UMAP", "cold"), ("UMAP", "warm"), ("PCA", "cold"),
                                                               ("PCA", "warm")}
    payloads = {r["view"] for r in sections["payload"]["responses"]}
    assert {"attention_analyse", "patches_analyse", "cnn_feature_maps", "similarity_matrix",
            "embedding_view"} <= payloads
    sweeps = sections["head_sweep"]["reports"]
    assert sweeps[0]["heads"] == 16 and sweeps[0]["verdict"] in ("pass", "miss")
    levels = sections["app_latency"]["levels"]
    assert [lv["clients"] for lv in levels] == [1, 8]
    assert all(lv["errors"] == [] for lv in levels)
    assert levels[1]["ratio_to_1_client"]["overall_p50"] > 0
    if not torch.cuda.is_available():
        assert "no CUDA device" in sections["gpu"]["skipped"] and "Skipped: no CUDA device" in text
    assert text.count("|---") >= 8   # one table per section at least
    print(f"quick benchmark run: {elapsed:.0f} s")


def test_percentiles_match_a_hand_computation():
    values = [float(v) for v in range(10, 0, -1)]   # 10, 9, ..., 1 (order must not matter)
    # linear interpolation between closest ranks: rank = q * (n - 1) over the sorted values
    # p50: rank 4.5 -> 5 + 0.5 * (6 - 5) = 5.5; p95: rank 8.55 -> 9 + 0.55 * (10 - 9) = 9.55
    summary = summarise(values)
    assert summary["n"] == 10
    assert summary["p50_s"] == pytest.approx(5.5)
    assert summary["p95_s"] == pytest.approx(9.55)
    assert summarise([0.25]) == {"n": 1, "p50_s": 0.25, "p95_s": 0.25}
    assert summarise([]) == {"n": 0, "p50_s": None, "p95_s": None}


def test_mfu_arithmetic_and_peaks():
    # 2,000 images/s x 35.1 GFLOPs = 70.2 TFLOP/s; of a 989 TFLOPS peak that is 7.098%
    assert mfu(2000.0, 35.1e9, 989.0) == pytest.approx(70.2e12 / 989e12)
    assert mfu(2000.0, 35.1e9, 989.0) == pytest.approx(0.070981, abs=1e-6)
    assert mfu(2000.0, 35.1e9, None) is None
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 NVL") == 835.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L40S") == 362.0
    assert peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA A10G") is None          # not the A10, not an A100
    assert peak_tflops("NVIDIA GeForce RTX 4090") is None


def test_flop_count_matches_the_hand_formula():
    linear = torch.nn.Linear(64, 32)
    assert count_flops(linear, torch.randn(3, 64)) == 2 * 3 * 64 * 32
    # ViT-B/16 at 224 px: 197 tokens of width 768, 12 blocks; per block QKV + output projection + MLP are
    # 24 N d^2 and QK^T + AV are 4 N^2 d FLOPs; plus the patch embedding (196 x 768 x 768 MACs) and the head.
    tokens, width, blocks = 197, 768, 12
    body = blocks * (24 * tokens * width ** 2 + 4 * tokens ** 2 * width) + 2 * 196 * 768 * 768
    from models import load_model
    for model_id, head in (("timm:vit_base_patch16_224/none", 1000), ("torchvision:vit_b_16/none", 1000)):
        model = load_model(model_id, device="cpu")
        assert count_flops(model.forward, torch.randn(1, 3, 224, 224)) == body + 2 * 768 * head, model_id
    assert torch.backends.mha.get_fastpath_enabled()   # restored after counting


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("model_id", ["bundled:mini-vit", "bundled:mini-clip"])
def test_gpu_measurement_path_runs_on_the_cpu_with_a_small_model(model_id, dtype):
    """The GPU section's code in the GPU's precisions, run on the CPU with the bundled models (ViT and CLIP)."""
    row = measure_model(model_id, dtype, batch=2, repeats=1, device="cpu")
    assert row["images_per_s"] > 0 and row["flops_per_image"] > 0 and row["batch"] == 2 and row["dtype"] == dtype


def test_payload_bytes_are_what_gradio_sends():
    import gradio as gr
    from gradio.routes import ORJSONResponse

    fig = go.Figure([go.Heatmap(z=np.random.default_rng(0).normal(size=(40, 40))),
                     go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="naïve → unicode")])
    fig.update_layout(title="‖ gap ‖")
    sent = ORJSONResponse._render(gr.Plot().postprocess(fig).model_dump())   # as Blocks.postprocess_data does
    row = entry("view", "figure", fig)
    assert row["bytes"] == len(sent)
    assert 0 < row["gzip_bytes"] < row["bytes"]
    html = '{"token": "abc", "figure": {"data": []}}'
    assert value_bytes(html) == len(ORJSONResponse._render(html)) == len(json.dumps(html).encode())


def test_projection_rows_ratios():
    result = {"points": 1000, "umap_cold_s": 20.0, "umap_warm_s": 4.0, "pca_cold_s": 0.5, "pca_warm_s": 0.25,
              "umap_after_app_warm_up_s": 8.0}
    rows = {(r["method"], r["state"]): r for r in projection_rows([result])}
    assert len(rows) == 5
    assert rows[("UMAP", "cold")]["ratio_to_warm"] == pytest.approx(5.0)
    assert rows[("UMAP", "cold")]["ratio_to_pca_warm"] == pytest.approx(80.0)
    assert rows[("UMAP", "first fit after the app's warm-up")]["ratio_to_warm"] == pytest.approx(2.0)
    assert rows[("PCA", "cold")]["ratio_to_warm"] == pytest.approx(2.0)
    assert rows[("PCA", "warm")]["points_per_s"] == pytest.approx(4000.0)


def test_report_helpers():
    assert verdict(1.05, "<=", 1.05) == "pass" and verdict(1.06, "<=", 1.05) == "miss"
    assert verdict(2_000_000, "<", 2_000_000) == "miss" and verdict(0.9, ">=", 0.9) == "pass"
    assert verdict(None, ">=", 0.9) == "n/a"
    assert table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |\n"


def test_cpu_seconds_grow_while_busy():
    before = cpu_seconds(os.getpid())
    if before is None:
        pytest.skip("no /proc on this system")
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) >= before + 0.1
