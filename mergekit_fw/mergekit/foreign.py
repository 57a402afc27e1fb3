"""The foreign-candidate screen: run after the recipe checks, before any gradient work.

Every candidate's relative distance from the base (pool/distances.py) is compared with
`max_distance`; what happens to a candidate beyond it is `foreign`: `exclude` (default:
left out of the pool with a warning naming it and both numbers; fw_plan.json and the model
card list it), `error` (FWConfigError, nothing computed), or `keep` (a warning only).
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from mergekit_fw.mergekit.checks import Recipe
from mergekit_fw.plan import ExcludedCandidate
from mergekit_fw.pool.distances import relative_distances
from mergekit_fw.pool.vertices import VertexPool
from mergekit_fw.settings import FWConfigError

LOG = logging.getLogger("mergekit_fw")


def candidate_distances(recipe: Recipe) -> list[tuple[str, str, float]]:
    """(plan entry, label, ||theta_i - base|| / ||base||) per candidate, adapters last."""
    pool = VertexPool(
        [recipe.base, *recipe.candidates], torch.device("cpu"), torch.float32, recipe.adapters
    )
    return list(zip(pool.ids[1:], pool.labels[1:], relative_distances(pool)))


def screen_foreign(recipe: Recipe) -> Recipe:
    """The recipe with foreign candidates handled as `foreign` says."""
    s = recipe.settings
    rows = candidate_distances(recipe)
    far = [(entry, label, d) for entry, label, d in rows if d > s.max_distance]
    why = "farther from the base than max_distance: fine-tuned from another base?"
    if far and s.foreign == "error":
        listed = "; ".join(f"{label} ({entry}): {d:.3f}" for entry, label, d in far)
        raise FWConfigError(
            f"Foreign candidates, ||theta - base|| / ||base|| above max_distance "
            f"{s.max_distance}: {listed}. Remove them from the recipe, raise max_distance, or "
            "set foreign: exclude (leave them out) or foreign: keep."
        )
    for entry, label, d in far:
        action = "kept (foreign: keep)" if s.foreign == "keep" else "left out of the pool"
        LOG.warning(
            "Candidate %s (%s) is foreign: ||theta - base|| / ||base|| = %.4f > max_distance "
            "%g; %s.", label, entry, d, s.max_distance, action,
        )  # fmt: skip
    distances = {entry: d for entry, _, d in rows}
    if s.foreign == "keep" or not far:
        return dataclasses.replace(recipe, distances=distances)
    gone = {entry for entry, _, _ in far}
    candidates = tuple(ref for ref in recipe.candidates if str(ref) not in gone)
    adapters = tuple(a for a in recipe.adapters if a.id not in gone)
    if not candidates and not adapters:
        raise FWConfigError(
            f"Every candidate is farther from the base than max_distance {s.max_distance} "
            f"({', '.join(f'{label}: {d:.3f}' for _, label, d in far)}); nothing is left to "
            "merge. Check base_model, or raise max_distance / set foreign: keep."
        )
    excluded = tuple(
        ExcludedCandidate(
            model=entry, label=label, distance=d, max_distance=s.max_distance, reason=why
        )
        for entry, label, d in far
    )
    return dataclasses.replace(
        recipe, candidates=candidates, adapters=adapters, distances=distances, excluded=excluded
    )


def kept_config(config, recipe: Recipe):
    """The mergekit configuration without the excluded candidates (what mergekit writes)."""
    gone = {e.model for e in recipe.excluded}
    if not gone:
        return config
    models = [m for m in config.models if str(m.model) not in gone]
    return config.model_copy(update={"models": models})
