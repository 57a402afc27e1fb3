"""FWPlan: what the pre-pass hands to mergekit's executor, and what the user can audit.

Every FW update is linear, so the last iterate is, per tensor, sum_k c_k theta_k over
[base, candidates]. The plan stores those coefficients plus the trajectory (loss, gap,
gamma and the pick of each tensor per iteration). It can be exported as a plain mergekit
`linear` recipe that reproduces the merge without mergekit-fw, data or gradients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mergekit_fw.settings import ConstraintName, FWConfigError, FWOptions, ReductionName

PLAN_FORMAT = "mergekit_fw/plan-v1"
PLAN_FILE = "fw_plan.json"
# The unit of every calibration loss a run reports (log, plan, card, plots), by `reduction`.
LOSS_UNITS = {
    "sequence": "nats/sample",  # a sample's summed target NLL, -log P(response)
    "token": "nats/token",  # mean over target tokens
    "sample_mean": "nats/token, mean of samples",  # each sample's mean token NLL, averaged
}


def loss_unit(settings: FWOptions, objective: str | None = None) -> str:
    """The unit of the calibration losses of a run with these options (`objective`: the
    objective's name where the options do not hold it). Classification losses are one term
    per sample whatever the reduction; a Python loss (`callable:...`) has the user's unit: ""."""
    objective = objective or settings.objective
    if str(objective).startswith("callable"):
        return ""
    if objective == "classification":
        return "nats/sample"
    return LOSS_UNITS.get(settings.reduction, "nats")


class PlanSettings(FWOptions):
    """The options a plan was computed with (fw_plan.json's `settings`): typed and frozen.

    No rule across options is checked again: the run that wrote the plan checked them. A
    plan written before an option existed loads with what its absence meant then.
    """

    calibration: str | None = None  # None: the Python API's data= (no data file)
    objective: str = "causal_lm"  # also a Python loss's name, callable:<name>
    constraint: ConstraintName = "hull"  # before box / simplex: the hull
    reduction: ReductionName = "token"  # before: per token
    init: str = "base"  # before init: auto, the base
    screening: bool = False  # before screening, init: auto had none


class IterationRecord(BaseModel):
    t: int
    loss: float  # f(theta_t), before the step
    task_losses: dict[str, float]
    gap: float  # <-grad, s - theta_t>
    gamma: float  # 0 when the run stopped at this iteration
    wins: dict[str, int]  # vertex label -> tensors it won
    picks: dict[str, str]  # tensor -> vertex label ("a+b" for the k vertices of a soft step)
    soft_weights: dict[str, float] = Field(
        default_factory=dict
    )  # soft: mean fitted weight per vertex
    task_wins: dict[str, dict[str, int]] = Field(
        default_factory=dict
    )  # per_task: task -> label -> tensors
    steps: dict[str, int] = Field(default_factory=dict)  # fw_steps away/pairwise: kind -> rows
    moves: list[float] = Field(default_factory=list)  # theta += delta * d, in order (replay)


class ExcludedCandidate(BaseModel):
    """A candidate the foreign screen left out of the pool (mergekit/foreign.py)."""

    model: str  # its entry as it would have been in `models` (adapters: "adapter:<folder>")
    label: str
    distance: float  # ||theta_i - base|| / ||base||
    max_distance: float
    reason: str


class FWPlan(BaseModel):
    """A finished pre-pass: a frozen value (a changed copy: `model_copy(update=...)`)."""

    model_config = ConfigDict(frozen=True)

    format: str = PLAN_FORMAT
    settings: PlanSettings
    base_model: str
    models: list[str]  # str(ModelReference); index 0 is the base
    labels: list[str]  # short names, same order
    tensors: list[str]  # tensors the pre-pass optimised (primary names)
    aliases: dict[str, str] = Field(default_factory=dict)  # tied name -> primary name
    coefficients: dict[str, list[float]]  # primary tensor name -> c over `models`
    iterations: list[IterationRecord]
    final_loss: float
    final_task_losses: dict[str, float]
    stopped: Literal[
        "budget", "tolerance", "no_descent"
    ]  # no_descent: line search found no lower loss
    task_preferences: dict[str, dict[str, int]] = Field(default_factory=dict)
    seconds: float = 0.0
    # LoRA adapter vertices (adapters.py): entry of `models` ("adapter:<folder>") -> folder
    adapters: dict[str, str] = Field(default_factory=dict)
    # foreign screen: candidate entry -> ||theta_i - base|| / ||base||, and who was left out
    distances: dict[str, float] = Field(default_factory=dict)
    excluded: list[ExcludedCandidate] = Field(default_factory=list)
    # a mergekit start vertex (init: ties | recipe.yaml | auto's TIES): id, label, recipe
    start: dict[str, Any] | None = None
    # init: auto: every data-free start tried, its calibration loss, and which was chosen
    init_table: list[dict[str, Any]] = Field(default_factory=list)
    # the first iterate as coefficients over `models`, when the host gave one (fw/replay.py)
    start_row: list[float] | None = None
    # the inputs it was computed from (mergekit/resume.py run_fingerprint): a saved plan is
    # applied only to a recipe whose inputs still fingerprint the same
    fingerprint: dict[str, Any] = Field(default_factory=dict)

    @computed_field  # written into fw_plan.json, next to the losses it qualifies
    @property
    def loss_unit(self) -> str:
        """The unit of `final_loss`, every iteration's `loss` and the init table's losses."""
        return loss_unit(self.settings)

    def coefficients_for(self, tensor_name: str) -> list[float] | None:
        """The tensor's coefficients over `models` (tied names resolve to their primary);
        None if the pre-pass did not optimise it."""
        return self.coefficients.get(self.aliases.get(tensor_name, tensor_name))

    def total_coefficients(self) -> dict[str, float]:
        """Sum of each model's coefficient over tensors: a rough 'who contributed' ranking."""
        totals = [0.0] * len(self.models)
        for row in self.coefficients.values():
            for k, value in enumerate(row):
                totals[k] += value
        return dict(zip(self.labels, totals))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: str | Path) -> FWPlan:
        data = json.loads(Path(path).read_text())
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path} is not a {PLAN_FORMAT} file")
        return cls.model_validate(data)

    def linear_recipe_refusal(self) -> str | None:
        """Why no stock mergekit `linear` recipe reproduces this merge, if none does."""
        if self.adapters:
            return (
                "has LoRA adapter vertices, which a mergekit `linear` recipe cannot express "
                "(mergekit would densify them)"
            )
        if self.settings.merge_fn != "linear":
            return f"took merge_fn: {self.settings.merge_fn} steps, which are not linear in the vertices"
        if self.start:
            return (
                f"has a mergekit start vertex ({self.start['id']}), which only existed in "
                "memory; a mergekit `linear` recipe cannot name it"
            )
        return None

    def linear_recipe(self, dtype: str | None = None) -> dict[str, Any]:
        """A stock mergekit `linear` recipe with one filter per tensor.

        mergekit filters are substring matches where the first match wins, so longer names
        come first: a name can only be a substring of a longer one. Unplanned tensors
        fall back to the base, as they do in the FW kernel.
        """
        why_not = self.linear_recipe_refusal()
        if why_not:
            raise FWConfigError(
                f"This plan {why_not}, so no mergekit `linear` recipe gives this merge; "
                "re-run the frank_wolfe recipe instead."
            )
        names = sorted({*self.coefficients, *self.aliases}, key=lambda n: (-len(n), n))
        models = []
        for k, ref in enumerate(self.models):
            weights: list[dict[str, Any]] = [
                {"filter": name, "value": self.coefficients[self.aliases.get(name, name)][k]}
                for name in names
            ]
            weights.append({"value": 1.0 if k == 0 else 0.0})
            models.append({"model": ref, "parameters": {"weight": weights}})
        recipe: dict[str, Any] = {
            "merge_method": "linear",
            "models": models,
            "parameters": {"normalize": False},
        }
        if dtype:
            recipe["dtype"] = dtype
        return recipe
