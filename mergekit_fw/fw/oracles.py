"""Linear minimisation oracles over the vertex set {base, candidates[, origin]}.

The pre-pass streams every vertex tensor once per iteration and keeps only scalars: the
inner products <g_l, v_l> and norms ||v_l|| per tensor l and vertex v. Oracles are pure
functions of that score table, which is what makes them cheap to test and to swap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ZERO = -1  # index of the origin vertex (`zero_vertex: true`)


@dataclass
class ScoreTable:
    """Per-tensor scalars from one streaming pass; rows are tensors, columns vertices."""

    dots: torch.Tensor  # [L, n] <g_l, v_l>
    norms: torch.Tensor  # [L, n] ||v_l||
    grad_norms: torch.Tensor  # [L] ||g_l||
    current_dots: torch.Tensor  # [L] <g_l, theta_l>


def inner_scores(table: ScoreTable) -> torch.Tensor:
    """Paper eq. 7: the raw inner product <g, v>."""
    return table.dots


def cosine_scores(table: ScoreTable) -> torch.Tensor:
    """Authors' code: <g, v> / (||g|| ||v||); 0 where either norm is 0."""
    denominator = table.grad_norms[:, None] * table.norms
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, table.dots / safe, torch.zeros_like(table.dots))


SCORES = {"inner": inner_scores, "cosine": cosine_scores}


def argmin_vertex(scores: torch.Tensor, zero_vertex: bool) -> int:
    """First minimal vertex (authors' strict `<`); the origin wins if nothing scores below 0."""
    best = int(torch.argmin(scores))  # torch returns the first of tied minima
    if zero_vertex and float(scores[best]) >= 0.0:
        return ZERO
    return best


def tensor_oracle(scores: torch.Tensor, zero_vertex: bool) -> list[int]:
    """Layer-wise LMO: one vertex per tensor (exact LMO over a product of simplices)."""
    return [argmin_vertex(row, zero_vertex) for row in scores]


def model_oracle(scores: torch.Tensor, zero_vertex: bool) -> list[int]:
    """Task-wise LMO: one vertex for the whole model, by the sum of per-tensor scores."""
    pick = argmin_vertex(scores.sum(dim=0), zero_vertex)
    return [pick] * scores.shape[0]


ORACLES = {"tensor": tensor_oracle, "model": model_oracle}
