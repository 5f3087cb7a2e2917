"""clipscope: look inside CLIP, ViT and CNN vision models from a browser.

    python app.py                                  # bundled models, http://127.0.0.1:7860
    python app.py --model open_clip:ViT-B-32/openai --device cuda
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path

import gradio as gr

from models.access import ModelAccess, lock_implied
from models.backends.bundled import bundled_names
from models.catalog import real_models
from ui.attention_tab import build_attention_tab
from ui.cnn_tab import build_cnn_tab
from ui.compare_tab import build_compare_tab
from ui.decomposition_tab import build_decomposition_tab
from ui.embedding_tab import build_embedding_tab
from ui.model_access import set_access
from ui.model_tab import build_model_tab
from ui.patches_tab import build_patches_tab
from ui.poke_tab import build_poke_tab
from ui.self_check import report, run_checks
from ui.shared_inputs import build_shared_inputs, default_ids, picker_choices
from ui.url_state import bind_url_state
from ui.webgl_map import launch_kwargs as map_launch_kwargs
from ui.zero_shot_tab import build_zero_shot_tab
from viz.embedding_space import warm_up

DEFAULT_MODEL = "bundled:mini-clip"
MAX_UPLOAD = "25mb"
TABS = ("Attention", "Model", "Patches", "CNN", "Zero-shot & Softmax", "Embedding space", "Ablate & patch",
        "Decomposition", "Compare")
TAB_IDS = ("attention", "model", "patches", "cnn", "zero-shot", "embedding", "ablate", "decomposition",
           "compare")   # as the page URL names them


def model_choices(extra: list[str]) -> list[str]:
    """Ids offered in the Model tab: the user's, then bundled, then popular real checkpoints."""
    ids = list(extra) + [f"bundled:{name}" for name in bundled_names()] + [m.id for m in real_models()]
    return list(dict.fromkeys(ids))


def build_app(models: list[str] | None = None, allowed_folders: list[str] | None = None,
              access: ModelAccess | None = None) -> gr.Blocks:
    """The whole app as a gr.Blocks (no launch), for the launcher, tests and Hugging Face Spaces.

    ``models``: ids offered first (the launcher's --model); ``allowed_folders``: the only server folders (with their
    subfolders) the Embedding space tab may read; ``access``: which model ids the tabs may load (default: any).
    """
    models = list(models or [])
    set_access(access or ModelAccess())
    choices = model_choices(models)
    default = models[0] if models else DEFAULT_MODEL
    with gr.Blocks(title="clipscope", fill_width=True) as app:
        gr.Markdown("**clipscope**: see inside vision models; every figure is read from the real model by hooks "
                    "while it runs. The image and models (left) are shared by every tab; the page URL holds the "
                    "whole view, to share it.", elem_id="cs-header")
        shared = build_shared_inputs(models)
        views = {}   # tab id -> the tab's handle (its URL fields), for the URL state
        panels = {}  # tab id -> the tab itself, whose selection the URL records
        with gr.Tabs():
            with gr.Tab(TABS[0], id=TAB_IDS[0]) as panels[TAB_IDS[0]]:
                views["attention"] = build_attention_tab(shared)
            with gr.Tab(TABS[1], id=TAB_IDS[1]) as panels[TAB_IDS[1]]:
                build_model_tab(app, choices, default)
            with gr.Tab(TABS[2], id=TAB_IDS[2]) as panels[TAB_IDS[2]]:
                views["patches"] = build_patches_tab(shared)
            with gr.Tab(TABS[3], id=TAB_IDS[3]) as panels[TAB_IDS[3]]:
                views["cnn"] = build_cnn_tab(shared, picker_choices("transformer", models) +
                                             picker_choices("cnn", models))
            with gr.Tab(TABS[4], id=TAB_IDS[4]) as panels[TAB_IDS[4]]:
                build_zero_shot_tab(shared)
            with gr.Tab(TABS[5], id=TAB_IDS[5]) as panels[TAB_IDS[5]]:
                views["embedding"] = build_embedding_tab(shared, [Path(f) for f in allowed_folders or []])
            with gr.Tab(TABS[6], id=TAB_IDS[6]) as panels[TAB_IDS[6]]:
                build_poke_tab(shared)
            with gr.Tab(TABS[7], id=TAB_IDS[7]) as panels[TAB_IDS[7]]:
                build_decomposition_tab(shared)
            with gr.Tab(TABS[8], id=TAB_IDS[8]) as panels[TAB_IDS[8]]:
                build_compare_tab(shared, choices, "bundled:mini-clip")
        fields = {"vit_model": shared.pickers["transformer"], "cnn_model": shared.pickers["cnn"],
                  "clip_model": shared.pickers["clip"], "image": shared.source}
        for view in views.values():
            fields.update(view.url_fields() if view is not None else {})
        loaded = bind_url_state(app, fields, panels, shared.image, shared.status)
        for view in views.values():
            if view is not None:
                view.draw(loaded)   # the first screen: the tab draws itself on the preselected example
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="clipscope: look inside CLIP, ViT and CNN models in a browser.")
    parser.add_argument("--model", action="append", default=[], metavar="ID",
                        help="model id to offer first (repeatable); default bundled:mini-clip")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bf16", "fp16"],
                        help="weights and activations precision (default float32); bf16/fp16 halve memory on a GPU")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for your network; default $GRADIO_SERVER_NAME or "
                             "127.0.0.1, so it runs unchanged as a Hugging Face Space)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port (default $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login (use with --share)")
    parser.add_argument("--allow-folder", action="append", default=[], metavar="DIR",
                        help="a server folder the Embedding space tab may read (repeatable); none by default")
    parser.add_argument("--lock-models", action=argparse.BooleanOptionalAction, default=None,
                        help="only load the catalog's models, the --model ids and folders under --allow-model-dir "
                             "(default: on with --share or a --host other than loopback, off otherwise)")
    parser.add_argument("--allow-model-dir", action="append", default=[], metavar="DIR",
                        help="with a locked model list, model folders under DIR may be loaded too (repeatable)")
    parser.add_argument("--check", action="store_true",
                        help="self-check: run every tab's main computation once on an example image through the "
                             "app's HTTP API, print one line per view with its time, exit non-zero if any fails")
    return parser.parse_args(argv)


def model_access(args: argparse.Namespace) -> ModelAccess:
    """The model list the launcher's flags ask for: locked when --lock-models says so, or by default when the app is
    shared (--share) or listens beyond loopback."""
    locked = args.lock_models if args.lock_models is not None else lock_implied(args.host, args.share)
    return ModelAccess.locked_to(args.model, args.allow_model_dir) if locked else ModelAccess()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.device or args.dtype:
        import models.registry
        models.registry.DEFAULT_DEVICE = args.device
        models.registry.DEFAULT_DTYPE = args.dtype
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.auth and (auth is None or len(auth) != 2 or not all(auth)):
        raise SystemExit("--auth takes USER:PASS")
    for folder in args.allow_folder:
        if not Path(folder).expanduser().is_dir():
            raise SystemExit(f"--allow-folder {folder}: not a folder")
    for folder in args.allow_model_dir:
        if not Path(folder).expanduser().is_dir():
            raise SystemExit(f"--allow-model-dir {folder}: not a folder")
    access = model_access(args)
    if not access.locked and lock_implied(args.host, args.share):
        logging.getLogger("clipscope").warning("--no-lock-models on a shared app: anyone who can reach it can make "
                                               "this server download any model and read model folders on its disk.")
    threading.Thread(target=warm_up, name="umap-warm-up", daemon=True).start()  # numba compiles once, not per request
    app = build_app(args.model, args.allow_folder, access)
    if args.check:
        results = run_checks(app, default_ids(args.model))
        print(report(results), flush=True)
        raise SystemExit(1 if any(r.error for r in results) else 0)
    if args.share and not auth:
        logging.getLogger("clipscope").warning("--share without --auth: anyone with the link can use this app.")
    # two events at a time overall; each model also runs one forward at a time (its lock), so one GPU is never
    # oversubscribed and captures of different users never mix
    app.queue(default_concurrency_limit=2)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
               max_file_size=MAX_UPLOAD, show_error=True, **map_launch_kwargs())  # + the WebGL map's binary route


if __name__ == "__main__":
    main()
