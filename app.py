"""clipscope: look inside CLIP, ViT and CNN vision models from a browser.

    python app.py                                  # bundled models, http://127.0.0.1:7860
    python app.py --model open_clip:ViT-B-32/openai --device cuda
"""
from __future__ import annotations

import argparse
import logging

import gradio as gr

from models.backends import bundled_names
from models.catalog import REAL_MODELS
from ui.attention_tab import build_attention_tab
from ui.model_tab import build_model_tab
from ui.patches_tab import build_patches_tab

DEFAULT_MODEL = "bundled:mini-clip"


def model_choices(extra: list[str]) -> list[str]:
    """Ids offered in the pickers: the user's, then bundled, then popular real checkpoints."""
    ids = list(extra) + [f"bundled:{name}" for name in bundled_names()] + [m.id for m in REAL_MODELS]
    return list(dict.fromkeys(ids))


def build_app(models: list[str] | None = None) -> gr.Blocks:
    """The whole app as a gr.Blocks (no launch), for the launcher, tests and Hugging Face Spaces."""
    models = list(models or [])
    choices = model_choices(models)
    default = models[0] if models else (DEFAULT_MODEL if DEFAULT_MODEL in choices else choices[0])
    with gr.Blocks(title="clipscope") as app:
        gr.Markdown("# clipscope\nSee inside vision models: everything shown is read from the real model by hooks.")
        with gr.Tab("Model"):
            build_model_tab(app, choices, default)
        with gr.Tab("Attention"):
            build_attention_tab(choices, default)
        with gr.Tab("Patches"):
            build_patches_tab(choices, default)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="clipscope: look inside CLIP, ViT and CNN models in a browser.")
    parser.add_argument("--model", action="append", default=[], metavar="ID",
                        help="model id to offer first (repeatable); default bundled:mini-clip")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login (use with --share)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.device:
        import models.registry
        models.registry.DEFAULT_DEVICE = args.device
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.auth and (auth is None or len(auth) != 2 or not all(auth)):
        raise SystemExit("--auth takes USER:PASS")
    app = build_app(args.model)
    app.queue(default_concurrency_limit=2)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
               max_file_size="25mb", show_error=True)


if __name__ == "__main__":
    main()
