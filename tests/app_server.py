"""The real app in a subprocess on a free local port, for HTTP-API and browser tests (the launcher the benchmarks
use; here the URL also carries the server's process id)."""
from __future__ import annotations

from contextlib import contextmanager

from benchmarks.app_server import ROOT
from benchmarks.app_server import running_app as _running_app

__all__ = ["ROOT", "AppURL", "running_app"]


class AppURL(str):
    """The app's base URL, carrying the server's process id (for memory measurements)."""

    pid: int


@contextmanager
def running_app(*args: str, timeout: float = 180.0):
    """Yield the base URL of ``python app.py ARGS`` once it answers (an AppURL: ``.pid`` is the server process);
    stop it afterwards."""
    with _running_app(*args, timeout=timeout) as (url, process):
        served = AppURL(url)
        served.pid = process.pid
        yield served
