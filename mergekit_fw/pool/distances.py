"""How far each candidate is from the base: ||theta_i - base|| / ||base|| over all tensors.

Fine-tunes of one base sit far below 0.1; a model from another initialisation sits near 1,
and stepping toward it breaks every merge. This pass runs before any gradient work, reads
the base once and each dense candidate once, one tensor at a time, and takes each adapter's
||s B A||^2 = s^2 <B^T B, A A^T> from its factors (never densified).
"""

from __future__ import annotations

import math

import torch

from mergekit_fw.fw.finite import NonFiniteError, vertex_message
from mergekit_fw.pool.lora_math import delta_norm_sq


def relative_distances(pool) -> list[float]:
    """Per candidate (pool vertices 1..n, adapters included), in pool order."""
    dense = len(pool.refs)
    base_sq = 0.0
    diff_sq = [0.0] * (len(pool) - 1)
    for name in pool.tensor_names(0):
        base = pool.stored(0, name)
        if not base.dtype.is_floating_point:
            continue
        base = base.reshape(-1)
        base_sq += _finite(_sum_sq(base, None), pool, 0, name)
        for k in range(1, dense):
            if pool.has(k, name):
                x = pool.stored(k, name).reshape(-1)
                diff_sq[k - 1] += _finite(_sum_sq(x, base), pool, k, name)
                del x
        del base
        for j, adapter in enumerate(pool.adapters):
            value = float(delta_norm_sq(adapter, name))
            diff_sq[dense - 1 + j] += _finite(value, pool, dense + j, name)
    scale = math.sqrt(base_sq) if base_sq > 0 else 1.0
    return [math.sqrt(d) / scale for d in diff_sq]


CHUNK = 1 << 20  # float64 elements per chunk: the sums never hold a float64 copy of a tensor


def _sum_sq(x: torch.Tensor, minus: torch.Tensor | None) -> float:
    """||x - minus||^2 (or ||x||^2) in float64, a chunk at a time (tensors as stored)."""
    total = 0.0
    for start in range(0, x.numel(), CHUNK):
        part = x[start : start + CHUNK].double()
        if minus is not None:
            part -= minus[start : start + CHUNK].double()
        total += float(torch.dot(part, part))
    return total


def _finite(value: float, pool, k: int, name: str) -> float:
    """This pass reads every tensor first, so it is where a NaN or Inf is found: an Inf
    would otherwise read as an infinitely foreign candidate and be screened out silently."""
    if not math.isfinite(value):
        raise NonFiniteError(vertex_message(pool.labels[k], name))
    return value
