"""What the LMO needs from one tensor, computed over any vertex pool.

A pool is anything with `len(pool)` vertices and `pool.tensor(k, name)`; a pool that can do
better (blocked reads, factor-scored adapters: pool/vertices.py) offers `score_tensor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class VertexSource(Protocol):
    """What the loop needs of a pool: vertex 0 is the base, 1..n the candidates.

    `labels` name the vertices in logs and plans; `ids` (or `refs`, see `vertex_ids`) say
    where each one comes from. pool/vertices.py is the mergekit-backed implementation.
    """

    labels: list[str]

    def __len__(self) -> int: ...

    def tensor(self, k: int, name: str) -> torch.Tensor: ...


@dataclass
class TensorScores:
    """What the LMO needs from one tensor (vertex order: base, candidates, adapters)."""

    dots: list  # <g, v_k>
    norms: list | None  # ||v_k||, when asked for
    grad_norm: float  # ||g||
    current: float  # <g, theta>


def flat32(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().reshape(-1)
    return x if x.dtype == torch.float32 else x.float()


class Fold:
    """A predicted LMO vertex s (coefficients `row` over the pool's vertices), so that the
    scoring read itself forms d = s - theta into `out`: when the LMO then picks what was
    predicted, the direction costs no second read of the pool (fw/loop.py checks the pick
    and re-forms d when it differs). `out` may be the gradient's own buffer: a pool writes
    each part of it only after the gradient's part has been scored against every vertex.

    task_vector: d = R base - theta + sum_{k>=1} r_k (v_k - base), R = sum_k r_k (box,
    simplex: the task-vector form keeps float32 cancellation small); else (the hull)
    d = sum_k r_k v_k - theta. Vertices from `dense` on are adapters, v_k = base + delta_k:
    their base part is folded with the base, their delta_k added by the pool afterwards.
    """

    def __init__(self, row: list[float], task_vector: bool, out: torch.Tensor):
        self.row, self.task_vector, self.out = [float(r) for r in row], task_vector, out
        self.done = False  # set by the pool that formed d

    def base_weight(self, dense: int) -> float:
        if self.task_vector:
            return sum(self.row)
        return self.row[0] + sum(self.row[dense:])

    def weight(self, k: int) -> float:
        """Weight of dense vertex k >= 1 (of v_k - base in the task-vector form)."""
        return self.row[k]

    def needs_base(self, dense: int) -> bool:
        """Whether the base must stay in hand after its own turn (task-vector terms)."""
        return self.task_vector and any(self.row[k] != 0.0 for k in range(1, dense))

    def begin_(self, acc: torch.Tensor, base: torch.Tensor, theta: torch.Tensor, dense: int):
        """acc = R base - theta (written as the constraints write it, so results match)."""
        a0 = self.base_weight(dense)
        if a0 == 1.0:
            acc.copy_(base).sub_(theta)
        elif a0 == 0.0:
            acc.copy_(theta).neg_()
        else:
            acc.copy_(base).mul_(a0).sub_(theta)

    def add_(self, acc: torch.Tensor, k: int, x: torch.Tensor, base: torch.Tensor | None):
        """acc += r_k (x - base) | r_k x for dense vertex k >= 1."""
        r = self.weight(k)
        if r != 0.0:
            acc.add_(x - base if self.task_vector else x, alpha=r)


def whole_tensor_scores(
    pool, count: int, name: str, grads: list[torch.Tensor], theta, with_norms: bool,
    fold: Fold | None = None,
) -> list[TensorScores]:  # fmt: skip
    """TensorScores of vertices 0..count-1 for each gradient, one whole `pool.tensor(k,
    name)` at a time; with a `fold`, d (of those vertices) goes to `fold.out` once every
    dot is taken."""
    dots = [[] for _ in grads]
    norms = [] if with_norms else None
    acc = base = None
    for k in range(count):
        x = pool.tensor(k, name)
        for j, g in enumerate(grads):
            dot, norm = _dense_score(g, x, with_norms and j == 0)
            dots[j].append(dot)
        if with_norms:
            norms.append(norm)
        if fold is not None:
            if k == 0:
                acc = torch.empty_like(fold.out)
                fold.begin_(acc, x, theta, count)
                base = x if fold.needs_base(count) else None
            else:
                fold.add_(acc, k, x, base)
        del x
    many = []
    for j, g in enumerate(grads):
        flat = flat32(g)
        grad_norm = float(torch.linalg.vector_norm(flat))
        current = float(torch.dot(flat, flat32(theta)))
        many.append(TensorScores(dots[j], None if norms is None else list(norms), grad_norm,
                                 current))  # fmt: skip
    if fold is not None:
        fold.out.copy_(acc)
        fold.done = True
    return many


def as_work(x: torch.Tensor) -> torch.Tensor:
    """float32 (or float64) view of a tensor for factor products."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _dense_score(g: torch.Tensor, x: torch.Tensor, with_norms: bool):
    # float32 BLAS dot: a float64-accumulated sum of g * x was the LMO's main cost
    # (docs/benchmarks.md, LMO speed); float32 accumulation is ample for ranking vertices.
    dot = torch.dot(g.reshape(-1).float(), x.reshape(-1).float())
    return dot, torch.linalg.vector_norm(x.float()) if with_norms else None


def score_tensor(
    pool, name: str, g: torch.Tensor, theta: torch.Tensor, with_norms: bool,
    fold: Fold | None = None,
):  # fmt: skip
    """The pool's own `score_tensor` if it has one (blocked reads, factor-scored adapters),
    else one streamed `pool.tensor(k, name)` at a time. A `fold` is formed where the pool
    can (`fold.done`); a pool that cannot leaves it for the caller."""
    own = getattr(pool, "score_tensor", None)
    if own is not None:
        return own(name, g, theta, with_norms, fold)
    return whole_tensor_scores(pool, len(pool), name, [g], theta, with_norms, fold)[0]


def score_tensor_many(pool, name: str, grads: list[torch.Tensor], theta, with_norms: bool):
    """TensorScores for each of several gradients from one read of the tensor's vertices."""
    own = getattr(pool, "score_tensor_many", None)
    if own is not None:
        return own(name, grads, theta, with_norms)
    return whole_tensor_scores(pool, len(pool), name, grads, theta, with_norms)


def vertex_ids(pool) -> list[str]:
    """The plan's `models`: the pool's ids (adapters included) or its references."""
    ids = getattr(pool, "ids", None)
    return list(ids) if ids is not None else [str(r) for r in pool.refs]
