"""Turning exceptions into messages a user can act on, without a stack trace on the page."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import gradio as gr
import torch

from models.errors import ClipscopeModelError
from models.memory import free_cached_memory

log = logging.getLogger("clipscope")


def user_errors(handler: Callable) -> Callable:
    """Run an event handler; expected failures become gr.Error with their own message, others a short notice."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except (ClipscopeModelError, ValueError, TypeError, OSError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except torch.OutOfMemoryError:
            free_cached_memory()
            raise gr.Error("The GPU ran out of memory for this request. Try again when other work has finished, "
                           "use a smaller model or image, or start the app with --device cpu.",
                           print_exception=False) from None
        except Exception as exc:  # keep serving; the details go to the server log
            log.exception("Unexpected error in %s", handler.__name__)
            raise gr.Error(f"Unexpected error ({type(exc).__name__}): {exc}", print_exception=False) from None
    return wrapped


CONTROLS = (gr.Dropdown, gr.Slider, gr.Number, gr.Radio, gr.Checkbox, gr.CheckboxGroup, gr.Textbox)


def figures_only(outputs: list) -> list:
    """The outputs an event may mark with its progress and errors (``show_progress_on=``): all but the controls.

    Gradio draws a failed event's "Error" badge over every output it marks; a Layer dropdown or a slider replaced
    by that badge can no longer be used. Passing ``show_progress_on=figures_only(outputs)`` keeps the badge on the
    figures and texts, and the controls as they were (the error itself still shows as a message).
    """
    return [output for output in outputs if not isinstance(output, CONTROLS)]
