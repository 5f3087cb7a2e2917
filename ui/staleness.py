"""Which figures still match the inputs: each tab keeps the signature of the model and image it analysed, and when
the shared image or a picker changes, a tab whose figures were drawn from other inputs clears them and says so
(so an export, which reads the figures as they are, only ever holds figures of the current inputs)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import gradio as gr
from gradio.components import Component
from PIL import Image

from ui.errors import user_errors
from ui.sessions import STORE

STALE = ("**Stale: the image or model changed** since this tab's figures were drawn, so they were cleared. "
         "Press **Analyse** to draw them for the current inputs.")


def inputs_signature(model_id: str | None, image: Image.Image | None) -> tuple[str, str] | None:
    """What a tab's figures were drawn from: the model id and a digest of the image's pixels (None: no image)."""
    if image is None:
        return None
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return (model_id or "").strip(), digest.hexdigest()


def is_current(state: dict | None, model_id: str | None, image: Image.Image | None) -> bool:
    """Were the tab's stored figures (``state``, with its ``inputs`` signature) drawn from these inputs? A tab
    with nothing drawn counts as current (nothing to clear)."""
    if state is None or "inputs" not in state:
        return True
    return state["inputs"] == inputs_signature(model_id, image)


PRESS_AGAIN = ("**Stale: the image or model changed** since these figures were drawn, so they were cleared. Press "
               "the button again to draw them for the current inputs.")


def clear_on_change(triggers: Sequence[Component], figures: Sequence[Component], note: Component) -> None:
    """For figures a button draws: when the shared image or a model they were drawn with changes (``triggers``),
    clear them and say so in ``note`` (which the button's next answer overwrites), so that nothing on the page, nor
    in an export, shows figures of other inputs."""
    def clear() -> list:
        return [PRESS_AGAIN, *[None] * len(figures)]

    for trigger in triggers:
        trigger.change(clear, None, [note, *figures], api_name=False, show_progress="hidden", queue=False)


def clear_when_stale(key: str, model_id: Component, image: Component, note: Component,
                     figures: Sequence[Component], texts: Sequence[Component] = ()) -> None:
    """For a tab that keeps what it analysed under ``key`` (a state with an ``inputs`` signature): when the image
    or the model changes to something else, drop that state, clear its ``figures`` and ``texts`` and put
    :data:`STALE` in ``note``; a change back to the same inputs (e.g. a link restored on load) clears nothing."""
    @user_errors
    def clear_if_stale(model: str, picture, request: gr.Request):
        if is_current(STORE.peek(request, key), model, picture):
            return [gr.skip()] * (1 + len(texts) + len(figures))
        STORE.put(request, key, None)
        return [STALE, *[""] * len(texts), *[None] * len(figures)]

    for changed in (image, model_id):
        changed.change(clear_if_stale, [model_id, image], [note, *texts, *figures], api_name=False)
