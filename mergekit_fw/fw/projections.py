"""Euclidean projections the soft fits use: onto a box, the probability simplex, and a
simplex with a budget (`sum x <= budget`). One sort-based simplex projection (Duchi et al.
2008) serves both simplices.
"""

from __future__ import annotations

import torch


def project_box(v: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {low <= v <= high} (elementwise)."""
    return torch.minimum(torch.maximum(v, low), high)


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex (Duchi et al. 2008)."""
    m = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1.0
    ind = torch.arange(1, m + 1, dtype=v.dtype, device=v.device)
    positive = (u - css / ind) > 0
    rho = (positive * ind).argmax(dim=-1, keepdim=True)  # last index where positive
    tau = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - tau, min=0.0)


def project_capped_simplex(v: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto {x >= 0, sum x <= budget_row}: the clipped row
    where that fits, else the row scaled to the probability simplex, projected, scaled back."""
    budget = budget.clamp_min(0.0)
    clipped = v.clamp_min(0.0)
    out = torch.where((budget > 0)[..., None], clipped, torch.zeros_like(clipped))
    over = (out.sum(dim=-1) > budget) & (budget > 0)
    if not bool(over.any()):
        return out
    out[over] = project_simplex(v[over] / budget[over, None]) * budget[over, None]
    return out
