"""Offline detection: fail in seconds with a useful message instead of hanging on a download."""
from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

import torch

from models.errors import ClipscopeModelError, ModelUnavailableOfflineError

_PROBE_TTL_S = 60.0
_last_probe: dict[str, tuple[float, bool]] = {}


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Can a TCP connection to host:port open within ``timeout`` seconds (cached for a minute)?"""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("CLIPSCOPE_OFFLINE") == "1":
        return False
    now = time.monotonic()
    cached = _last_probe.get(host)
    if cached and now - cached[0] < _PROBE_TTL_S:
        return cached[1]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            reachable = True
    except OSError:
        reachable = False
    _last_probe[host] = (now, reachable)
    return reachable


def cache_locations() -> str:
    """Where downloaded weights are kept, for error messages."""
    from huggingface_hub import constants

    return f"Hugging Face cache {constants.HF_HUB_CACHE}, torch hub cache {torch.hub.get_dir()}"


@contextlib.contextmanager
def download_guard(model_id: str, host: str = "huggingface.co") -> Iterator[None]:
    """Run a loader that may download. Offline, use only cached files and turn failures into a clear error."""
    from huggingface_hub import constants

    online = host_reachable(host)
    previous = constants.HF_HUB_OFFLINE
    if not online:
        constants.HF_HUB_OFFLINE = True  # huggingface_hub then reads the local cache and never waits on the network
    try:
        yield
    except ClipscopeModelError:
        raise
    except Exception as exc:
        if online:
            raise
        raise ModelUnavailableOfflineError(
            f"Model {model_id!r} is not on this machine and {host} cannot be reached, so it cannot be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}). "
            f"What to do: load it once on a machine with network and copy its cache here ({cache_locations()}), "
            "or save it to a directory and pass that directory as the model id. The bundled models "
            "(bundled:mini-clip, bundled:mini-vit, bundled:mini-cnn) always work offline."
        ) from exc
    finally:
        constants.HF_HUB_OFFLINE = previous
