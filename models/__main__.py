"""``python -m models list``: the known model ids, their family, parameter count and offline availability."""
from __future__ import annotations

import argparse

from models.catalog import known_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    parser.add_argument("command", choices=["list"], help="list the known model ids")
    parser.parse_args(argv)
    rows = [(m.id, m.family, f"{m.parameters:,}", "yes" if offline else "no", m.note) for m, offline in known_models()]
    header = ("id", "family", "parameters", "offline now", "note")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
