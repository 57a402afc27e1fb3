"""The LMO's arithmetic on LoRA factors: no dense per-adapter tensor is ever formed.

<G, W0 + s B A> = <G, W0> + s <B^T G, A> and
||W0 + s B A||^2 = ||W0||^2 + 2 s <B^T W0, A> + s^2 <B^T B, A A^T>. The base terms are those
of the base vertex, which the pool reads anyway (`VertexPool.score_tensor`), so a tensor
that no adapter targets costs nothing per adapter. The write phase adds c_a s_a B_a A_a in
place, one adapter at a time (`add_delta_`).
"""

from __future__ import annotations

import torch

from mergekit_fw.pool.lora_files import Adapter, LoraModule


def add_delta_(adapter: Adapter, out: torch.Tensor, name: str, alpha: float = 1.0) -> torch.Tensor:
    """out += alpha * s * B A (oriented like the base tensor), in place, no dense temporary."""
    module = adapter.modules.get(name)
    if module is None or alpha == 0.0:
        return out
    a, b = adapter.factors(module, out.device, out.dtype)
    target = out.t() if module.transpose else out
    target.addmm_(b, a, alpha=alpha * module.scale)
    return out


def _inner(adapter: Adapter, module: LoraModule, x: torch.Tensor):
    """(A, B, <X, B A> = <B^T X, A>) with X oriented like B @ A; factors in x's dtype."""
    a, b = adapter.factors(module, x.device, x.dtype)
    x = x.t() if module.transpose else x
    return a, b, torch.sum((b.t() @ x) * a, dtype=torch.float64)


def factor_dot(
    adapter: Adapter, name: str, g: torch.Tensor, base_dot: torch.Tensor
) -> torch.Tensor:
    """<G, W0 + s B A> = <G, W0> + s <B^T G, A>."""
    module = adapter.modules.get(name)
    return base_dot if module is None else base_dot + module.scale * _inner(adapter, module, g)[2]


def factor_norm_sq(
    adapter: Adapter, name: str, w0: torch.Tensor, base_sq: torch.Tensor
) -> torch.Tensor:
    """||W0 + s B A||^2 = ||W0||^2 + 2 s <B^T W0, A> + s^2 <B^T B, A A^T>."""
    module = adapter.modules.get(name)
    if module is None:
        return base_sq
    a, b, cross = _inner(adapter, module, w0)
    a64, b64 = a.double(), b.double()
    gram = torch.sum((b64.t() @ b64) * (a64 @ a64.t()))
    s = module.scale
    return base_sq + 2.0 * s * cross + s * s * gram


def delta_norm_sq(adapter: Adapter, name: str) -> torch.Tensor:
    """||s B A||^2 = s^2 <B^T B, A A^T>, from the factors (r x r products, never densified)."""
    module = adapter.modules.get(name)
    if module is None:
        return torch.zeros((), dtype=torch.float64)
    a, b = adapter.factors(module, "cpu", torch.float64)
    return module.scale**2 * torch.sum((b.t() @ b) * (a @ a.t()))
