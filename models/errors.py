"""Precise exceptions raised by model loading and capture.

Each one names the model id and says what the user can do, so the app can show the message as-is.
"""
from __future__ import annotations


class ClipscopeModelError(Exception):
    """Base class for every model-related error clipscope raises on purpose."""


class ModelIdError(ClipscopeModelError, ValueError):
    """The model id is malformed, uses an unknown backend, or names an unknown bundled model."""


class UnknownArchitectureError(ClipscopeModelError, ValueError):
    """The backend was found but does not know (or clipscope cannot adapt) this architecture."""


class ModelUnavailableOfflineError(ClipscopeModelError, RuntimeError):
    """The weights are not on this machine and cannot be downloaded right now."""


class CaptureError(ClipscopeModelError, KeyError):
    """A capture asked for a hook name the model does not have, or a value it did not record."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ModelOutOfMemoryError(ClipscopeModelError, RuntimeError):
    """Even one image at a time does not fit in the device's memory."""


class ModelNotAllowedError(ClipscopeModelError, PermissionError):
    """The app was started with a locked model list (``--lock-models``) and this id is not on it."""


class PickledWeightsError(ClipscopeModelError, ValueError):
    """A local folder holds its weights only as pickles (.bin, .pt, .pth, .ckpt, .pkl), which clipscope refuses."""
