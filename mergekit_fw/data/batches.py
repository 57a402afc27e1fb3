"""Calibration samples as padded batches of the objectives' `Batch`."""

from __future__ import annotations

import torch

from mergekit_fw.data.calibration import CalibrationSet
from mergekit_fw.fw.objectives import IGNORE_INDEX, Batch

REDUCTIONS = ("sequence", "token", "sample_mean")


def make_batches(
    calib: CalibrationSet, batch_size: int, pad_id: int, device, reduction: str = "sequence"
) -> list[Batch]:
    """Right-padded batches that never mix tasks, in file order (deterministic).

    `reduction` (settings.reduction, whose default this is) sets what a task's loss is a
    mean over: its target tokens (token), or its samples, each counted by its summed NLL
    (sequence: -log P(response), whose size decides exact match) or by its mean token NLL
    (sample_mean, the authors' code). Within a task, token and sequence differ by a
    constant; across tasks, sequence weighs a task by its mean target length.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}")
    total_weight = sum(task.weight for task in calib.tasks)
    batches = []
    for index, task in enumerate(calib.tasks):
        targets = (
            task.n_targets if reduction == "token" else sum(1 for s in task.samples if s.n_targets)
        )
        scale = task.weight / (targets * total_weight)
        for start in range(0, len(task.samples), batch_size):
            chunk = task.samples[start : start + batch_size]
            width = max(len(s.input_ids) for s in chunk)
            label_width = max(len(s.labels) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), label_width), IGNORE_INDEX, dtype=torch.long)
            types = None
            if chunk[0].token_type_ids is not None:
                types = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, sample in enumerate(chunk):
                n = len(sample.input_ids)
                ids[row, :n] = torch.tensor(sample.input_ids)
                mask[row, :n] = 1
                labels[row, : len(sample.labels)] = torch.tensor(sample.labels)
                if types is not None:
                    types[row, :n] = torch.tensor(sample.token_type_ids)
            weights = None
            if reduction == "sample_mean" and not chunk[0].sequence_level:
                weights = torch.tensor([1.0 / max(s.n_targets, 1) for s in chunk])
            batches.append(
                Batch(
                    index,
                    ids.to(device),
                    mask.to(device),
                    labels.to(device),
                    scale,
                    targets,
                    None if types is None else types.to(device),
                    None if weights is None else weights.to(device),
                )  # fmt: skip
            )
    return batches
