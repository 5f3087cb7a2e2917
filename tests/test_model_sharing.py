"""One loaded model shared by many threads (the app's users): a capture never records another thread's forward."""
from __future__ import annotations

import threading

import torch

from models import load_model


def test_captures_and_forwards_from_many_threads_do_not_mix():
    model = load_model("bundled:mini-cnn", device="cpu")
    size = model.preprocess.size
    inputs = [torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with model.capture(["stages.1"]) as cache:
        references = []
        for pixels in inputs:
            model.forward(pixels)
            references.append(cache["stages.1"].clone())
    failures: list[str] = []

    def capture_loop(index: int) -> None:
        for _ in range(15):
            with model.capture(["stages.1"]) as cache:
                model.forward(inputs[index])
                if not torch.equal(cache["stages.1"], references[index]):
                    failures.append(f"capture {index} recorded another thread's forward")

    def forward_loop(index: int) -> None:
        for _ in range(30):
            model.forward(inputs[index])

    threads = [threading.Thread(target=capture_loop, args=(i,)) for i in (0, 1)]
    threads += [threading.Thread(target=forward_loop, args=(i,)) for i in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert all(not m._forward_hooks for m in model.module.modules())
