"""Saved plans: run the pre-pass once (`mergekit-fw plan`), write from it later, elsewhere.

A plan carries the fingerprint of the inputs it was computed from (resume.run_fingerprint).
Writing from a plan (`mergekit-fw run CONFIG OUT --plan plan.json`, or `parameters: plan:`
for the stock `mergekit-yaml`) reads no calibration data and takes no gradient; it first
checks that the recipe's settings, dtype, models and adapters still fingerprint the same,
and refuses with the list of differences otherwise. The calibration data is not read, so
it is not compared (its hash stays in the plan, for the record).
"""

from __future__ import annotations

import logging

import torch
from mergekit.config import MergeConfiguration

from mergekit_fw.mergekit.checks import Recipe, raw_parameters
from mergekit_fw.mergekit.resume import PLAN_KEYS, differences, run_fingerprint
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWConfigError

LOG = logging.getLogger("mergekit_fw")


def plan_file_of(config: MergeConfiguration) -> str | None:
    """`parameters: plan:` of a frank_wolfe recipe, if set (validated by FWSettings later)."""
    value = raw_parameters(config).get("plan")
    return value if isinstance(value, str) and value else None


def read_plan(path: str) -> FWPlan:
    try:
        return FWPlan.load(path)
    except FileNotFoundError:
        raise FWConfigError(f"No such plan file: {path}") from None
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FWConfigError(f"{path} is not a readable mergekit-fw plan: {first}") from None


RANDOM_METHODS = ("dare", "della", "breadcrumbs")  # merges that draw random masks


def saved_start(path: str, options, dtype: torch.dtype):
    """The plan's mergekit start vertex (e.g. the TIES start `init: auto` chose), merged
    again by mergekit from the recipe the plan records, streamed into memory; None if the
    plan has none. Only deterministic merges are re-done: a random one would not give the
    start the pre-pass used."""
    from mergekit_fw.mergekit.start import merged_tensors
    from mergekit_fw.pool.start_vertex import StartVertex

    plan = read_plan(path)
    if not plan.start:
        return None
    recipe = plan.start.get("recipe") or {}
    method = str(recipe.get("merge_method", ""))
    if not recipe or any(word in method for word in RANDOM_METHODS):
        raise FWConfigError(
            f"The plan {path} starts from {plan.start['id']} ({method or 'no recipe'}), which "
            "cannot be merged again identically (random masks or no recorded recipe); run "
            "without --plan, or plan with a deterministic init (auto, ties, base)."
        )
    config = MergeConfiguration.model_validate(recipe)
    vertex = StartVertex(plan.start["id"], plan.start["label"], recipe)
    vertex.aliases = dict(plan.aliases)
    what = f"The plan's start {plan.start['id']} merged again"
    for name, tensor in merged_tensors(config, options, set(plan.tensors), vertex.aliases,
                                       dtype, what):  # fmt: skip
        vertex.put(name, tensor)
    LOG.info("Start vertex %s merged again from the plan's recipe", plan.start["id"])
    return vertex


def load_matching_plan(
    path: str, recipe: Recipe, config: MergeConfiguration, device: torch.device, ids: list[str]
) -> FWPlan:
    """The saved plan at `path`, if it was computed from this recipe's inputs (`ids`: the
    vertex pool's plan entries, in order)."""
    plan = read_plan(path)
    if not plan.fingerprint:
        raise FWConfigError(
            f"The plan {path} has no input fingerprint (written before mergekit-fw saved one); "
            "re-create it with `mergekit-fw plan CONFIG -o PLAN`."
        )
    current = run_fingerprint(recipe, config, device, with_calibration=False)
    changed = differences(plan.fingerprint, current, keys=PLAN_KEYS)
    if not changed and plan.models != ids:
        changed = [f"models or their order ({plan.models} -> {ids})"]
    if changed:
        raise FWConfigError(
            f"The plan {path} does not match this recipe's inputs: {'; '.join(changed)}. "
            "Re-create it with `mergekit-fw plan CONFIG -o PLAN`, or run without --plan."
        )
    LOG.info("Writing from the saved plan %s (no calibration data, no gradients)", path)
    return plan
