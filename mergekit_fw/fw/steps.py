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
    """Minimise the loss over gamma in [0, 1]: halving bracket, then golden section.

    gamma = 1, 1/2, 1/4, ... are tried until the loss falls below f0 and then stops falling,
    which brackets the best step even when it is small (a plain golden section on [0, 1]
    never tries a step below ~0.09 and so stalls on losses that only allow small steps).
    The remaining evaluations refine the bracket. The best evaluated point wins, or gamma = 0
    with the known loss f0, so the loss never rises; ties go to the smaller step.
    """

    def __init__(self, evals: int = 10):
        self.evals = evals

    def choose(self, t: int, f0: float, loss_at: Callable[[float], float]) -> float:
        seen = {0.0: f0}

        def f(gamma: float) -> float:
            if gamma not in seen:
                seen[gamma] = loss_at(gamma)
            return seen[gamma]

        best, gamma = None, 1.0
        while len(seen) <= self.evals:
            value = f(gamma)
            if value < f0 and (best is None or value < seen[best]):
                best = gamma  # still improving as the step shrinks
            elif best is not None:
                break  # worse than the larger step: the minimum is bracketed
            gamma /= 2.0
        if best is not None:
            inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
            a, b = best / 2.0, min(1.0, best * 2.0)
            c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
            while len(seen) <= self.evals:
                if f(c) < f(d):
                    b, d = d, c
                    c = b - inv_phi * (b - a)
                else:
                    a, c = c, d
                    d = a + inv_phi * (b - a)
        return min(seen, key=lambda g: (seen[g], g))


def make_step_rule(name: str, step_size: float, line_search_evals: int):
    if name == "line_search":
        return LineSearch(line_search_evals)
    if name == "schedule":
        return ScheduleStep(step_size)
    if name == "constant":
        return ConstantStep(step_size)
    raise ValueError(f"unknown step rule {name!r}")
