"""Shared pieces of the benchmark report: machine description, goal verdicts and Markdown tables."""
from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages where the OS has them (other jobs on a shared machine show here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(device: str) -> dict:
    """What the figures were measured on."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": device, "gpu": gpu, "load_average": load_average(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def machine_line(machine: dict) -> str:
    """One Markdown line describing the machine."""
    load, after = machine.get("load_average"), machine.get("load_average_after")
    load_text = f", load average {' / '.join(str(x) for x in load)} (1/5/15 min) before the run" if load else ""
    if load and after:
        load_text += f", {' / '.join(str(x) for x in after)} after it"
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    return (f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads{gpu}; "
            f"device {machine['device']}; torch {machine['torch']}, Python {machine['python']}; "
            f"{machine['date']}{load_text}.")


def verdict(value: float | None, goal: str, target: float) -> str:
    """"pass" or "miss" for ``value`` against a goal ``"<="``, ``"<"`` or ``">="`` target ("n/a" without a value)."""
    if value is None:
        return "n/a"
    ok = {"<=": value <= target, "<": value < target, ">=": value >= target}[goal]
    return "pass" if ok else "miss"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats keep the precision the caller formatted them with (pass strings for that)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
