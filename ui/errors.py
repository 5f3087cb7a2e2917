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
