"""`init: auto`'s data-driven starts: each candidate alone, then task arithmetic over the
candidates that gained alone, equally and weighted by their gains.

Uniform task arithmetic gives an irrelevant candidate the lambda of a relevant one, so in a
pool of many irrelevant models its best lambda is small and its start poor (real tier,
all8: lambda 0.1, calibration loss 10.17, while the 4 targets alone reach 3.87). Screening
scores each candidate alone at p = 0.3 (`PROBE`: init_scale's default), base + p tau_i,
and keeps its gain over the base, g_i = f(base) - f(base + p tau_i). Two screened lines
follow, each base + lam * sum_i w_i tau_i on task arithmetic's lambda grid (lam: the best
candidate's weight):

    helpful:        w_i = 1 if g_i > 0 else 0
    gain-weighted:  w_i = max(0, g_i) / max_j g_j

A candidate that helps a little at small steps but hurts at p (a foreign task's adapter)
drops out; a first-order ranking by -<grad f, tau_i> keeps it (docs/starts.md gives the
measurements). Neither line wins everywhere: on the real tier's all8 the gain-weighted
one does (3.84 against 4.01), on the test zoo the helpful one. Each candidate alone is
itself a start of the table.

Cost: n + 12 forward passes at most, one read of the pool for the candidates alone (tau_i
is held as the line's direction in turn) and one per screened line (the helpful
candidates only).
"""

from __future__ import annotations

import torch

from mergekit_fw.fw.constraints import add_task_vector_
from mergekit_fw.fw.finite import check_vertex

PROBE = 0.3  # lambda of each candidate alone
ALONE = "{} alone lambda={}"


def screened_lines(gains: list[float]) -> list[tuple[str, list[float]]]:
    """(name, weights w_i) of the lines screening adds: `helpful`, the candidates that gain
    alone, with equal weights; `gain-weighted`, w_i = max(0, g_i) / max_j g_j. A line equal
    to the uniform one (every candidate gains alike) or to the one before is left out; none
    when no candidate gains or a gain is not a number."""
    top = max(gains, default=0.0)
    if not top > 0.0 or any(g != g for g in gains):
        return []
    lines: list[tuple[str, list[float]]] = []
    for name, weights in (
        ("helpful", [1.0 if g > 0.0 else 0.0 for g in gains]),
        ("gain-weighted", [max(0.0, g) / top for g in gains]),
    ):
        if all(w == 1.0 for w in weights) or any(weights == w for _, w in lines):
            continue
        lines.append((name, weights))
    return lines


def alone_row(k: int, p: float, n: int) -> list[float]:
    """Coefficients over [base, candidates] of base + p * tau_k (k from 1)."""
    row = [1.0 - p] + [0.0] * n
    row[k] = p
    return row


def weighted_row(lam: float, weights: list[float]) -> list[float]:
    """Coefficients over [base, candidates] of base + lam * sum_i w_i tau_i."""
    scaled = [lam * w for w in weights]
    return [1.0 - sum(scaled)] + scaled


def weighted_rows(grid, contains, line: str, weights: list[float]) -> list[tuple[str, list[float]]]:
    """(name, row) of every point of a screened line on the lambda grid (the best
    candidate's lambda) that `contains` (the run's constraint set) holds."""
    return [
        (f"{line} task_arithmetic lambda={lam}", weighted_row(lam, weights))
        for lam in grid
        if contains([lam * w for w in weights])
    ]


@torch.no_grad()
def sum_task_vectors_(
    t: torch.Tensor, pool, name: str, base: torch.Tensor, weights: list[float] | None = None
) -> torch.Tensor:
    """t = sum_i w_i tau_i for one tensor (w: all 1), one vertex read each: every start
    base + lam t is then a point of one line. A non-finite sum names its candidate (rare:
    its tensors are read again)."""
    t.zero_()
    weights = [1.0] * (len(pool) - 1) if weights is None else weights
    for k, w in enumerate(weights, start=1):
        if w != 0.0:
            add_task_vector_(pool, k, name, t, w, base)
    if not bool(torch.isfinite(t).all()):
        for k in range(1, len(pool)):
            check_vertex(pool.tensor(k, name), pool.labels[k], name)
    return t
