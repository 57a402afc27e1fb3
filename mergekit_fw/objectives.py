"""Calibration objectives: the loss f(theta) that Frank-Wolfe minimises.

An objective knows which transformers auto-class to load and how to turn one padded batch
into a summed loss. `evaluate` runs it over the calibration set with gradient accumulation,
so the accumulated gradient is exactly that of the weighted mean over target tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mergekit_fw.calibration import IGNORE_INDEX, CalibrationSet


@dataclass
class Batch:
    task: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    scale: float  # task weight / (task target tokens * total weight)
    task_targets: int  # target tokens in this batch's whole task


@dataclass
class LossReport:
    total: float
    per_task: dict[str, float]


class CausalLMObjective:
    """Next-token cross-entropy, mean over target tokens (per task, then task-weighted)."""

    name = "causal_lm"

    @staticmethod
    def auto_class():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def batch_loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits = logits[:, :-1].float()
        targets = batch.labels[:, 1:]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )


OBJECTIVES = {"causal_lm": CausalLMObjective}


def make_batches(calib: CalibrationSet, batch_size: int, pad_id: int, device) -> list[Batch]:
    """Right-padded batches that never mix tasks, in file order (deterministic)."""
    total_weight = sum(task.weight for task in calib.tasks)
    batches = []
    for index, task in enumerate(calib.tasks):
        scale = task.weight / (task.n_targets * total_weight)
        for start in range(0, len(task.samples), batch_size):
            chunk = task.samples[start : start + batch_size]
            width = max(len(s.input_ids) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            for row, sample in enumerate(chunk):
                n = len(sample.input_ids)
                ids[row, :n] = torch.tensor(sample.input_ids)
                mask[row, :n] = 1
                labels[row, :n] = torch.tensor(sample.labels)
            batches.append(
                Batch(
                    index, ids.to(device), mask.to(device), labels.to(device), scale, task.n_targets
                )
            )
    return batches


def evaluate(
    model: torch.nn.Module,
    objective,
    batches: list[Batch],
    task_names: list[str],
    *,
    grad: bool,
    desc: str = "loss",
    quiet: bool = False,
) -> LossReport:
    """Weighted mean calibration loss; with grad=True also accumulates its gradient."""
    task_sums = [0.0] * len(task_names)
    task_targets = [0] * len(task_names)
    total = 0.0
    with torch.set_grad_enabled(grad):
        for batch in tqdm(batches, desc=desc, leave=False, disable=quiet):
            summed = objective.batch_loss_sum(model, batch)
            contribution = summed * batch.scale
            if grad:
                contribution.backward()
            total += contribution.item()
            task_sums[batch.task] += summed.item()
            task_targets[batch.task] = batch.task_targets
    per_task = {name: task_sums[i] / max(task_targets[i], 1) for i, name in enumerate(task_names)}
    return LossReport(total=total, per_task=per_task)
