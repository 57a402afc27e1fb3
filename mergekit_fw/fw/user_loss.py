"""A user's loss function as an objective of the loop (the Python API's `loss=` callable).

`loss(model, batch)` returns the mean loss of one batch; `loss(model, batch, task)` also
gets the batch's task name, which is how per-task frozen heads (the CLIP setting: one head
per task over a shared, merged encoder) reach the loss. Each batch counts once: a task's
loss is the mean of its batch losses, and the tasks weigh equally (data/user_batches.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch


def takes_task(fn: Callable) -> bool:
    """Whether `fn` accepts a third positional argument (the task name)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins / C callables: assume the two-argument form
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


class CallableObjective:
    """Objective over `UserBatch`es: batch_loss_sum is the user's loss of that batch."""

    needs_labels = False

    def __init__(self, fn: Callable[..., torch.Tensor], task_names: list[str]):
        self.fn = fn
        self.task_names = task_names
        self.with_task = takes_task(fn)
        self.name = f"callable:{getattr(fn, '__name__', type(fn).__name__)}"

    def batch_loss_sum(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if self.with_task:
            return self.fn(model, batch.data, self.task_names[batch.task])
        return self.fn(model, batch.data)
