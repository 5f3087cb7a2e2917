"""Open a large ``models.embed`` output in the Embedding space tab through the app's HTTP API, and time it.

    python -m benchmarks.open_embed_output [--rows 100000] [--method PCA|UMAP]

Writes a synthetic output of ``--rows`` images (the world's 36 class names as labels, one class prompt each) with
models.embed's own writer into a temporary folder, starts the app with ``--allow-folder`` on it, and asks the tab to
read, project, cluster and draw it; prints the seconds, the view's JSON size and the figure's title and note.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.app_server import running_app
from benchmarks.map_scale import write_synthetic_output


def open_output(rows: int, method: str) -> dict:
    """One timed /embedding_embed call on a fresh synthetic output of ``rows`` images."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="clipscope-open-") as root:
        start = time.perf_counter()
        write_synthetic_output(Path(root) / "out", rows, dims=128)
        written = time.perf_counter() - start
        with running_app("--allow-folder", root) as (url, _):
            client = Client(url, verbose=False)
            start = time.perf_counter()
            _, webgl, info, _ = client.predict("bundled:mini-clip", "models.embed output folder", 10, 0, None,
                                               str(Path(root) / "out"), "", "a photo of a {}.", method, "label",
                                               False, True, api_name="/embedding_embed")
            seconds = time.perf_counter() - start
    html = webgl["value"] if isinstance(webgl, dict) else webgl
    view = json.loads(html)
    return {"rows": rows, "method": method, "write_s": written, "open_s": seconds, "view_bytes": len(html),
            "title": view["title"], "note": view.get("note", ""), "info": info.splitlines()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--method", default="PCA", choices=["PCA", "UMAP"])
    args = parser.parse_args(argv)
    print(json.dumps(open_output(args.rows, args.method), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
