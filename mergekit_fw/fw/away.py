"""Away and pairwise steps (Lacoste-Julien & Jaggi 2015), per block, on the hull and the box.

Vanilla FW moves theta toward the LMO's vertex s, so a vertex it once picked (or the start)
only decays by (1 - gamma) per step; it never leaves the merge. Away-step FW keeps the
iterate's active set (the atoms it is a convex combination of, with their weights) and may
instead move weight off the worst active atom a:

- away: if the away gap <g, a - theta> beats the FW gap <g, theta - s>, step along
  theta - a (weight leaves a for the rest of the active set), else a FW step;
- pairwise: step along s - a (weight moves from a straight to s).

Atoms ("corners") per constraint set, each set decomposing a coefficient row itself
(fw/constraints.py `corners`, `corner_row`):

- hull: the vertices themselves; the active set *is* the coefficient row (c_k > 0);
- box (0 <= lambda_i <= kappa): a corner is a set S of task vectors at kappa
  (base + kappa sum_{i in S} tau_i); the loop starts from a corner decomposition of its
  coefficients (the staircase one) and then tracks the corners FW adds;
- simplex (sum lambda <= kappa): the base and kappa tau_i, read off the coefficient row.

A corner's score <g, corner> is a sum of entries of the score table (<g, base>, <g, tau_i>),
so choosing a costs no extra read of the pool. A block is one tensor, or the whole model
with `granularity: model` (scores summed over its rows). Each block's direction is scaled by
its largest feasible step (alpha_a / (1 - alpha_a) for away, alpha_a for pairwise, 1 for
FW), so the loop's one gamma in [0, 1] is the fraction of every block's largest step: line
search works unchanged, and gamma = 1 is a drop step that removes a exactly (its weight,
and with it every coefficient only a carried, become exactly 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergekit_fw.fw.constraints import ACTIVE, Vertex
from mergekit_fw.settings import FWConfigError

FW, AWAY, PAIRWISE = "fw", "away", "pairwise"

Corner = frozenset  # hull: {vertex index}; box / simplex: task-vector columns at kappa


@dataclass
class BlockStep:
    """What one row (tensor) does this iteration: d = scale * (to - from)."""

    kind: str  # fw: s - theta | away: theta - a | pairwise: s - a
    away: Corner | None  # a (away, pairwise)
    scale: float  # the block's largest feasible step


def blocks_of(rows: int, granularity: str) -> list[list[int]]:
    return [list(range(rows))] if granularity == "model" else [[i] for i in range(rows)]


class ActiveSets:
    """The active set of every row, its away choice, direction vertex and update."""

    def __init__(self, constraint, coefficients: torch.Tensor, settings):
        self.constraint, self.kind = constraint, constraint.name
        self.n = coefficients.shape[1]
        self.blocks = blocks_of(coefficients.shape[0], settings.granularity)
        self.sets = [self.decompose(row) for row in coefficients]
        for i, row in enumerate(coefficients):
            if not torch.allclose(self.row_of(self.sets[i]), row, atol=1e-9, rtol=0):
                raise FWConfigError(
                    f"fw_steps: {settings.fw_steps} needs a start inside constraint: "
                    f"{self.kind} (a convex combination of its corners); this start has "
                    f"coefficients {row.tolist()}. Lower init_scale, or use fw_steps: vanilla."
                )

    # -- corners ---------------------------------------------------------------------------
    def corner_row(self, corner: Corner) -> torch.Tensor:
        return self.constraint.corner_row(sorted(corner), self.n)

    def row_of(self, weights: dict[Corner, float]) -> torch.Tensor:
        row = torch.zeros(self.n, dtype=torch.float64)
        for corner, w in weights.items():
            row += w * self.corner_row(corner)
        return row

    def decompose(self, row: torch.Tensor) -> dict[Corner, float]:
        """A convex decomposition of one coefficient row into corners (the set's own)."""
        return self.constraint.corners(row.tolist())

    def vertex_corner(self, vertex: Vertex, i: int) -> Corner:
        """The LMO's vertex of row i as a corner (hull: {k}; box/simplex: its task vectors)."""
        return Corner(vertex.members[i])

    # -- one iteration -----------------------------------------------------------------------
    def choose(self, mode: str, table, vertex: Vertex) -> list[BlockStep]:
        """One BlockStep per row, from the score table's inner products."""
        rows = len(self.sets)
        steps = [BlockStep(FW, None, 1.0) for _ in range(rows)]
        for block in self.blocks:
            weights = self.sets[block[0]]
            dots = table.dots[block].sum(dim=0)
            current = float(table.current_dots[block].sum())

            def score(corner: Corner, dots: torch.Tensor = dots) -> float:
                return float((self.corner_row(corner) * dots).sum())

            s = self.vertex_corner(vertex, block[0])
            a = max(sorted(weights, key=sorted), key=score)  # first of tied maxima
            alpha = min(self.sets[i].get(a, 0.0) for i in block)
            fw_gap, away_gap = current - score(s), score(a) - current
            if mode == "away":
                if not (away_gap > fw_gap and alpha < 1.0 - ACTIVE):
                    continue
                step = BlockStep(AWAY, a, alpha / (1.0 - alpha))
            elif mode == "pairwise":
                if a == s:
                    continue
                step = BlockStep(PAIRWISE, a, alpha)
            else:
                raise ValueError(f"unknown fw_steps {mode!r}")
            for i in block:
                steps[i] = step
        return steps

    def away_vertex(self, vertex: Vertex, steps: list[BlockStep]) -> Vertex:
        """The away corners as a Vertex, for the constraint set's direction_ (FW rows: s)."""
        rows = vertex.rows.clone()
        members = [list(m) for m in vertex.members]
        for i, st in enumerate(steps):
            if st.away is not None:
                rows[i] = self.corner_row(st.away)
                members[i] = sorted(st.away)
        return Vertex(rows, members)

    def update(
        self, coefficients: torch.Tensor, vertex: Vertex, steps: list[BlockStep], gamma: float
    ) -> None:
        """The active sets and coefficient rows after theta + gamma d."""
        for i, st in enumerate(steps):
            w = self.sets[i]
            if st.kind == FW:
                s = self.vertex_corner(vertex, i)
                for corner in w:
                    w[corner] *= 1.0 - gamma
                w[s] = w.get(s, 0.0) + gamma
            else:
                eta = gamma * st.scale
                if st.kind == AWAY:
                    for corner in w:
                        w[corner] *= 1.0 + eta
                    w[st.away] -= eta
                else:
                    s = self.vertex_corner(vertex, i)
                    w[s] = w.get(s, 0.0) + eta
                    w[st.away] -= eta
                if gamma >= 1.0:
                    w[st.away] = 0.0  # a drop step: exactly, not up to rounding
            for corner in [c for c, x in w.items() if x <= 0.0]:
                del w[corner]
            coefficients[i] = self.row_of(w)

    @staticmethod
    def counts(steps: list[BlockStep]) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in steps:
            out[st.kind] = out.get(st.kind, 0) + 1
        return out
