"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, and is committed with its outputs cleared.

Each notebook ends with a cell that asserts the facts it teaches, so running it is its test. The kernel runs this
test's own Python (the repository's virtual environment), starts in notebooks/ as Jupyter would, and makes the
repository importable through the notebook's own first cell.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT_S = 300  # per notebook; each is meant to finish in under 3 minutes on a 2-core CPU


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and "MODEL_ID" in first.source, \
        f"{path.name} must open with what it teaches and the MODEL_ID line that switches to a real checkpoint"
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code.source.startswith("MODEL_ID = "), f"{path.name}: the first code cell must define MODEL_ID"


def _kernel_manager(spec_root: Path) -> AsyncKernelManager:
    """A kernel manager whose "python3" kernel is this interpreter, whatever kernels the user has installed."""
    write_kernel_spec(spec_root / "python3")  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.timeout(TIMEOUT_S + 60)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    kernel = _kernel_manager(tmp_path / "kernels")
    client = NotebookClient(notebook, km=kernel, timeout=TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    scratch = tmp_path / "scratch"  # the notebooks' temporary files land under pytest's tmp_path
    scratch.mkdir()
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # the first cell finds models/
    start = time.perf_counter()
    try:
        client.execute(env={**env, "TMPDIR": str(scratch)})
    finally:
        if kernel.has_kernel:  # a kernel manager passed in is ours to shut down, not nbclient's
            run_sync(kernel.shutdown_kernel)(now=True)
    elapsed = time.perf_counter() - start
    print(f"{path.name} ran in {elapsed:.0f} s")
    assert elapsed < TIMEOUT_S
