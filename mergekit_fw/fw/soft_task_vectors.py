"""FW-soft over a task-vector constraint (`constraint: box | simplex`, fw/constraints.py).

Each iteration selects k task vectors tau_j (the k lowest <g, tau_j>, or one per task with
`select: per_task`) and fits the change Delta of their lambdas on the calibration loss,
theta(Delta) = theta_t + sum_j Delta_j tau_j, by the same adaptive projected gradient
descent as the hull's fit (fw/soft.py), projected onto the set: for box, lambda clamped to
[0, kappa]; for simplex, lambda projected onto {lambda >= 0, sum lambda <= kappa} (the
unselected lambdas stay as they are). Delta = 0 is theta_t, so the fit never raises the loss,
and a positive <g, tau_j> lets the fit take a task vector back out. With
`fit_granularity: model` one Delta is shared by every tensor, bounded so that each tensor
stays in the set. Memory: the model and the k selected task vectors, as for the hull.
"""

from __future__ import annotations

import torch

from mergekit_fw.fw.constraints import Vertex, add_task_vector_, task_vector_scores
from mergekit_fw.fw.loop import FrankWolfe
from mergekit_fw.fw.oracles import ScoreTable
from mergekit_fw.fw.soft import SoftFrankWolfe, add_weighted_directions, fit_coefficients


class TaskVectorSoftFrankWolfe(SoftFrankWolfe):
    """FW-soft whose vertices are task vectors and whose fit is projected onto box/simplex."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.score = self.selection_scores  # soft.py's selection ranks these

    @staticmethod
    def selection_scores(table: ScoreTable) -> torch.Tensor:
        """[L, n]: <g, tau_i> per candidate; the base (tau = 0) is never selected."""
        base = torch.full_like(table.dots[:, :1], float("inf"))
        return torch.cat([base, task_vector_scores(table)], dim=1)

    def selectable(self) -> int:
        return len(self.pool) - 1

    def exact_vertex(self, table: ScoreTable) -> Vertex:
        """The exact LMO of the set: its FW gap."""
        return self.constraint.lmo(table)

    def bounds(self, selected: torch.Tensor, per_tensor: bool):
        """Projection of Delta [rows, k] onto the set around the current lambdas (the
        set's own, `fit_projection`)."""
        return self.constraint.fit_projection(self.coefficients, selected, per_tensor)

    def fit(self, t: int, selected: torch.Tensor) -> torch.Tensor:
        """Fit Delta, then move theta and the coefficients by it. Returns Delta [L, k]."""
        s = self.settings
        k = selected.shape[1]
        with torch.no_grad():  # the k selected task vectors of each tensor in memory
            directions = [
                torch.stack([self.task_vector(int(v), slot.name) for v in row])
                for slot, row in zip(self.slots, selected)
            ]
        per_tensor = s.fit_granularity == "tensor"
        rows = len(self.slots) if per_tensor else 1
        loss_of = self.fit_loss(directions, per_tensor)

        delta, _ = fit_coefficients(
            loss_of, rows, k, simplex=True, steps=s.inner_steps, lr=s.inner_lr or 1.0,
            init=0.0, quiet=self.quiet, project=self.bounds(selected, per_tensor),
        )  # fmt: skip
        delta = delta.expand(len(self.slots), k) if not per_tensor else delta
        add_weighted_directions(self.slots, delta, directions)
        with torch.no_grad():
            self.coefficients.scatter_add_(1, selected, delta.to(self.coefficients.dtype))
            self.coefficients[:, 0] -= delta.sum(dim=1).to(self.coefficients.dtype)
        directions.clear()
        return delta

    def task_vector(self, k: int, name: str) -> torch.Tensor:
        """tau_k of one tensor (adapters from their factors)."""
        base = self.pool.tensor(0, name)
        out = torch.zeros_like(base)
        add_task_vector_(self.pool, k, name, out, 1.0, base)
        return out


def loop_class(settings):
    """The loop of a recipe: hard FW, FW-soft over the hull, or FW-soft over a task-vector set."""
    if settings.variant == "hard":
        return FrankWolfe
    return SoftFrankWolfe if settings.constraint == "hull" else TaskVectorSoftFrankWolfe
