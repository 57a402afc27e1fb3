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


def whole_tensor_scores(pool, count: int, name: str, g, theta, with_norms: bool) -> TensorScores:
    """TensorScores of vertices 0..count-1, one whole `pool.tensor(k, name)` at a time."""
    dots, norms = [], [] if with_norms else None
    for k in range(count):
        x = pool.tensor(k, name)
        dot, norm = _dense_score(g, x, with_norms)
        del x
        dots.append(dot)
        if with_norms:
            norms.append(norm)
    flat = flat32(g)
    grad_norm = float(torch.linalg.vector_norm(flat))
    return TensorScores(dots, norms, grad_norm, float(torch.dot(flat, flat32(theta))))


def as_work(x: torch.Tensor) -> torch.Tensor:
    """float32 (or float64) view of a tensor for factor products."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _dense_score(g: torch.Tensor, x: torch.Tensor, with_norms: bool):
    # float32 BLAS dot: a float64-accumulated sum of g * x was the LMO's main cost
    # (docs/benchmarks.md, LMO speed); float32 accumulation is ample for ranking vertices.
    dot = torch.dot(g.reshape(-1).float(), x.reshape(-1).float())
    return dot, torch.linalg.vector_norm(x.float()) if with_norms else None


def score_tensor(pool, name: str, g: torch.Tensor, theta: torch.Tensor, with_norms: bool):
    """The pool's own `score_tensor` if it has one (blocked reads, factor-scored adapters),
    else one streamed `pool.tensor(k, name)` at a time."""
    own = getattr(pool, "score_tensor", None)
    if own is not None:
        return own(name, g, theta, with_norms)
    return whole_tensor_scores(pool, len(pool), name, g, theta, with_norms)


def vertex_ids(pool) -> list[str]:
    """The plan's `models`: the pool's ids (adapters included) or its references."""
    ids = getattr(pool, "ids", None)
    return list(ids) if ids is not None else [str(r) for r in pool.refs]
