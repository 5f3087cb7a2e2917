"""The coverage matrix in CI: every row built tiny, saved in its backend's format, loaded, its attention checked
against the backend's eager code and every view of its family run, ONCE per test session; then the table, the
summary, ``select`` and the ``python -m models coverage`` command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import coverage
from models.__main__ import main
from models.backends import BACKENDS
from models.coverage import MATRIX, PARITY_TOLERANCE, Row, RowResult, ViewOutcome

ROOT = Path(__file__).resolve().parents[1]
MIN_PASSING = 58   # the goal: 61 of 61 load as the right family, at least 58 of 61 pass every view


@pytest.fixture(scope="module")
def results() -> list[RowResult]:
    """The whole tiny matrix, run once for every test of this module."""
    from viz.views import check_views

    return coverage.run_matrix(MATRIX, tiny=True, views=check_views)


def _listing(rows: list[RowResult]) -> str:
    return "\n".join(f"  {r.row.label} ({r.seconds:.1f} s): {r.failure or 'no failure recorded'}" for r in rows)


def test_matrix_rows_are_unique_and_name_known_backends_and_families():
    labels = [row.label for row in MATRIX]
    assert len(labels) == 61 and len(set(labels)) == 61
    assert {row.backend for row in MATRIX} <= set(BACKENDS)
    assert {row.family for row in MATRIX} <= {"clip", "vit", "hierarchical", "cnn"}
    assert all(BACKENDS[b].save_random and BACKENDS[b].eager_patterns for b in {row.backend for row in MATRIX})


@pytest.mark.slow
def test_every_row_loads_as_its_expected_family(results):
    wrong = [r for r in results if not r.right_family]
    assert not wrong, (f"{len(results) - len(wrong)} of {len(results)} rows load as their family; these do not:\n"
                       + _listing(wrong))


@pytest.mark.slow
def test_attention_equals_the_eager_reference_wherever_checked(results):
    checked = [r for r in results if r.parity is not None]
    assert checked, "no row checked attention parity"
    bad = [r for r in checked if r.parity > PARITY_TOLERANCE or r.parity_sites == 0]
    assert not bad, f"attention parity above {PARITY_TOLERANCE:.0e} (or no site checked):\n" + "\n".join(
        f"  {r.row.label}: {r.parity:.2e} over {r.parity_sites} sites" for r in bad)


@pytest.mark.slow
def test_at_least_58_rows_pass_every_view(results):
    failing = [r for r in results if not r.passed]
    assert len(results) - len(failing) >= MIN_PASSING, (
        f"{len(results) - len(failing)} of {len(results)} rows pass every view (need {MIN_PASSING}); failing:\n"
        + _listing(failing))
    assert all(r.views for r in results if r.right_family), "a row that loads ran no view"


# -- the table, the summary and select, on hand-made results ------------------------------------------------------
def _result(arch="vit_b_16", family="vit", loads=True, parity=3.2e-7, views=("a", "b"), errors=(), failure=""):
    result = RowResult(Row("torchvision", arch, "vit"), loads=loads, family=family, parity=parity,
                       parity_sites=2 if parity is not None else 0, failure=failure)
    result.views = [ViewOutcome(v, "ValueError: boom" if v in errors else None) for v in views]
    return result


def test_table_row_formats_parity_views_and_a_wrong_family():
    assert coverage.table_row(_result()) == ("torchvision:vit_b_16", "yes", "vit", "3.2e-07", "2/2", "")
    wrong = coverage.table_row(_result(family="cnn", parity=None, errors=("b",), failure="loads as cnn, expected vit"))
    assert wrong == ("torchvision:vit_b_16", "yes", "cnn (want vit)", "n/a", "1/2", "loads as cnn, expected vit")
    unloaded = coverage.table_row(_result(loads=False, family="", parity=None, views=(), failure="build: X"))
    assert unloaded == ("torchvision:vit_b_16", "no", "- (want vit)", "n/a", "-", "build: X")


def test_a_row_passes_only_when_everything_holds():
    assert _result().passed
    assert not _result(parity=2e-5).passed                 # parity above tolerance
    assert not _result(errors=("a",)).passed                # a view failed
    assert not _result(views=()).passed                     # no view ran
    assert not _result(family="cnn").passed                 # wrong family
    assert _result(parity=None).passed                      # no attention to check


def test_summary_counts_families_views_and_the_worst_parity():
    rows = [_result(), _result(parity=4e-6, errors=("a",)), _result(family="cnn", parity=None)]
    assert coverage.summary(rows) == ("2 of 3 load as the right family; 1 of 3 pass every view; "
                                      "worst attention parity 4.0e-06 over 2 models")


def test_plain_table_aligns_columns_and_ends_with_the_summary():
    rows = [_result(), _result(arch="resnet50_long_name", parity=None, failure="view x: boom")]
    lines = coverage.format_table(rows).splitlines()
    assert lines[0].split() == ["id", "loads", "family", "parity", "views", "first", "failure"]
    starts = {line.index(" yes ") for line in lines[1:3]}
    assert len(starts) == 1 and lines[0].index("loads") == starts.pop() + 1
    assert lines[2].endswith("view x: boom") and lines[-1] == coverage.summary(rows)


def test_markdown_table_escapes_pipes():
    rows = [_result(failure="view a|b: boom")]
    text = coverage.format_table(rows, markdown=True)
    lines = text.splitlines()
    assert lines[0] == "| id | loads | family | parity | views | first failure |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| torchvision:vit_b_16 | yes | vit | 3.2e-07 | 2/2 | view a\\|b: boom |"
    assert lines[-1] == coverage.summary(rows)


def test_select_matches_any_text_case_insensitively():
    assert coverage.select(MATRIX) == MATRIX
    assert [r.label for r in coverage.select(MATRIX, ["TORCHVISION:VGG"])] == ["torchvision:vgg16"]
    both = coverage.select(MATRIX, ["siglip2", "torchvision:resnet"])
    assert [r.label for r in both] == ["open_clip:ViT-B-16-SigLIP2", "hf:Siglip2Model", "torchvision:resnet50"]
    assert coverage.select(MATRIX, ["no-such-model"]) == []


# -- the command line ---------------------------------------------------------------------------------------------
def test_cli_runs_the_selected_rows_and_exits_0_when_they_pass(capsys):
    assert main(["coverage", "--only", "torchvision:resnet50"]) == 0
    out = capsys.readouterr()
    assert "torchvision:resnet50" in out.out and "1 of 1 load as the right family; 1 of 1 pass every view" in out.out
    assert "ok   torchvision:resnet50" in out.err   # progress, one line per row


def test_cli_exits_1_and_names_the_failure(capsys, monkeypatch):
    def broken(arch, directory, tiny):
        raise RuntimeError("no builder today")
    monkeypatch.setattr(BACKENDS["torchvision"], "save_random", broken)
    assert main(["coverage", "--only", "torchvision:resnet50", "--markdown", "--verbose"]) == 1
    out = capsys.readouterr()
    assert "| torchvision:resnet50 | no | - (want cnn) | n/a | - | build: RuntimeError: no builder today |" in out.out
    assert "Traceback" in out.err and "no builder today" in out.err


def test_cli_exits_2_when_no_row_matches(capsys):
    assert main(["coverage", "--only", "no-such-model"]) == 2
    assert "no row of the matrix matches" in capsys.readouterr().err


def test_python_dash_m_models_coverage_prints_markdown():
    done = subprocess.run([sys.executable, "-m", "models", "coverage", "--only", "torchvision:regnet", "--markdown"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "| id | loads | family | parity | views | first failure |"
    assert lines[2].startswith("| torchvision:regnet_y_400mf | yes | cnn | n/a | ")
