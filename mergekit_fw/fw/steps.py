"""Step rules and the Frank-Wolfe gap.

A rule returns gamma in [0, 1] for the step theta + gamma (s - theta). Rules get a
callable that evaluates the calibration loss at a given gamma (one forward pass over the
calibration set, no gradient), the loss f0 at gamma = 0, and what the gradient already says
about the line: its slope <g, d> at gamma = 0 (minus the FW gap for a vanilla step; None
where the step is not linear in gamma's direction, e.g. merge_fn ties / dare) and the
previous iteration's gamma.
"""

from __future__ import annotations

import math
from collections.abc import Callable

LossAt = Callable[[float], float]


def fw_gap(current_dot: float, picked_dot: float) -> float:
    """<-g, s - theta>: an upper bound on f(theta) - min f for the exact (inner) LMO."""
    return current_dot - picked_dot


class ScheduleStep:
    """gamma_t = step_size * 2 / (t + 2), the classic FW schedule used by the authors."""

    def __init__(self, step_size: float):
        self.step_size = step_size

    def choose(self, t: int, f0: float, loss_at: LossAt, slope=None, previous=None) -> float:
        return min(1.0, self.step_size * 2.0 / (t + 2))


class ConstantStep:
    def __init__(self, step_size: float):
        self.step_size = step_size

    def choose(self, t: int, f0: float, loss_at: LossAt, slope=None, previous=None) -> float:
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

    def choose(self, t: int, f0: float, loss_at: LossAt, slope=None, previous=None) -> float:
        return self.search(f0, loss_at, {0.0: f0}, 1.0)

    def search(self, f0: float, loss_at: LossAt, seen: dict[float, float], gamma: float):
        """Halve from `gamma` until bracketed, then golden section; `seen` holds losses
        already known (shared with QuadraticStep's fallback, so none is evaluated twice)."""

        def f(gamma: float) -> float:
            if gamma not in seen:
                seen[gamma] = loss_at(gamma)
            return seen[gamma]

        best = None
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


class QuadraticStep:
    """A safeguarded quadratic fit of the loss along d: two forward passes, usually.

    f(0) and its slope f'(0) = <g, d> come free with the gradient, so one more loss f(g1)
    at a trial step g1 (twice the previous step, capped at 1; 1 at first) fits
    q(gamma) = f0 + slope gamma + a gamma^2. If f(g1) < f0, q's minimiser is evaluated too
    and the lower of the two wins; when that minimiser is no better than g1 (the loss is not
    a parabola there), the parabola through the three losses gives one more point. If
    f(g1) >= f0, the step backtracks to q's minimiser, kept within [0.1, 0.5] of the last
    step (Armijo backtracking with quadratic interpolation, Nocedal & Wright 3.5), until a
    step lowers the loss or `evals` passes are spent, so the loss never rises. Without a
    descent slope (merge_fn ties / dare) it is `LineSearch`.
    """

    def __init__(self, evals: int = 10):
        self.evals = evals
        self.fallback = LineSearch(evals)

    def choose(self, t: int, f0: float, loss_at: LossAt, slope=None, previous=None) -> float:
        seen = {0.0: f0}
        if slope is None or not slope < 0.0 or not math.isfinite(slope):
            return self.fallback.search(f0, loss_at, seen, 1.0)
        gamma = min(1.0, 2.0 * previous) if previous else 1.0
        while len(seen) <= self.evals:
            seen[gamma] = value = loss_at(gamma)
            if not math.isfinite(value):
                gamma *= 0.5
                continue
            fitted = minimiser(f0, slope, gamma, value)
            if value < f0:
                if len(seen) == 2 and not near(fitted, seen):  # the first trial: refine once
                    seen[fitted] = loss_at(fitted)
                    if seen[fitted] >= value:  # not a parabola: one fit through 3 losses
                        third = three_point_minimiser(f0, gamma, value, fitted, seen[fitted])
                        if third is not None and not near(third, seen):
                            seen[third] = loss_at(third)
                break
            gamma = min(max(fitted, 0.1 * gamma), 0.5 * gamma)
        return min(seen, key=lambda g: (seen[g], g))


def near(gamma: float, seen: dict[float, float]) -> bool:
    """A step within rounding of one already evaluated: the fit landed on the trial (e.g.
    gamma = 1 - 1e-16 for a trial at 1), so its pass is skipped and the exact step kept
    (an away step at its largest size must drop its vertex to exactly 0)."""
    return any(abs(gamma - g) <= 1e-9 * max(g, gamma) for g in seen)


def three_point_minimiser(f0: float, g1: float, f1: float, g2: float, f2: float):
    """argmin of the parabola through (0, f0), (g1, f1), (g2, f2), if it is convex and its
    minimiser lies in (0, 1]; else None."""
    a = ((f2 - f0) / g2 - (f1 - f0) / g1) / (g2 - g1)
    if not a > 0.0:
        return None
    b = (f1 - f0) / g1 - a * g1
    best = -b / (2.0 * a)
    return best if 0.0 < best <= 1.0 else None


def minimiser(f0: float, slope: float, gamma: float, value: float) -> float:
    """argmin over [0, 1] of the parabola through (0, f0) with slope `slope` and through
    (gamma, value); 1 where it is not convex (the loss falls at least linearly)."""
    curvature = (value - f0 - slope * gamma) / (gamma * gamma)
    return 1.0 if curvature <= 0.0 else min(1.0, -slope / (2.0 * curvature))


def make_step_rule(name: str, step_size: float, line_search_evals: int):
    if name == "quadratic":
        return QuadraticStep(line_search_evals)
    if name == "line_search":
        return LineSearch(line_search_evals)
    if name == "schedule":
        return ScheduleStep(step_size)
    if name == "constant":
        return ConstantStep(step_size)
    raise ValueError(f"unknown step rule {name!r}")
