"""The calibration problem FW minimises: one value instead of three pieces.

An objective (how a batch's loss is formed), the batches, and the names of the tasks the
batches belong to (`Batch.task` indexes them) always travel together: whoever built them
(the recipe path, the Python API) hands this one value to the start search and the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mergekit_fw.fw.objectives import Batch, LossReport, evaluate


@dataclass(frozen=True)
class CalibrationProblem:
    """f(theta): the weighted mean calibration loss of `objective` over `batches`."""

    objective: Any  # a NamedObjective (fw/objectives.py) or a CallableObjective (user_loss.py)
    batches: list[Batch]
    task_names: list[str]

    def loss(
        self, model: torch.nn.Module, *, grad: bool, desc: str = "loss", quiet: bool = False
    ) -> LossReport:
        """f at the model's current parameters (grad=True: also accumulates its gradient)."""
        return evaluate(
            model, self.objective, self.batches, self.task_names, grad=grad, desc=desc, quiet=quiet
        )

    def loss_of(self, model: torch.nn.Module) -> Callable[[], float]:
        """A quiet, gradient-free f of the model as it is when called (start scoring)."""
        return lambda: self.loss(model, grad=False, quiet=True).total
