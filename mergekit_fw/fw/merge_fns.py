"""Merge functions: how one FW step applies the direction d = s - theta to a tensor.

- linear: theta + gamma d (the FW step; the iterate stays a combination of the vertices);
- ties: theta + gamma TopK_p(d), the authors' TIES step: keep the fraction p of d's
  largest-magnitude entries. The top-k is **per tensor**: mergekit's own TIES sparsifies
  per tensor, and a per-tensor mask depends on that tensor's d only, so the write phase can
  replay each tensor from its own vertex tensors, streamed. (The authors' code takes one
  global top-k over all tensors; that needs every tensor's |d| at once, or a threshold per
  iteration recorded in the plan.)
- dare: theta + gamma (m / p) * d with m ~ Bernoulli(p), a random drop with rescale; the
  mask comes from a CPU generator seeded by (seed, iteration, tensor name), so the replay
  draws the same mask whatever the device or the order of tensors.

Neither ties nor dare is linear in the vertices, so the plan's coefficients no longer give
the iterate; fw/replay.py recomputes it from the recorded trajectory.
"""

from __future__ import annotations

import math
import zlib

import torch


def ties_mask_(d: torch.Tensor, density: float) -> torch.Tensor:
    """d *= [|d| >= k-th largest |d|], k = ceil(density * numel), in place."""
    numel = d.numel()
    k = max(1, math.ceil(density * numel))
    if k >= numel:
        return d
    magnitude = d.detach().abs().reshape(-1).float()
    threshold = torch.kthvalue(magnitude, numel - k + 1).values
    return d.mul_((magnitude >= threshold).reshape(d.shape).to(d.dtype))


def dare_mask_(d: torch.Tensor, density: float, seed: int, t: int, name: str) -> torch.Tensor:
    """d *= m / density, m ~ Bernoulli(density) from a generator seeded by (seed, t, name)."""
    if density >= 1.0:
        return d
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{t}/{name}".encode()))
    keep = torch.rand(d.shape, generator=generator) < density
    return d.mul_(keep.to(device=d.device, dtype=d.dtype)).div_(density)


def apply_merge_fn_(
    d: torch.Tensor, merge_fn: str, density: float, seed: int, t: int, name: str
) -> torch.Tensor:
    """The step direction of `merge_fn` for one tensor, written over d."""
    if merge_fn == "linear":
        return d
    if merge_fn == "ties":
        return ties_mask_(d, density)
    if merge_fn == "dare":
        return dare_mask_(d, density, seed, t, name)
    raise ValueError(f"unknown merge_fn {merge_fn!r}")
