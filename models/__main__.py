"""``python -m models list`` (known ids, family, size, offline now) and ``python -m models coverage`` (the matrix).

    python -m models coverage [--full] [--only TEXT ...] [--markdown] [--verbose]
"""
from __future__ import annotations

import argparse
import sys


def _list() -> int:
    from models.catalog import known_models

    rows = [(m.id, m.family, f"{m.parameters:,}", "yes" if offline else "no", m.note) for m, offline in known_models()]
    header = ("id", "family", "parameters", "offline now", "note")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _coverage(args) -> int:
    from models import coverage
    from viz.views import check_views  # the command line wires the app's views in; models/ itself never imports viz

    rows = coverage.select(coverage.MATRIX, args.only)
    if not rows:
        print(f"no row of the matrix matches {args.only}", file=sys.stderr)
        return 2

    def progress(result):
        mark = "ok  " if result.passed else "FAIL"
        cells = coverage.table_row(result)  # id, loads, family, parity, views, first failure
        print(f"{mark} {result.row.label:<44} {result.seconds:6.1f} s  parity {cells[3]:<8} views {cells[4]:<6} "
              f"{result.failure}", file=sys.stderr, flush=True)
        if args.verbose and result.traceback:
            print(result.traceback, file=sys.stderr)

    results = coverage.run_matrix(rows, tiny=not args.full, views=check_views, device=args.device,
                                  progress=progress, isolate=args.full)  # real sizes: one process per row
    print(coverage.format_table(results, markdown=args.markdown))
    return 0 if all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the known model ids")
    cov = commands.add_parser("coverage", help="build, save, load, check and view every architecture of the matrix")
    cov.add_argument("--full", action="store_true", help="real configurations (default: tiny ones of the same class)")
    cov.add_argument("--only", action="append", default=[], help="rows whose id contains this text (repeatable)")
    cov.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    cov.add_argument("--device", default="cpu")
    cov.add_argument("--verbose", action="store_true", help="print the traceback of each failure")
    args = parser.parse_args(argv)
    return _list() if args.command == "list" else _coverage(args)


if __name__ == "__main__":
    raise SystemExit(main())
