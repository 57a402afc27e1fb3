"""The Python API's `data=`: batches a user made, as the loop's weighted batches.

`data` is an iterable of batches (one task, named "calibration") or a mapping task name ->
iterable of batches. A callable loss gets each batch as given (`UserBatch.data`); a named
objective ("causal_lm", "classification", "entropy") gets dict batches turned into the
recipe path's `Batch`, weighted exactly as data/batches.py weighs a recipe's calibration
set (mean over a task's targets, tasks equally weighted), so both paths minimise one loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mergekit_fw.fw.objectives import IGNORE_INDEX, Batch
from mergekit_fw.settings import FWConfigError

SINGLE_TASK = "calibration"


@dataclass
class UserBatch:
    task: int
    data: Any  # whatever the user's loss takes
    scale: float  # 1 / (batches of this task * tasks): a task's loss is its mean batch loss
    task_targets: int  # batches in this task (evaluate's per-task mean divides by it)


def task_batches(data) -> dict[str, list]:
    """{task: [batches]} from an iterable or a mapping; clear errors for empty data."""
    if data is None:
        raise FWConfigError("data= is required: an iterable of batches, or {task: batches}.")
    if isinstance(data, (str, bytes)):
        raise FWConfigError("data= is a string; pass batches (the API reads no data files).")
    if isinstance(data, Mapping):
        tasks = {str(name): _listed(batches, f"task {name!r}") for name, batches in data.items()}
        if not tasks:
            raise FWConfigError("data= is an empty mapping; give at least one task's batches.")
    else:
        tasks = {SINGLE_TASK: _listed(data, "data=")}
    for name, batches in tasks.items():
        if not batches:
            where = "data=" if name == SINGLE_TASK and len(tasks) == 1 else f"task {name!r}"
            raise FWConfigError(f"{where} has no batches; the loss needs calibration data.")
    return tasks


def _listed(batches, where: str) -> list:
    if not isinstance(batches, Iterable) or isinstance(batches, (str, bytes, Mapping)):
        raise FWConfigError(
            f"{where} must be an iterable of batches, got a {type(batches).__name__}."
        )
    return list(batches)  # several passes are needed: a generator is read once, here


def callable_batches(tasks: dict[str, list]) -> list[UserBatch]:
    out = []
    for index, batches in enumerate(tasks.values()):
        scale = 1.0 / (len(batches) * len(tasks))
        out.extend(UserBatch(index, b, scale, len(batches)) for b in batches)
    return out


def named_batches(
    tasks: dict[str, list], sequence_level: bool, device, reduction: str = "sequence"
) -> list[Batch]:
    """Dict batches (input_ids, attention_mask, labels, token_type_ids) as recipe Batches,
    weighted as data/batches.py weighs a calibration set for this `reduction`."""
    per_sample = reduction != "token"
    out: list[Batch] = []
    for index, (name, batches) in enumerate(tasks.items()):
        converted = [_as_batch(b, index, sequence_level, device, name) for b in batches]
        if sum(_targets(b, sequence_level, False) for b in converted) == 0:
            raise FWConfigError(f"task {name!r} has no target tokens (all labels are -100).")
        targets = sum(_targets(b, sequence_level, per_sample) for b in converted)
        for batch in converted:
            batch.scale = 1.0 / (targets * len(tasks))
            batch.task_targets = targets
            if reduction == "sample_mean" and not sequence_level:
                counts = (batch.labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
                batch.row_weights = torch.where(counts > 0, 1.0 / counts.clamp_min(1), 0.0)
        out.extend(converted)
    return out


def _targets(batch: Batch, sequence_level: bool, per_sample: bool) -> int:
    """Target tokens of a batch, or (per_sample) its samples that have a target."""
    if sequence_level:
        return int(batch.labels.shape[0])
    has_target = batch.labels[:, 1:] != IGNORE_INDEX
    return int(has_target.any(dim=1).sum() if per_sample else has_target.sum())


def _as_batch(raw, index: int, sequence_level: bool, device, task: str) -> Batch:
    if not isinstance(raw, Mapping) or "input_ids" not in raw:
        raise FWConfigError(
            f"task {task!r}: a named loss takes dict batches with 'input_ids' (and "
            "'attention_mask', 'labels'); pass a callable loss for other batches."
        )
    ids = torch.as_tensor(raw["input_ids"])
    ids = ids[None] if ids.dim() == 1 else ids
    mask = torch.as_tensor(raw.get("attention_mask", torch.ones_like(ids))).reshape(ids.shape)
    labels = raw.get("labels")
    if labels is None:
        if sequence_level:
            raise FWConfigError(f"task {task!r}: classification batches need 'labels'.")
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels = torch.as_tensor(labels)
    labels = labels.reshape(-1, 1) if sequence_level else labels.reshape(ids.shape[0], -1)
    types = raw.get("token_type_ids")
    return Batch(
        index, ids.to(device), mask.to(device), labels.to(device), 0.0, 0,
        None if types is None else torch.as_tensor(types).to(device),
    )  # fmt: skip
