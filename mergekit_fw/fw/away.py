"""Away and pairwise steps (Lacoste-Julien & Jaggi 2015), per block, from the LMO's scores.

Vanilla FW moves theta toward the LMO's vertex s, so a vertex it once picked (or the start)
only ever decays by (1 - gamma); it never leaves the merge. The active set of each block is
already in the loop's coefficient matrix (vertices with weight > 0), and the score pass has
scored every vertex, so the away vertex a = argmax over the active set of the same LMO
score costs no extra read of the pool:

- away: if the away gap <g, a - theta> beats the FW gap <g, theta - s>, step along
  theta - a (weight moves off a onto the rest of the active set), else a FW step;
- pairwise: step along s - a (weight moves from a straight to s).

A block is one tensor (`granularity: tensor`) or the whole model (`granularity: model`).
Each block's direction is scaled by its largest feasible step (alpha_a / (1 - alpha_a) for
away, alpha_a for pairwise, 1 for FW), so the loop's one gamma in [0, 1] is the fraction of
every block's maximal step: line search works unchanged, and gamma = 1 is a drop step that
sets a's weight to exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FW, AWAY, PAIRWISE = "fw", "away", "pairwise"
ACTIVE = 1e-12  # a weight above this is in the active set


@dataclass
class BlockStep:
    """What one row (tensor) does this iteration: d = scale * (to - frm)."""

    kind: str  # fw: s - theta | away: theta - a | pairwise: s - a
    toward: int  # s (fw, pairwise); -1 for away
    away: int  # a (away, pairwise); -1 for fw
    scale: float  # the block's largest feasible step


def blocks_of(rows: int, granularity: str) -> list[list[int]]:
    return [list(range(rows))] if granularity == "model" else [[i] for i in range(rows)]


def choose_steps(
    mode: str,
    scores: torch.Tensor,
    dots: torch.Tensor,
    current: torch.Tensor,
    coefficients: torch.Tensor,
    picks: list[int],
    granularity: str,
) -> list[BlockStep]:
    """One BlockStep per row. scores: the LMO's [L, n]; dots, current: <g, v>, <g, theta>."""
    steps: list[BlockStep] = [BlockStep(FW, p, -1, 1.0) for p in picks]
    if mode == "vanilla":
        return steps
    for block in blocks_of(len(picks), granularity):
        weight = coefficients[block].min(dim=0).values  # a block's alpha_v: its smallest row
        active = (coefficients[block] > ACTIVE).all(dim=0)
        if not bool(active.any()):
            continue
        block_scores = scores[block].sum(dim=0)
        masked = torch.where(active, block_scores, torch.full_like(block_scores, -torch.inf))
        a = int(torch.argmax(masked))  # first of tied maxima: deterministic
        s = picks[block[0]]
        alpha = float(weight[a])
        fw_gap = float(current[block].sum() - dots[block, s].sum())
        away_gap = float(dots[block, a].sum() - current[block].sum())
        if mode == "away":
            if away_gap > fw_gap and alpha < 1.0 - ACTIVE:
                step = BlockStep(AWAY, -1, a, alpha / (1.0 - alpha))
            else:
                continue
        elif mode == "pairwise":
            if a == s:
                continue  # s is already the worst active vertex: a FW step
            step = BlockStep(PAIRWISE, s, a, alpha)
        else:
            raise ValueError(f"unknown fw_steps {mode!r}")
        for i in block:
            steps[i] = step
    return steps


def update_coefficients(coefficients: torch.Tensor, steps: list[BlockStep], gamma: float):
    """c after theta + gamma * d, row by row; gamma = 1 drops the away vertex to exactly 0."""
    for i, st in enumerate(steps):
        row = coefficients[i]
        if st.kind == FW:
            row.mul_(1.0 - gamma)
            if st.toward >= 0:  # not the origin (zero_vertex)
                row[st.toward] += gamma
            continue
        eta = gamma * st.scale
        if st.kind == AWAY:
            row.mul_(1.0 + eta)
            row[st.away] -= eta
        else:
            row[st.toward] += eta
            row[st.away] -= eta
        if gamma >= 1.0:
            row[st.away] = 0.0  # a drop step: exactly, not up to rounding


def counts(steps: list[BlockStep]) -> dict[str, int]:
    out: dict[str, int] = {}
    for st in steps:
        out[st.kind] = out.get(st.kind, 0) + 1
    return out
