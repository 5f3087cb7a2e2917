"""Copy as Python: the notebook code that reproduces a tab's figures, as the registered view calls (viz.views) the
tab made, on the same model and image.

    code = reproduce_code("bundled:mini-clip", "shapes-1", [("attention.query", {"layer": 2, "query": 5})])
"""
from __future__ import annotations

from collections.abc import Sequence

from viz.views import VIEWS


def image_line(source: str | None) -> tuple[str, str]:
    """(import line, expression) that recreates the image: an example by name (ui.examples), else a file to fill
    in (an upload is not carried by the app's state)."""
    if source and source not in ("upload", ""):
        return "from ui.examples import example_image", f"example_image({source!r})"
    return ("from models.images import open_image",
            'open_image("YOUR_IMAGE.png")  # the app\'s image was an upload: put its path here')


def reproduce_code(model_id: str, image_source: str | None, calls: Sequence[tuple[str, dict]],
                   show: str | None = None, with_image: bool = True) -> str:
    """Python that loads ``model_id``, builds the subject on the image (``with_image``) and runs each (view name,
    parameters) of ``calls`` with run_view, collecting the named figures in ``figures``; the figure ``show`` is the
    cell's last expression (a notebook draws it)."""
    for name, _ in calls:
        if name not in VIEWS:
            raise KeyError(f"No view {name!r}.")
    imports = ["from models import load_model", "from viz.views import Subject, run_view"]
    if with_image:
        image_import, image = image_line(image_source)
        imports.insert(1, image_import)
        subject = [f"image = {image}", f"subject = Subject(load_model({model_id!r}), image)"]
    else:
        subject = [f"subject = Subject(load_model({model_id!r}))"]
    lines = ["# clipscope: reproduce these figures in a notebook (run from the clipscope folder)", *imports, "",
             *subject, "figures = {}"]
    for name, params in calls:
        arguments = "".join(f", {key}={value!r}" for key, value in params.items())
        lines.append(f"figures.update(run_view({name!r}, subject{arguments}))")
    lines.append(f"figures[{show!r}]" if show else "print(sorted(figures))")
    return "\n".join(lines).rstrip() + "\n"
