"""The coverage matrix: every architecture researchers use, built from its real configuration with random weights
(no download), saved in its backend's own on-disk format, loaded back through ``load_model``, its attention checked
against the backend's eager computation, and every view of its family run.

    python -m models coverage            # tiny configurations of the same classes (what CI runs)
    python -m models coverage --full     # the real configurations
    python -m models coverage --only siglip --only swin

Each backend module provides two hooks (see ``models/backends/__init__.py``):
``save_random(arch, directory, tiny) -> model id`` and ``eager_patterns(adapter, pixels, tokens) -> {site: pattern}``.
Supporting a new architecture = its backend module + one row of :data:`MATRIX`.

The view check is passed in (``views``): models/ knows nothing of viz/; the command line wires in
``viz.views.check_views``, so the matrix runs the same view functions the app and the notebooks call.
"""
from __future__ import annotations

import gc
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Row:
    """One architecture of the matrix: which backend builds it, its name there, and the family it must load as."""

    backend: str
    arch: str
    family: str   # clip | vit | hierarchical | cnn

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.arch}"


def _rows(backend: str, family_of: dict[str, str]) -> list[Row]:
    return [Row(backend, arch, family) for arch, family in family_of.items()]


MATRIX: list[Row] = (
    _rows("open_clip", {
        "ViT-B-32": "clip", "ViT-B-16": "clip", "ViT-B-16-quickgelu": "clip", "ViT-L-14": "clip",
        "ViT-L-14-336": "clip", "ViT-H-14-quickgelu": "clip", "RN50": "clip", "convnext_base_w": "clip",
        "EVA02-B-16": "clip", "MobileCLIP-S1": "clip", "MobileCLIP2-S2": "clip", "PE-Core-B-16": "clip",
        "ViT-B-16-SigLIP": "clip", "ViT-B-16-SigLIP2": "clip", "ViT-SO400M-14-SigLIP": "clip",
        "coca_ViT-B-32": "clip", "xlm-roberta-base-ViT-B-32": "clip", "ViT-L-14-worldwide": "clip",
    })
    + _rows("hf", {
        "CLIPModel": "clip", "CLIPVisionModel": "vit", "SiglipModel": "clip", "Siglip2Model": "clip",
        "SiglipVisionModel": "vit", "ChineseCLIPModel": "clip", "AltCLIPModel": "clip",
        "ViTForImageClassification": "vit", "DeiTForImageClassificationWithTeacher": "vit", "Dinov2Model": "vit",
        "Dinov2WithRegistersModel": "vit", "DINOv3ViTModel": "vit", "SwinForImageClassification": "hierarchical",
        "BeitForImageClassification": "vit", "ConvNextForImageClassification": "cnn",
        "ConvNextV2ForImageClassification": "cnn", "ResNetForImageClassification": "cnn",
    })
    + _rows("timm", {
        "vit_base_patch16_224": "vit", "vit_small_patch16_224": "vit", "vit_base_patch16_clip_224": "vit",
        "deit_base_distilled_patch16_224": "vit", "vit_base_patch14_reg4_dinov2": "vit",
        "vit_base_patch16_siglip_224": "vit", "eva02_base_patch14_224": "vit", "vit_base_patch16_dinov3": "vit",
        "swin_tiny_patch4_window7_224": "hierarchical", "convnext_tiny": "cnn", "convnextv2_tiny": "cnn",
        "resnet50": "cnn", "efficientnet_b0": "cnn", "mobilenetv3_large_100": "cnn", "regnety_016": "cnn",
    })
    + _rows("torchvision", {
        "vit_b_16": "vit", "resnet50": "cnn", "convnext_tiny": "cnn", "efficientnet_b0": "cnn",
        "efficientnet_v2_s": "cnn", "mobilenet_v3_large": "cnn", "densenet121": "cnn", "vgg16": "cnn",
        "swin_t": "hierarchical", "regnet_y_400mf": "cnn", "maxvit_t": "hierarchical",
    })
)

PARITY_TOLERANCE = 1e-5
TEXTS = ("a red circle", "two blue squares left of a green star")


@dataclass
class ViewOutcome:
    """One view of one model: its name and the error it raised (None when it drew)."""

    view: str
    error: str | None = None


@dataclass
class RowResult:
    row: Row
    model_id: str = ""
    loads: bool = False
    family: str = ""
    parity: float | None = None          # max |recomputed - eager| over every attention site checked
    parity_sites: int = 0
    views: list[ViewOutcome] = field(default_factory=list)
    failure: str = ""                     # the first thing that went wrong, in one line
    traceback: str = ""
    seconds: float = 0.0

    @property
    def right_family(self) -> bool:
        return self.loads and self.family == self.row.family

    @property
    def views_ok(self) -> int:
        return sum(v.error is None for v in self.views)

    @property
    def parity_ok(self) -> bool:
        return self.parity is None or self.parity <= PARITY_TOLERANCE

    @property
    def passed(self) -> bool:
        """Loads as the right family, attention equals the eager reference, every view draws."""
        return (self.right_family and self.parity_ok and bool(self.views)
                and self.views_ok == len(self.views) and not self.failure)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:240]


def record_site_calls(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, tuple[tuple, dict]]:
    """(args, kwargs) of each attention module's call in one image forward (and one text forward), for the
    backends' eager references to call the module's own code on exactly what it was given."""
    calls: dict[str, tuple[tuple, dict]] = {}
    handles = []
    for name, site in adapter.sites.items():
        def pre_hook(module, args, kwargs, name=name):
            calls.setdefault(name, (args, dict(kwargs)))
        handles.append(site.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    run_hooked(adapter, pixels, tokens, handles)
    return calls


def run_hooked(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None, handles: list) -> None:
    """One image forward (and one text forward where there are tokens) through hooks already registered, which
    are removed afterwards, also when the forward raises."""
    try:
        with torch.no_grad():
            adapter.run_image(pixels)
            if tokens is not None:
                adapter.encode_text(tokens)
    finally:
        for handle in handles:
            handle.remove()


def parity(adapter, pixels: torch.Tensor, tokens: torch.Tensor | None, eager: dict[str, torch.Tensor]
           ) -> tuple[float, int]:
    """Max abs difference between clipscope's recomputed patterns and the backend's eager ones, site by site."""
    image_sites = [s for s in eager if not s.startswith("text.")]
    text_sites = [s for s in eager if s.startswith("text.")]
    worst = 0.0
    for sites, run in ((image_sites, lambda: adapter.run_image(pixels)),
                       (text_sites, lambda: adapter.encode_text(tokens))):
        if not sites:
            continue
        with adapter.capture([f"{s}.pattern" for s in sites]) as cache:
            run()
        for site in sites:
            ours, theirs = cache[f"{site}.pattern"].float(), eager[site].float().to(cache[f"{site}.pattern"].device)
            if ours.shape != theirs.shape:
                raise AssertionError(f"{site}: recomputed pattern {tuple(ours.shape)} vs eager {tuple(theirs.shape)}")
            worst = max(worst, float((ours - theirs).abs().max()))
    return worst, len(eager)


def run_row(row: Row, root: Path, tiny: bool = True, views: Callable | None = None,
            device: str = "cpu", keep: bool = True) -> RowResult:
    """Build, save, load, check and view one architecture; every failure is recorded, never raised.

    ``keep=False`` deletes the row's saved model afterwards (a ``--full`` pass would otherwise hold tens of GB).
    """
    from models.backends import BACKENDS
    from models.registry import clear_cache, load_model

    result = RowResult(row)
    start = time.perf_counter()
    stage = "build"
    folder = root / row.label.replace(":", "_").replace("/", "_")
    try:
        entry = BACKENDS[row.backend]
        if entry.save_random is None:
            raise NotImplementedError(f"backend {row.backend} has no coverage builder")
        torch.manual_seed(0)
        result.model_id = entry.save_random(row.arch, folder, tiny)
        stage = "load"
        adapter = load_model(result.model_id, device=device)
        result.loads, result.family = True, adapter.family
        if not result.right_family:
            result.failure = f"loads as {adapter.family}, expected {row.family}"
        stage = "parity"
        generator = torch.Generator().manual_seed(1)
        pixels = torch.randn(2, 3, *adapter.preprocess.size, generator=generator).to(device)
        tokens = adapter.tokenize(list(TEXTS)) if adapter.has_text else None
        if entry.eager_patterns is not None and adapter.has_attention:
            eager = entry.eager_patterns(adapter, pixels, tokens)
            result.parity, result.parity_sites = parity(adapter, pixels, tokens, eager)
            if not result.parity_ok and not result.failure:
                result.failure = f"attention parity {result.parity:.2e} > {PARITY_TOLERANCE:.0e}"
        stage = "views"
        if views is not None:
            result.views = list(views(adapter))
            first = next((v for v in result.views if v.error), None)
            if first is not None and not result.failure:
                result.failure = f"view {first.view}: {first.error}"
    except Exception as exc:  # noqa: BLE001 - the matrix reports every failure and goes on
        result.failure = f"{stage}: {_one_line(exc)}"
        result.traceback = traceback.format_exc()
    finally:
        clear_cache()
        gc.collect()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    return result


def select(rows: Sequence[Row], only: Sequence[str] = ()) -> list[Row]:
    """Rows whose label contains any of ``only`` (case-insensitive); all rows when ``only`` is empty."""
    if not only:
        return list(rows)
    wanted = [o.lower() for o in only]
    return [r for r in rows if any(w in r.label.lower() for w in wanted)]


def run_matrix(rows: Sequence[Row] = MATRIX, tiny: bool = True, views: Callable | None = None,
               device: str = "cpu", root: Path | None = None,
               progress: Callable[[RowResult], None] | None = None, isolate: bool = False) -> list[RowResult]:
    """Every row, each in its own folder under ``root`` (a temporary one by default).

    ``isolate=True`` runs each row in a fresh child process (``views`` must then be a module-level function), so
    the memory a billion-parameter row held is returned before the next one is built (``--full``).
    Otherwise, what survives a collection before each row (libraries and what rows imported, their caches: ~500k
    objects) is frozen out of the garbage collector until the matrix ends, so each row's ``gc.collect()`` scans
    only what that row made (0.27 s -> 2 ms a row).
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="clipscope-coverage-") as tmp:
        base = Path(root) if root is not None else Path(tmp)
        keep = root is not None  # a caller's folder keeps its models; the temporary one is emptied row by row
        if isolate:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("forkserver")  # children fork from a server that imported once
            context.set_forkserver_preload(["models.coverage", "models.backends", "models.registry",
                                            getattr(views, "__module__", "models.coverage")])
            for row in rows:
                with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    try:
                        result = pool.submit(run_row, row, base, tiny, views, device, keep).result()
                    except Exception as exc:  # noqa: BLE001 - a child killed (out of memory) is a failed row
                        result = RowResult(row, failure=f"process: {_one_line(exc)}")
                results.append(result)
                if progress is not None:
                    progress(result)
            return results
        try:
            for row in rows:
                gc.collect()
                gc.freeze()
                result = run_row(row, base, tiny=tiny, views=views, device=device, keep=keep)
                results.append(result)
                if progress is not None:
                    progress(result)
        finally:
            gc.unfreeze()
    return results


HEADER = ("id", "loads", "family", "parity", "views", "first failure")


def table_row(result: RowResult) -> tuple[str, ...]:
    parity_text = "n/a" if result.parity is None else f"{result.parity:.1e}"
    views = f"{result.views_ok}/{len(result.views)}" if result.views else "-"
    family = result.family if result.right_family else (f"{result.family or '-'} (want {result.row.family})")
    return (result.row.label, "yes" if result.loads else "no", family, parity_text, views, result.failure or "")


def summary(results: Sequence[RowResult]) -> str:
    total = len(results)
    right = sum(r.right_family for r in results)
    passed = sum(r.passed for r in results)
    checked = [r.parity for r in results if r.parity is not None]
    worst = f"{max(checked):.1e}" if checked else "n/a"
    return (f"{right} of {total} load as the right family; {passed} of {total} pass every view; "
            f"worst attention parity {worst} over {len(checked)} models")


def format_table(results: Sequence[RowResult], markdown: bool = False) -> str:
    rows = [table_row(r) for r in results]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines + ["", summary(results)])
    widths = [max(len(r[i]) for r in rows + [HEADER]) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in [HEADER] + rows]
    return "\n".join(line.rstrip() for line in lines) + "\n" + summary(results)
