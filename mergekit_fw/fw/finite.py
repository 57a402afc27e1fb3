"""NaN and Inf checks of the pre-pass: stop with a message that names what, where and when.

A non-finite value anywhere in the loop would otherwise end as a NaN checkpoint (or as a
silently skipped vertex, since every comparison with NaN is false). The checks ride on work
the loop does anyway: the first score pass streams every vertex tensor and computes its norm
(NaN or Inf in a vertex makes its norm non-finite), each gradient pass reports the loss per
task, and each score pass the gradient's norm per tensor. No extra reads.
"""

from __future__ import annotations

import math

import torch

from mergekit_fw.fw.objectives import LossReport
from mergekit_fw.settings import FWConfigError


class NonFiniteError(FWConfigError):
    """A NaN or Inf in a candidate, the loss or a gradient: nothing has been merged."""


def _finite(value) -> bool:
    return math.isfinite(float(value))


def check_vertex(tensor: torch.Tensor, label: str, name: str) -> None:
    """A streamed vertex tensor (used where the loop reads whole tensors anyway)."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(vertex_message(label, name))


def vertex_message(label: str, name: str) -> str:
    return (
        f"Candidate {label} has NaN or Inf values in tensor {name}; a merge with it would be "
        "NaN. Remove it from the candidates or repair the checkpoint; nothing was merged."
    )


def check_scores(scores, name: str, labels: list[str], with_norms: bool) -> None:
    """One tensor's score row: its gradient, the iterate, and (first pass) every vertex."""
    if not _finite(scores.grad_norm):
        raise NonFiniteError(
            f"The gradient of tensor {name} has NaN or Inf values (the loss was finite), so "
            "the pre-pass stopped and nothing was merged. Lower the learning signal's scale "
            "(float32 weights instead of float16) or check the calibration data."
        )
    if with_norms:
        for label, norm in zip(labels, scores.norms):
            if not _finite(norm):
                raise NonFiniteError(vertex_message(label, name))
    if not _finite(scores.current):
        raise NonFiniteError(
            f"The merge itself has NaN or Inf values in tensor {name}, so the pre-pass "
            "stopped and nothing was merged."
        )


def check_loss(report: LossReport, t: int, phase: str = "gradient") -> None:
    """The calibration loss at iteration t (or the final loss), per task."""
    if _finite(report.total):
        return
    tasks = [name for name, value in report.per_task.items() if not _finite(value)]
    where = "the final merge" if phase == "final" else f"FW iteration {t}"
    raise NonFiniteError(
        f"The calibration loss is {report.total} at {where}"
        + (f", on task(s) {', '.join(tasks)}" if tasks else "")
        + ", so the pre-pass stopped and nothing was merged. Check those calibration samples "
        "and the candidates, or merge in float32."
    )
