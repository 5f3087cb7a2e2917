"""The inputs every view tab shares: one image (upload, paste, examples; a click picks a location) and one model
picker per kind of view, each loading its model as soon as it changes, with progress.

Images are decoded by clipscope (models.images.open_image), not by Gradio, so that corrupt files, decompression
bombs, 16-bit, CMYK, palette and multi-frame images all get the same safe handling and a clear message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from models.catalog import catalog_models
from models.images import ImageInputError, open_image
from ui.errors import user_errors
from ui.examples import CAPTIONS, DEFAULT_EXAMPLE, example_names, example_path
from ui.inputs import check_upload
from ui.model_access import labelled_choices, load_model, typing_hint
from viz.hierarchical import has_stage_attention
from viz.provenance import SOURCE_INFO
from viz.views import has_token_grid

PICKERS = {  # picker -> (label, what a model must have to be offered, tabs that use it)
    "transformer": ("Transformer or CLIP model", "has_grid_attention",
                    "Attention (ViT, CLIP; Swin, MaxViT, MobileCLIP per stage), Patches (ViT, CLIP-ViT)"),
    "cnn": ("CNN model", "has_feature_maps", "CNN"),
    "clip": ("CLIP model", "has_text", "Zero-shot & Softmax, Embedding space"),
}
SIDEBAR_WIDTH = 330  # px: the shared inputs stay in view beside every tab
DEFAULTS = {"transformer": "bundled:mini-clip", "cnn": "bundled:mini-cnn", "clip": "bundled:mini-clip"}


class ImageInput(gr.Image):
    """gr.Image that hands handlers a safely decoded RGB PIL image (or a clear gr.Error), whatever was uploaded."""

    is_template = True  # drawn by gr.Image's own front end; build it with type="filepath", image_mode=None

    def preprocess(self, payload) -> Image.Image | None:
        try:
            path = super().preprocess(payload)  # type="filepath", no mode: Gradio only reads the header
        except Image.DecompressionBombError as exc:
            raise gr.Error(f"The image has too many pixels (a decompression-bomb guard): {exc}",
                           print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file, not the server
            raise gr.Error(f"Cannot read the upload as an image ({type(exc).__name__}). Use a PNG, JPEG, WebP, "
                           "GIF, BMP or TIFF file.", print_exception=False) from None
        if path is None:
            return None
        try:
            image = open_image(path)
        except ImageInputError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        image.info[SOURCE_INFO] = Path(path).name  # the file name travels into each figure's provenance
        return image


@dataclass
class SharedInputs:
    """The shared image and the model pickers (one per kind of view) (Gradio components)."""

    image: ImageInput
    pickers: dict[str, gr.Dropdown]
    status: gr.Markdown
    source: gr.Textbox | None = None  # the image's source: an example's name, "upload", or "" (none)


@dataclass(frozen=True)
class Capabilities:
    """What a model offers the pickers: a text tower, one token grid of attention, attention on a grid per stage,
    feature maps."""

    has_text: bool
    has_token_grid: bool
    has_feature_maps: bool
    has_stage_attention: bool = False

    @property
    def has_grid_attention(self) -> bool:
        """Attention the Attention tab can show: over one token grid (ViT) or over a grid per stage (Swin...)."""
        return self.has_token_grid or self.has_stage_attention

    @classmethod
    def of_entry(cls, entry) -> Capabilities:
        """The capabilities a catalog entry (models.backends.KnownModel) declares."""
        return cls(entry.has_text, entry.has_token_grid, entry.has_feature_maps, entry.has_stage_attention)


def capabilities(model_id: str) -> Capabilities | None:
    """The capabilities of an id: from its catalog entry, else by loading it (the launcher's models are loaded at
    start-up anyway); None when it cannot be loaded now (it is then offered in every picker)."""
    entry = next((m for m in catalog_models() if m.id == model_id), None)
    if entry is not None:
        return Capabilities.of_entry(entry)
    try:
        model = load_model(model_id)
    except Exception:  # noqa: BLE001 - reported when the user picks it
        return None
    return Capabilities(model.has_text, has_token_grid(model), model.has_feature_maps, has_stage_attention(model))


def picker_choices(picker: str, extra: list[str]) -> list[str]:
    """Ids offered by one picker: the user's --model ids that fit, then bundled models, then real checkpoints."""
    wanted = PICKERS[picker][1]
    fitting = [i for i in extra if (found := capabilities(i)) is None or getattr(found, wanted)]
    known = [m.id for m in catalog_models() if getattr(Capabilities.of_entry(m), wanted)]
    return list(dict.fromkeys(fitting + known))


def default_ids(extra_models: list[str]) -> dict[str, str]:
    """The model each picker starts on: the first --model id that fits the picker, else the bundled default."""
    chosen = {}
    for picker in PICKERS:
        choices = picker_choices(picker, extra_models)
        fitting = [i for i in extra_models if i in choices]
        chosen[picker] = fitting[0] if fitting else DEFAULTS[picker]
    return chosen


def describe_capabilities(model) -> str:
    """What the loaded model offers, in words."""
    attention = "attention per stage" if has_stage_attention(model) else "attention"
    parts = [name for name, has in (("a text tower", model.has_text), (attention, model.has_attention),
                                    ("feature maps", model.has_feature_maps)) if has]
    return ", ".join(parts) or "no attention or feature maps"


@user_errors
def load_picked(model_id: str, progress: gr.Progress = gr.Progress()) -> str:
    """Load the picked model (once; it stays cached) and say what it is."""
    model_id = (model_id or "").strip()
    if not model_id:
        return ""
    progress(0.2, desc=f"Loading {model_id}")
    start = time.perf_counter()
    model = load_model(model_id)
    seconds = time.perf_counter() - start
    return (f"Loaded **{model_id}**: {describe_capabilities(model)}, {model.num_parameters:,} parameters, on "
            f"{model.device} ({seconds:.1f} s).")


def pick_example(event: gr.SelectData) -> tuple[str, str]:
    """A click on an example thumbnail: that example becomes the shared image (and the image source, its name)."""
    name = example_names()[event.index]
    return example_path(name), name


def build_shared_inputs(extra_models: list[str]) -> SharedInputs:
    """Create the shared image (an example preselected), the example thumbnails with captions and the three model
    pickers, in a sidebar that stays in view beside every tab (call inside the Blocks).

    ``extra_models`` (the launcher's --model ids) come first in every picker and become the defaults where they fit.
    """
    with gr.Sidebar(width=SIDEBAR_WIDTH, open=True, elem_id="cs-shared"):
        image = ImageInput(value=example_path(DEFAULT_EXAMPLE), type="filepath", image_mode=None, height=220,
                           sources=["upload", "clipboard"],
                           label="Image, shared by every tab (upload, paste or pick an example; click it to "
                                 "pick a patch or a receptive-field unit)")
        examples = gr.Gallery([(example_path(n), caption) for n, caption in CAPTIONS.items()],
                              label="Examples (click one)", columns=3, rows=2, height=176, allow_preview=False,
                              object_fit="cover", buttons=[], elem_id="cs-examples")
        source = gr.Textbox(DEFAULT_EXAMPLE, visible="hidden", label="Image source", elem_id="cs-image-source")
        pickers = {}
        defaults = default_ids(extra_models)
        for picker, (label, *_) in PICKERS.items():
            pickers[picker] = gr.Dropdown(labelled_choices(picker_choices(picker, extra_models)),
                                          value=defaults[picker], allow_custom_value=True, label=label)
        status = gr.Markdown(typing_hint(), elem_id="cs-status")
    for picker in pickers.values():
        picker.change(load_picked, picker, status, api_name=False, concurrency_limit=2)
    examples.select(pick_example, None, [image, source], api_name=False)
    image.upload(lambda: "upload", None, source, api_name=False)
    image.upload(check_upload, image, [image, status], preprocess=False, api_name=False, show_progress="hidden")
    image.clear(lambda: "", None, source, api_name=False)
    return SharedInputs(image=image, pickers=pickers, status=status, source=source)
