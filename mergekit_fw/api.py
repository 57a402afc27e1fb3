"""`frank_wolfe_merge`: Frank-Wolfe merging of any torch module, from Python.

The recipe path (mergekit/runner.py) builds its pieces from a mergekit recipe; this builds
them from a module, candidate state dicts or safetensors files, a loss and batches. Both
then call the same `fw.driver.run_frank_wolfe`, so objectives, LMOs, step rules, the soft
variant and the plan are the recipe's. Nothing here imports mergekit: a ViT, a CNN or a
speech model merges the same way as a causal LM.

Every input is checked before the first iteration: options (the recipe's schema), include=,
candidates (present, same shapes; files by their headers only), data, and the loss at the
base (a finite scalar that depends on the merged parameters) on one batch of each task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from mergekit_fw.plan import FWPlan, loss_unit
from mergekit_fw.settings import APIOptions, FWConfigError

NAMED_LOSSES = ("causal_lm", "classification", "entropy")


def frank_wolfe_merge(
    model: torch.nn.Module,
    candidates: Sequence,
    loss: Callable[..., torch.Tensor] | str,
    data: Iterable | Mapping[str, Iterable],
    include: Callable[[str], bool] | None = None,
    *,
    labels: Sequence[str] | None = None,
    quiet: bool = True,
    **options: Any,
) -> tuple[dict[str, torch.Tensor], FWPlan]:
    """Merge `candidates` into `model`'s parameters by Frank-Wolfe on `loss` over `data`.

    model: holds the base weights (vertex 0); it is left as it came (weights, training mode,
        requires_grad), the merge is returned.
    candidates: fine-tunes of the same architecture: state dicts (name -> tensor) or paths of
        .safetensors files / folders, streamed one tensor at a time.
    loss: `loss(model, batch)` or `loss(model, batch, task)` -> scalar mean loss of a batch;
        or "causal_lm" | "classification" | "entropy" for transformers models and dict
        batches (input_ids, attention_mask, labels), weighted as the recipe path weighs them.
    data: an iterable of batches, or {task name: iterable of batches} (several tasks, e.g.
        one frozen head per task reached through the loss's `task` argument).
    include: which parameters are merged (by name); the others stay the base's exactly.
    labels: names of the candidates in the plan (default: file names / candidate_i).
    options: the recipe's frank_wolfe options (iterations=, variant=, step=, ...).

    Returns (merged state dict, FWPlan).
    """
    from mergekit_fw.data.user_batches import callable_batches, named_batches, task_batches
    from mergekit_fw.fw.driver import run_frank_wolfe
    from mergekit_fw.pool.state_dicts import StateDictPool

    if not isinstance(model, torch.nn.Module):
        raise FWConfigError(f"model= must be a torch.nn.Module, got {type(model).__name__}.")
    settings = APIOptions.from_options(options)
    slots = select_slots(model, include)
    tasks = task_batches(data)
    task_names = list(tasks)
    objective, batches = make_objective(
        model, loss, tasks, callable_batches, named_batches, settings.reduction
    )
    base = {slot.name: slot.param.detach().clone() for slot in slots}
    pool = StateDictPool(base, list(candidates), labels=labels)
    flags = {id(p): (p, p.requires_grad) for p in model.parameters()}
    training = model.training
    try:
        for param, _ in flags.values():
            param.requires_grad_(False)  # only the merged parameters get gradients
        for slot in slots:
            slot.param.requires_grad_(True)
        check_loss(model, objective, batches, task_names)
        start_row, table = None, []
        if settings.init_kind == "auto":  # the base or task arithmetic, by calibration loss
            start_row, table = auto_start(
                model, slots, pool, objective, batches, task_names, settings
            )
        plan = run_frank_wolfe(
            model, slots, pool, objective, batches, task_names, settings, quiet,
            start_row=start_row,
        )  # fmt: skip
        plan.init_table = table
        plan.settings["objective"] = objective.name
        merged = {name: x.detach().clone() for name, x in model.state_dict().items()}
    finally:
        with torch.no_grad():
            for slot in slots:
                slot.param.copy_(base[slot.name])
        for param, flag in flags.values():
            param.grad = None
            param.requires_grad_(flag)
        model.train(training)
        pool.close()
    return merged, plan


def auto_start(model, slots, pool, objective, batches, task_names, settings):
    """`init: auto` without mergekit: (start row, table) over the base and task arithmetic."""
    from mergekit_fw.fw.start_grid import builtin_rows, calibration_loss, choose, score_rows

    loss = calibration_loss(model, objective, batches, task_names)
    rows = score_rows(builtin_rows(settings, len(pool) - 1), slots, pool, loss)
    chosen, table = choose(rows, loss_unit(settings, getattr(objective, "name", None)))
    return chosen["row"], table


def select_slots(model: torch.nn.Module, include: Callable[[str], bool] | None) -> list:
    """One slot per merged floating-point parameter (tied names: one slot with aliases)."""
    from mergekit_fw.fw.loop import Slot

    groups: dict[int, tuple[torch.nn.Parameter, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), (param, []))[1].append(name)
    slots = []
    for param, names in groups.values():
        if not param.dtype.is_floating_point:
            continue
        chosen = [n for n in names if include is None or include(n)]
        if chosen:
            slots.append(Slot(chosen[0], param, [n for n in names if n != chosen[0]]))
    if not slots:
        some = ", ".join(n for n, _ in list(model.named_parameters())[:3])
        raise FWConfigError(
            "include= selects no floating-point parameter of the model, so nothing would be "
            f"merged (the model's parameters start: {some or 'none'})."
        )
    return slots


def make_objective(
    model, loss, tasks: dict[str, list], callable_batches, named_batches, reduction: str
):
    """(objective, batches) for a callable loss or a named one."""
    from mergekit_fw.fw.objectives import make_objective as named_objective
    from mergekit_fw.fw.user_loss import CallableObjective

    if callable(loss):
        return CallableObjective(loss, list(tasks)), callable_batches(tasks)
    if isinstance(loss, str) and loss in NAMED_LOSSES:
        architecture = getattr(getattr(model, "config", None), "architectures", None)
        objective = named_objective(loss, architecture or [type(model).__name__])
        device = next(model.parameters()).device
        return objective, named_batches(tasks, objective.sequence_level, device, reduction)
    raise FWConfigError(
        f"loss= must be a callable (model, batch[, task]) -> scalar or one of "
        f"{', '.join(NAMED_LOSSES)}; got {loss!r}."
    )


def check_loss(model, objective, batches: list, task_names: list[str]) -> None:
    """The loss on each task's first batch, at the base: a finite scalar with a gradient."""
    seen: set[int] = set()
    model.eval()
    for batch in batches:
        if batch.task in seen:
            continue
        seen.add(batch.task)
        task = task_names[batch.task]
        with torch.enable_grad():
            value = objective.batch_loss_sum(model, batch)
        if not isinstance(value, torch.Tensor):
            raise FWConfigError(
                f"loss returned a {type(value).__name__} on task {task!r}; return a scalar "
                "torch tensor computed from the model's output."
            )
        if value.numel() != 1:
            raise FWConfigError(
                f"loss returned a tensor of shape {list(value.shape)} on task {task!r}; it "
                "must be a scalar (reduce it, e.g. with .mean())."
            )
        number = float(value.detach())
        if not math.isfinite(number):
            raise FWConfigError(
                f"loss is {number} on the first batch of task {task!r} at the base "
                "model; check the data and the loss before merging."
            )
        if not value.requires_grad:
            raise FWConfigError(
                f"loss on task {task!r} does not depend on the merged parameters (it has no "
                "gradient): call the model inside the loss, and check include=."
            )
        del value
