"""Start the real app (``python app.py``) in a subprocess on a free local port, and wait for it to go idle."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(*args: str, timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yield (base URL, process) of ``python app.py --port P ARGS`` once it answers; stop it afterwards."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *args], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)

        def tail() -> str:
            log.seek(0)
            return log.read()[-3000:]

        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"app exited early:\n{tail()}")
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"app did not answer in {timeout}s:\n{tail()}") from None
                    time.sleep(0.5)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used (Linux /proc), or None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, timeout: float, busy_cores: float = 0.15, interval: float = 1.0) -> float:
    """Wait until the process uses less than ``busy_cores`` over ``interval`` (e.g. the app's start-up UMAP
    warm-up has finished) or ``timeout`` passes; returns the seconds waited."""
    start = time.monotonic()
    last = cpu_seconds(pid)
    while last is not None and time.monotonic() - start < timeout:
        time.sleep(interval)
        now = cpu_seconds(pid)
        if now is None or (now - last) / interval < busy_cores:
            break
        last = now
    return time.monotonic() - start
