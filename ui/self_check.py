"""``python app.py --check``: start the app headlessly on a free local port, run every tab's main computation once
through the app's own HTTP API (queue, serialisation and all), then every registered view (viz.views) of each
picker's model in process; print one line per check with its time, and report whether every view answered.
"""
from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr


@dataclass
class CheckResult:
    view: str
    seconds: float
    error: str | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _value(update):
    """The value inside a gr.update(...) as the API returns it."""
    return update["value"] if isinstance(update, dict) and update.get("__type__") == "update" else update


def _refused(call: Callable[[], object], reason: str) -> Callable[[], None]:
    """A check that ``call`` is refused with a message containing ``reason`` (a view that does not apply)."""
    def check():
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the refusal is the answer; any other message fails below
            if reason in str(exc):
                return
            raise
        raise AssertionError(f"answered instead of saying it needs {reason!r}")
    return check


def _plan(client, ids: dict[str, str], image: str) -> list[tuple[str, Callable[[], object]]]:
    """(view, call) for every tab's main computation, in the order a user would meet them (for a transformer
    model with a grid per stage, e.g. a Swin: that the single-token-grid views say so)."""
    from gradio_client import handle_file

    from ui.shared_inputs import capabilities

    picture = handle_file(image)
    state: dict = {}
    found = capabilities(ids["transformer"])
    one_grid = found is None or found.has_token_grid

    def rollout():
        return client.predict("mean", 0.0, api_name="/attention_rollout")

    def patches():
        return client.predict(ids["transformer"], picture, 1, api_name="/patches_analyse")

    if not one_grid:
        rollout, patches = _refused(rollout, "single token grid"), _refused(patches, "single token grid")

    def cnn_analyse():
        state["cnn"] = [_value(v) for v in client.predict(ids["cnn"], picture, "", api_name="/cnn_analyse")]

    views = [
        ("Model: structure", lambda: client.predict(ids["transformer"], api_name="/describe_model")),
        ("Attention: one hooked forward, every view",
         lambda: client.predict(ids["transformer"], picture, 1, "mean", 1.0, api_name="/attention_analyse")),
        ("Attention: rollout (no forward)" + ("" if one_grid else ": needs one token grid"), rollout),
        ("Attention: window attention per stage (or why not)",
         lambda: client.predict(ids["transformer"], picture, None, 0, "mean", api_name="/attention_windows")),
        ("Patches: filters, positions, islands, residual" + ("" if one_grid else ": needs one token grid"), patches),
        ("CNN: one hooked forward, prediction, stages", cnn_analyse),
        ("CNN: feature maps", lambda: client.predict(state["cnn"][3], "top-k by mean activation", 16, "",
                                                     "per unit", api_name="/cnn_feature_maps")),
        ("CNN: receptive field (theoretical + effective)",
         lambda: client.predict(state["cnn"][4], api_name="/cnn_receptive_field")),
        ("CNN: Grad-CAM", lambda: client.predict("Grad-CAM", state["cnn"][6], state["cnn"][7], api_name="/cnn_cam")),
        ("Zero-shot: classify", lambda: client.predict(ids["clip"], picture, "red circle, blue square, green star",
                                                       "default: a photo of a {}.", "", 3,
                                                       api_name="/zero_shot_classify")),
        ("Softmax: sliders", lambda: client.predict(*[0.0] * 8, 0.5, api_name="/softmax_sliders")),
        ("Similarity matrix", lambda: client.predict(ids["clip"], "procedural shapes and their captions", 6, None,
                                                     "", api_name="/similarity_matrix")),
        ("Embedding space: embed + UMAP", lambda: client.predict(
            ids["clip"], "procedural shapes (images + captions)", 120, 616_161, None, "", "", "a photo of a {}.",
            "UMAP", "label", False, True, api_name="/embedding_embed")),
        ("Embedding space: text search", lambda: client.predict("a red circle", 8, "UMAP", "label", False, True,
                                                                api_name="/embedding_search")),
    ]
    return views


def run_checks(app: gr.Blocks, ids: dict[str, str], image: str | Path | None = None) -> list[CheckResult]:
    """Launch ``app`` on a free local port, run every view once, close it; one result per view."""
    from gradio_client import Client

    if image is None:
        from viz.views import check_image
        image = Path(tempfile.mkdtemp(prefix="clipscope-check-")) / "example.png"
        check_image().save(image)
    port = _free_port()
    app.queue(default_concurrency_limit=2)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    results = []
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for view, call in _plan(client, ids, str(image)):
            start = time.perf_counter()
            try:
                call()
                results.append(CheckResult(view, time.perf_counter() - start))
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the others still run
                results.append(CheckResult(view, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"))
    finally:
        app.close()
    return results + registry_checks(ids)


def registry_checks(ids: dict[str, str]) -> list[CheckResult]:
    """Every registered view (viz.views) that applies to each picker's model, run in this process on a procedural
    image: the views the tabs bind to, including those the HTTP plan above does not call."""
    from ui.model_access import load_model
    from viz.views import check_views

    results = []
    for model_id in dict.fromkeys(ids.values()):
        start = time.perf_counter()
        try:
            outcomes = check_views(load_model(model_id))
        except Exception as exc:  # noqa: BLE001 - a model that cannot load is reported like any failed view
            results.append(CheckResult(f"Registry: views of {model_id}", time.perf_counter() - start,
                                       f"{type(exc).__name__}: {exc}"))
            continue
        failed = [f"{o.view}: {o.error}" for o in outcomes if o.error]
        results.append(CheckResult(f"Registry: {len(outcomes)} view checks of {model_id}", time.perf_counter() - start,
                                   "; ".join(failed) or None))
    return results


def report(results: list[CheckResult]) -> str:
    """One line per view: ok / FAILED, seconds, and the error where there is one."""
    lines = []
    for result in results:
        mark = "ok    " if result.error is None else "FAILED"
        line = f"{mark} {result.seconds:7.2f} s  {result.view}"
        lines.append(line + (f"\n         {result.error}" if result.error else ""))
    failed = sum(r.error is not None for r in results)
    lines.append(f"{len(results) - failed} of {len(results)} views answered" + (f"; {failed} failed" if failed else ""))
    return "\n".join(lines)
