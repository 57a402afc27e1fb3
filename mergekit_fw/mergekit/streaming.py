"""The write phase: each output tensor as sum_k c_k theta_k, one vertex in memory at a time.

mergekit's planner gives every merge method a `GatherTensors` task, which loads the tensor
of all n + 1 inputs before the kernel runs, so the write phase held n + 1 copies of the
largest tensor (docs/benchmarks.md, Memory). While a frank_wolfe plan is written,
`streamed_gather` swaps in `StreamedGather`: a `GatherTensors` with no load dependencies
that streams the vertices through the pre-pass's `VertexPool` (no memory maps; LoRA
adapters from their factors) and hands the executor the finished combination as the base
input. mergekit still plans the tensors, schedules them, casts dtypes, shards and writes.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

import torch
from mergekit.common import ModelReference
from mergekit.io.tasks import GatherTensors

from mergekit_fw.fw.replay import replay_tensor
from mergekit_fw.pool.lora_math import add_delta_

_lock = threading.Lock()
_active: list[tuple[Any, Any]] = []  # (FWPlan, VertexPool)


def combine(pool, coefficients: list[float], name: str) -> torch.Tensor:
    """sum_k c_k v_k for one tensor: dense vertices streamed, adapters added from factors.

    An adapter vertex is W0 + s B A, so its coefficient joins the base's (the W0 part)
    and its s B A is added in place (pool/lora_math.add_delta_).
    """
    dense = len(pool.refs)
    base_c = coefficients[0] + sum(coefficients[dense : dense + len(pool.adapters)])
    work = torch.float64 if pool.dtype == torch.float64 else torch.float32
    out = pool.stored(0, name).to(device=pool.device, dtype=work) * base_c  # a new tensor
    for k in range(1, dense):
        if coefficients[k] != 0.0:
            x = pool.stored(k, name).to(device=pool.device)
            out.add_(x, alpha=coefficients[k])
            del x
    for j, adapter in enumerate(pool.adapters):
        add_delta_(adapter, out, name, alpha=coefficients[dense + j])
    # start vertices (pool/start_vertex.py: a mergekit start held in memory) come last
    for j, start in enumerate(getattr(pool, "starts", ()), start=dense + len(pool.adapters)):
        if coefficients[j] != 0.0:
            out.add_(start.get(name).to(device=pool.device), alpha=coefficients[j])
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        from mergekit_fw.fw.finite import NonFiniteError

        used = [pool.labels[k] for k, c in enumerate(coefficients) if c != 0.0]
        raise NonFiniteError(
            f"The merged tensor {name} has NaN or Inf values (from {', '.join(used)}); the "
            "output is incomplete (no fw_plan.json). Check the candidates with a full run "
            "(its first LMO pass names the tensor) or repair the checkpoint."
        )
    return out.to(pool.dtype)


def _context(models) -> tuple[Any, Any] | None:
    ids = {str(m) for m in models}
    with _lock:
        for plan, pool in reversed(_active):
            if ids <= set(plan.models):
                return plan, pool
    return None


def is_streamed(models) -> bool:
    """Whether a frank_wolfe plan is being written for these models."""
    return _context(list(models)) is not None


def _base_of(weight_info, plan) -> ModelReference | None:
    return next((m for m in weight_info if str(m) == plan.models[0]), None)


class StreamedGather(GatherTensors):
    """{base: the finished combination}; reads happen in `execute`, one vertex at a time."""

    def arguments(self) -> dict:
        return {}

    def group_label(self) -> str | None:
        return next(iter(self.weight_info.values())).name

    def priority(self) -> int:
        return -10

    def execute(self, **_kwargs) -> dict[ModelReference, torch.Tensor]:
        context = _context(self.weight_info)
        if context is None:
            raise RuntimeError("frank_wolfe: the plan was released before mergekit wrote it")
        plan, pool = context
        base = _base_of(self.weight_info, plan)
        wi = self.weight_info[base]
        name = _stored_name(pool, wi)
        row = plan.coefficients_for(wi.name)
        if row is None:  # not optimised (a buffer, a stored constant): the base's, as stored
            return {base: pool.stored(0, name)}
        if plan.settings.merge_fn != "linear":  # ties / dare: not linear
            return {base: replay_tensor(pool, plan, wi.name)}
        return {base: combine(pool, row, name)}


def _stored_name(pool, wi) -> str:
    """The name the base actually stores (mergekit's LoadTensor resolution order)."""
    for name in [wi.name, *(wi.aliases or ()), *(wi.tied_names or ())]:
        if pool.has(0, name):
            return name
    return wi.name


def _gather_factory(stock):
    def gather(*, weight_info, dtype=None, device=None):
        context = _context(weight_info)
        if context is not None:
            plan, pool = context
            base = _base_of(weight_info, plan)
            if base is not None and pool.has(0, _stored_name(pool, weight_info[base])):
                return StreamedGather(weight_info=weight_info, dtype=dtype, device=device)
        return stock(weight_info=weight_info, dtype=dtype, device=device)

    return gather


@contextmanager
def streamed_gather(plan, pool):
    """While mergekit plans and writes `plan`, its tensors are gathered by StreamedGather."""
    import mergekit.plan

    with _lock:
        _active.append((plan, pool))
        mergekit.plan.GatherTensors = _gather_factory(GatherTensors)
    try:
        yield
    finally:
        with _lock:
            _active.remove((plan, pool))
            if not _active:
                mergekit.plan.GatherTensors = GatherTensors
