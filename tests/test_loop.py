"""The loop's construction: everything `run()` starts from is a constructor keyword.

Toy: vertices v0 = (0, 1), v1 = (-1, 0), v2 = (1, 0); loss ||theta - target||^2.
"""

from __future__ import annotations

import torch

from mergekit_fw.fw.loop import FrankWolfe, Slot
from mergekit_fw.fw.objectives import Batch
from mergekit_fw.fw.start_grid import set_combination, ta_row
from mergekit_fw.settings import FWSettings
from tests.helpers import Distance, Pool, Vector

V = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])]
TARGET = torch.tensor([0.3, 0.2])


class CountingPool(Pool):
    """A pool that counts its tensor reads."""

    def __init__(self, vertices):
        super().__init__(vertices)
        self.reads = 0

    def tensor(self, k, name):
        self.reads += 1
        return super().tensor(k, name)


def run(start_row, start_formed=False, theta=None, **options):
    """(plan, tensor reads before the first iteration, records seen by on_iteration)."""
    model = Vector(V[0] if theta is None else theta)
    pool = CountingPool(V)
    dummy = torch.zeros(1, 1, dtype=torch.long)
    settings = FWSettings(calibration="x", iterations=3, constraint="hull", **options)
    seen: list[int] = []
    loop = FrankWolfe(
        model, [Slot("w", model.w)], pool, Distance([TARGET]),
        [Batch(0, dummy, dummy, dummy, 1.0, 1)], ["t"], settings, quiet=True,
        start_row=start_row, start_formed=start_formed,
        on_iteration=lambda loop, history, stop: seen.append(history[-1].t),
    )  # fmt: skip
    before_first: list[int] = []
    iteration = loop.iteration

    def counted(t):
        if t == 0:
            before_first.append(pool.reads)
        return iteration(t)

    loop.iteration = counted
    return loop.run(), before_first[0], seen


def formed(row: list[float]) -> torch.Tensor:
    """theta_0 formed outside the loop (as the start grid does), by set_combination."""
    theta = torch.empty(2)
    return set_combination(theta, Pool(V), "w", row)


def same_run(a, b) -> None:
    assert a.coefficients == b.coefficients and a.start_row == b.start_row
    assert a.final_loss == b.final_loss
    assert [(r.loss, r.gap, r.gamma, r.picks) for r in a.iterations] == [
        (r.loss, r.gap, r.gamma, r.picks) for r in b.iterations
    ]


def test_a_formed_start_is_not_read_again_and_gives_the_same_plan():
    row = ta_row(0.3, 2)
    plan, reads, seen = run(row)
    assert reads == len(V)  # the loop formed theta_0: one read per vertex of the row
    formed_plan, formed_reads, formed_seen = run(row, start_formed=True, theta=formed(row))
    assert formed_reads == 0
    same_run(plan, formed_plan)
    assert seen == formed_seen == [r.t for r in plan.iterations]
    assert plan.coefficients["w"] != row  # the run moved off the start


def test_a_formed_start_is_formed_again_under_ties():
    # the write phase's replay re-forms theta_0 with set_combination; the loop must match it
    row = ta_row(0.3, 2)
    _, reads, _ = run(row, start_formed=True, theta=torch.zeros(2), merge_fn="ties")
    assert reads == len(V)
