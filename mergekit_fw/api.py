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

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

import torch

from mergekit_fw.plan import FWPlan, IterationRecord, loss_unit
from mergekit_fw.settings import (
    APIOptions,
    ConstraintName,
    FWConfigError,
    ObjectiveName,
    ReductionName,
    StepName,
)

LOG = logging.getLogger("mergekit_fw")

NAMED_LOSSES = get_args(ObjectiveName)


def frank_wolfe_merge(
    model: torch.nn.Module,
    candidates: Sequence,
    loss: Callable[..., torch.Tensor] | str,
    data: Iterable | Mapping[str, Iterable],
    include: Callable[[str], bool] | None = None,
    *,
    labels: Sequence[str] | None = None,
    iterations: int = 10,
    constraint: ConstraintName = "box",
    scale: float = 1.0,
    init: Literal["auto", "base", "task_arithmetic"] = "auto",
    init_scale: float = 0.3,
    screening: bool = True,
    step: StepName = "quadratic",
    step_size: float = 1.0,
    line_search_evals: int = 10,
    tolerance: float = 0.0,
    lmo: Literal["inner", "cosine"] = "inner",
    granularity: Literal["tensor", "model"] = "tensor",
    zero_vertex: bool = False,
    fw_steps: Literal["vanilla", "away", "pairwise"] = "vanilla",
    merge_fn: Literal["linear", "ties", "dare"] = "linear",
    merge_density: float = 0.2,
    reduction: ReductionName = "sequence",
    variant: Literal["hard", "soft"] = "hard",
    topk: int = 2,
    select: Literal["topk", "per_task"] = "topk",
    coefficients: Literal["simplex", "free"] = "simplex",
    fit_granularity: Literal["tensor", "model"] = "tensor",
    inner_steps: int = 20,
    inner_lr: float | None = None,
    seed: int = 0,
    progress: Literal["off", "iterations", "passes"] | Callable[[IterationRecord], None] = "off",
    quiet: bool | None = None,
    **unknown: Any,
) -> tuple[dict[str, torch.Tensor], FWPlan]:
    """Merge `candidates` into `model`'s parameters by Frank-Wolfe on `loss` over `data`.

    Args:
        model: holds the base weights (vertex 0); it is left as it came (weights, training
            mode, requires_grad); the merge is returned.
        candidates: fine-tunes of the same architecture: `nn.Module`s, state dicts
            (name -> tensor), or paths of .safetensors files / folders (streamed one tensor
            at a time).
        loss: `loss(model, batch)` or `loss(model, batch, task)` -> scalar mean loss of a
            batch; or "causal_lm" | "classification" | "entropy" for transformers models and
            dict batches (input_ids, attention_mask, labels), weighted as a recipe weighs them.
        data: an iterable of batches, or {task name: iterable of batches} (several tasks,
            e.g. one frozen head per task reached through the loss's `task` argument).
        include: which parameters are merged (by name); the others stay the base's exactly.
        labels: names of the candidates in the plan (default: file names / candidate_i).
        iterations: the FW budget T.
        constraint: the set FW searches over task vectors tau_i = theta_i - base: "box"
            (0 <= lambda_i <= scale), "hull" (the paper: lambda >= 0, sum <= 1) or
            "simplex" (sum <= scale).
        scale: kappa of the box / simplex.
        init: the start: "auto" (the lowest-loss start of the base, task arithmetic and,
            with `screening`, each candidate alone and task arithmetic over the ones that
            gain alone; docs/starts.md), "base" or "task_arithmetic" (base + init_scale *
            sum_i tau_i).
        init_scale: lambda of the task-arithmetic start.
        screening: whether init: auto screens the candidates (n + 12 forward passes).
        step: "line_search" (golden section, up to line_search_evals loss evaluations),
            "quadratic", "schedule" (step_size * 2/(t+2)) or "constant".
        step_size: scale of the schedule / constant step.
        line_search_evals: loss evaluations per line search.
        tolerance: stop when the FW gap falls to this.
        lmo: "inner" (<g, s>, the paper) or "cosine" (the authors' code; needs the hull).
        granularity: "tensor" (an LMO per tensor) or "model" (one per model).
        zero_vertex: the origin as an extra vertex (the authors' code; needs the hull).
        fw_steps: "vanilla", "away" or "pairwise" steps.
        merge_fn: how a step applies d = s - theta: "linear", "ties" or "dare".
        merge_density: ties: fraction of d kept; dare: keep probability.
        reduction: what a named loss averages ("sequence": per sample, summed over its
            target tokens; "token"; "sample_mean"). A callable loss is used as it is.
        variant: "hard" (a step to one vertex) or "soft" (fit the weights of k vertices).
        topk, select, coefficients, fit_granularity, inner_steps, inner_lr: FW-soft options,
            as in a recipe (README, "FW-soft").
        seed: torch seed of the merge.
        progress: "off" (nothing printed), "iterations" (one line per FW iteration on
            stderr: loss, gap, step), "passes" (also every gradient / LMO / line-search pass,
            as a recipe run prints them), or a callable given each iteration's
            `IterationRecord` (t, loss, gap, gamma, wins) as it finishes.
        quiet: the older switch: quiet=False is progress="passes".

    Returns:
        (merged state dict, FWPlan): the plan holds the per-tensor coefficients over
        [base, candidates] and the trajectory.

    Every input is checked before the first iteration; a problem raises FWConfigError (a
    ValueError) with one line that says what to fix.
    """
    if unknown:  # a typo or a recipe-only key: say which, and the close match
        unknown_option(next(iter(unknown)))
    options = {
        "iterations": iterations, "constraint": constraint, "scale": scale, "init": init,
        "init_scale": init_scale, "screening": screening, "step": step, "step_size": step_size,
        "line_search_evals": line_search_evals, "tolerance": tolerance, "lmo": lmo,
        "granularity": granularity, "zero_vertex": zero_vertex, "fw_steps": fw_steps,
        "merge_fn": merge_fn, "merge_density": merge_density, "reduction": reduction,
        "variant": variant, "topk": topk, "select": select, "coefficients": coefficients,
        "fit_granularity": fit_granularity, "inner_steps": inner_steps, "seed": seed,
    }  # fmt: skip
    if inner_lr is not None:
        options["inner_lr"] = inner_lr
    if quiet is False and progress == "off":
        progress = "passes"
    return _merge(model, candidates, loss, data, include, labels, options, progress)


def unknown_option(key: str) -> None:
    """A keyword frank_wolfe_merge() does not have: a recipe-only option says what to do
    instead; a typo names the closest keyword and lists the ones there are."""
    import difflib
    import inspect

    from mergekit_fw.settings import RECIPE_ONLY, FWSettings

    names = [
        name for name, p in inspect.signature(frank_wolfe_merge).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]  # fmt: skip
    if key in RECIPE_ONLY or key == "calibration" or key in FWSettings.model_fields:
        fix = RECIPE_ONLY.get(key, "pass the batches as data=" if key == "calibration" else "")
        raise FWConfigError(
            f"frank_wolfe_merge() does not take '{key}' (a recipe option)"
            + (f": {fix}." if fix else "; the Python API has no use for it.")
        )
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise FWConfigError(
        f"frank_wolfe_merge() got an unknown keyword argument '{key}'.{hint} Its options: "
        f"{', '.join(names)}."
    )


def _merge(model, candidates, loss, data, include, labels, options, progress):
    """frank_wolfe_merge after its keyword arguments are gathered."""
    from mergekit_fw.data.user_batches import callable_batches, named_batches, task_batches
    from mergekit_fw.fw.driver import run_frank_wolfe
    from mergekit_fw.fw.problem import CalibrationProblem
    from mergekit_fw.pool.state_dicts import StateDictPool

    if not isinstance(model, torch.nn.Module):
        raise FWConfigError(f"model= must be a torch.nn.Module, got {type(model).__name__}.")
    settings = APIOptions.from_options(options)
    for line in settings.unused():
        LOG.warning("frank_wolfe_merge: %s", line)
    candidates = [c.state_dict() if isinstance(c, torch.nn.Module) else c for c in candidates or []]
    quiet = progress != "passes"
    slots = select_slots(model, include)
    tasks = task_batches(data)
    objective, batches = make_objective(
        model, loss, tasks, callable_batches, named_batches, settings.reduction
    )
    problem = CalibrationProblem(objective, batches, list(tasks))
    base = {slot.name: slot.param.detach().clone() for slot in slots}
    pool = StateDictPool(base, list(candidates), labels=labels)
    flags = {id(p): (p, p.requires_grad) for p in model.parameters()}
    training = model.training
    try:
        for param, _ in flags.values():
            param.requires_grad_(False)  # only the merged parameters get gradients
        for slot in slots:
            slot.param.requires_grad_(True)
        check_loss(model, problem)
        start_row, table, formed = None, [], False
        if settings.init_kind == "auto":  # the base or task arithmetic, by calibration loss
            start_row, table, formed = auto_start(model, slots, pool, problem, settings)
        plan = run_frank_wolfe(
            model, slots, pool, problem, settings, quiet, start_row=start_row,
            start_formed=formed, on_iteration=progress_hook(progress),
        )  # fmt: skip
        settings = plan.settings.model_copy(update={"objective": objective.name})
        plan = plan.model_copy(update={"init_table": table, "settings": settings})
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


def progress_hook(progress):
    """The loop's `on_iteration` for progress="iterations" or a callable: reports every
    finished iteration's IterationRecord (the loop prints nothing itself then)."""
    import sys

    if progress in ("off", "passes"):
        return None
    if not callable(progress) and progress != "iterations":
        raise FWConfigError(
            f"progress= must be 'off', 'iterations', 'passes' or a callable, not {progress!r}."
        )

    def report(record: IterationRecord, unit: str) -> None:
        print(
            f"FW t={record.t}: loss {record.loss:.5f}{unit}  gap {record.gap:.4g}  "
            f"gamma {record.gamma:.4g}",
            file=sys.stderr,
            flush=True,
        )

    def on_iteration(loop, history, stop) -> None:
        if callable(progress):
            progress(history[-1])
        else:
            report(history[-1], f" {loop.loss_unit}" if loop.loss_unit else "")

    return on_iteration


def auto_start(model, slots, pool, problem, settings):
    """`init: auto` without mergekit: (start row, table, formed) over the base, task
    arithmetic and the screened starts; `formed`: the parameters hold the start
    (fw/start_grid.py `score_rows`)."""
    from mergekit_fw.fw.start_grid import builtin_rows, choose, score_rows

    loss, rows = problem.loss_of(model), builtin_rows(settings, len(pool) - 1)
    rows, held = score_rows(rows, slots, pool, loss, model, settings)
    chosen, table = choose(rows, loss_unit(settings, getattr(problem.objective, "name", None)))
    return chosen["row"], table, chosen["row"] == held


def select_slots(model: torch.nn.Module, include: Callable[[str], bool] | None) -> list:
    """One slot per merged floating-point parameter (tied names: one slot with aliases)."""
    from mergekit_fw.fw.slots import select_slots as chosen_slots

    slots = chosen_slots(model, include)
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


def check_loss(model, problem) -> None:
    """The loss on each task's first batch, at the base: a finite scalar with a gradient."""
    objective, task_names = problem.objective, problem.task_names
    seen: set[int] = set()
    model.eval()
    for batch in problem.batches:
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
