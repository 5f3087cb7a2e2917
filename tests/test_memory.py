"""Out-of-memory back-off: the batch is split until it fits, results stay in order, one item too many is an error."""
from __future__ import annotations

import pytest
import torch

from models.errors import ModelOutOfMemoryError
from models.memory import run_with_backoff
from ui.errors import user_errors


def fits(limit: int, calls: list[int]):
    def function(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        if len(batch) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return batch * 2
    return function


def test_a_batch_that_does_not_fit_is_split_until_it_does():
    calls: list[int] = []
    batch = torch.arange(10.0)
    assert torch.equal(run_with_backoff(fits(3, calls), batch), batch * 2)
    assert calls[0] == 10 and max(c for c in calls[1:]) <= 5 and min(calls) >= 2


def test_one_item_that_does_not_fit_is_a_clear_error():
    with pytest.raises(ModelOutOfMemoryError, match="single image"):
        run_with_backoff(fits(0, []), torch.arange(4.0))


def test_the_app_turns_an_out_of_memory_error_into_a_message():
    import gradio as gr

    @user_errors
    def handler():
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(gr.Error, match="ran out of memory"):
        handler()
