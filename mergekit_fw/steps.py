"""Step rules and the Frank-Wolfe gap.

A rule returns gamma in [0, 1] for the step theta + gamma (s - theta). Line search gets a
callable that evaluates the calibration loss at a given gamma (no gradient needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable


def fw_gap(current_dot: float, picked_dot: float) -> float:
    """<-g, s - theta>: an upper bound on f(theta) - min f for the exact (inner) LMO."""
    return current_dot - picked_dot


class ScheduleStep:
    """gamma_t = step_size * 2 / (t + 2), the classic FW schedule used by the authors."""

    def __init__(self, step_size: float):
        self.step_size = step_size

    def choose(self, t: int, f0: float, loss_at: Callable[[float], float]) -> float:
        return min(1.0, self.step_size * 2.0 / (t + 2))


class ConstantStep:
    def __init__(self, step_size: float):
        self.step_size = step_size

    def choose(self, t: int, f0: float, loss_at: Callable[[float], float]) -> float:
        return min(1.0, self.step_size)


class LineSearch:
    """Golden-section search of the loss on [0, 1]; never returns a gamma that raises it.

    gamma = 1 is tried first (FW often wants the whole vertex early on); the best of all
    evaluated points, and of gamma = 0 with the known loss f0, wins. Ties go to the smaller
    step, so a flat direction is not taken.
    """

    def __init__(self, evals: int = 10):
        self.evals = evals

    def choose(self, t: int, f0: float, loss_at: Callable[[float], float]) -> float:
        seen = {0.0: f0, 1.0: loss_at(1.0)}
        inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
        a, b = 0.0, 1.0
        c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
        fc, fd = loss_at(c), loss_at(d)
        seen[c], seen[d] = fc, fd
        for _ in range(self.evals - 3):
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - inv_phi * (b - a)
                fc = seen[c] = loss_at(c)
            else:
                a, c, fc = c, d, fd
                d = a + inv_phi * (b - a)
                fd = seen[d] = loss_at(d)
        return min(seen, key=lambda gamma: (seen[gamma], gamma))


def make_step_rule(name: str, step_size: float, line_search_evals: int):
    if name == "line_search":
        return LineSearch(line_search_evals)
    if name == "schedule":
        return ScheduleStep(step_size)
    if name == "constant":
        return ConstantStep(step_size)
    raise ValueError(f"unknown step rule {name!r}")
