"""The FW options a recipe may set under `parameters:`, validated before any model loads.

`FWOptions` holds each option's type, range, default and description: mergekit's
`ParameterSpec`s are derived from it (method.py), and so are the error messages for typos,
which mergekit itself would drop. `FWSettings` adds the rules across options: the `CLASHES`
table (which choice of one option does not apply with which choices of others, why, and the
fix), checked in one place with one message format; the task-arithmetic start is checked by
the constraint set itself (fw/constraints.py `start_problem`). A recipe and the Python API
(`APIOptions`) go through one error path, `FWSettings.validated`, which only words an
option's name their way (`Wording`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

INIT_PREFIX = "init_"  # init_<name>: a parameter of the mergekit start (`init: ties`)
# the values of the options a new constraint set, step rule or objective adds to (one place:
# the recipe schema, the plan's settings and the Python API's keywords all use these)
ConstraintName = Literal["hull", "box", "simplex"]
StepName = Literal["line_search", "quadratic", "schedule", "constant"]
ObjectiveName = Literal["causal_lm", "classification", "entropy"]
ReductionName = Literal["sequence", "token", "sample_mean"]


class FWConfigError(ValueError):
    """A recipe problem the user can fix; raised before any gradient work starts.

    A plain exception: the algorithm does not depend on click. The command lines present it
    as click's one-line `Error: ...` without a traceback (mergekit/errors.py).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- combinations ------------------------------------------------------------------------
# Each option holds one choice (variant hard | soft, constraint hull | box | simplex, fw_steps
# vanilla | away | pairwise, ...). A choice that only works with some choices of other options
# says so here, once: `Clash` rows, checked in order by FWSettings, one message format.

Choice = Callable[[Any], "str | None"]  # the choice as a message names it, if the options hold it


def chosen(key: str, *values: Any, label: str = "") -> Choice:
    """The choice `key` is one of `values`, named `label` (default `key: value`)."""

    def name(options: Any) -> str | None:
        value = getattr(options, key)
        if value not in values:
            return None
        shown = str(value).lower() if isinstance(value, bool) else value
        return label or f"{key}: {shown}"

    return name


def mergekit_start(options: Any) -> str | None:
    """A mergekit merge as the start (`init: ties`, `init: recipe.yaml`), held in memory."""
    return f"init: {options.init}" if options.init_kind in ("method", "recipe") else None


def lora_vertices(options: Any) -> str | None:
    if options.lora_mode == "factors":
        return "lora_mode: factors"
    return "parameters.adapters (LoRA adapter vertices)" if options.adapters else None


def both(first: Choice, second: Choice) -> Choice:
    """Two choices together (named as the first)."""
    return lambda options: first(options) if first(options) and second(options) else None


SOFT = chosen("variant", "soft")
AWAY = chosen("fw_steps", "away", "pairwise")
NONLINEAR = chosen("merge_fn", "ties", "dare")
FACTORS = chosen("lora_mode", "factors")
ZERO_VERTEX = chosen("zero_vertex", True, label="zero_vertex: true")


def not_hull(options: Any) -> str | None:
    """Any set but the hull: options that rank or add whole vertices do not apply there."""
    return None if options.constraint == "hull" else f"constraint: {options.constraint}"


def scale_below_1(options: Any) -> str | None:
    """A box or simplex too small to hold a whole task vector (lambda = 1)."""
    if options.constraint == "hull" or options.scale >= 1.0:
        return None
    return f"constraint: {options.constraint} with scale {options.scale}"


@dataclass(frozen=True)
class Clash:
    """`choice` does not work with any of `others`: `why` (after the choice's name) and
    `fix` (what to write instead) make the one message."""

    choice: Choice
    others: tuple[Choice, ...]
    why: str
    fix: str

    def problem(self, options: Any) -> str | None:
        mine = self.choice(options)
        if not mine:
            return None
        for other in self.others:
            theirs = other(options)
            if theirs:
                return f"{mine} {self.why}; it does not apply with {theirs}. {self.fix}"
        return None


# what keeps a run from the out-of-core pre-pass (runner.choose_prepass asks too)
OUT_OF_CORE_CLASHES: tuple[Choice, ...] = (
    SOFT, AWAY, NONLINEAR, FACTORS,
    lambda o: f"{mergekit_start(o)} (a mergekit merge as the start)" if mergekit_start(o) else None,
)  # fmt: skip

CLASHES = (
    Clash(mergekit_start, (scale_below_1,),
          "adds the mergekit start as one more vertex, a task vector tau = start - base at "
          "lambda = 1, outside a box or simplex of scale below 1",
          "Use scale >= 1, constraint: hull, or init: base / task_arithmetic."),
    Clash(mergekit_start, (lora_vertices,), "runs a mergekit merge over dense models",
          "Use init: auto (it then compares the base and task arithmetic), base or "
          "task_arithmetic there."),
    Clash(NONLINEAR, (SOFT, FACTORS, AWAY),
          "is a hard-variant step over dense tensors, replayed per tensor at write time",
          "Use merge_fn: linear there."),
    Clash(chosen("prepass", "out_of_core"), OUT_OF_CORE_CLASHES,
          "runs the hard variant with vanilla linear steps over dense weights",
          "Use prepass: in_memory (or auto) there."),
    Clash(AWAY, (SOFT,),
          "applies to the hard variant (one vertex per step; FW-soft fits its own "
          "coefficients)", "Use variant: hard or fw_steps: vanilla."),
    Clash(AWAY, (ZERO_VERTEX,),
          "needs every vertex in the coefficient matrix, and the origin has no column there",
          "Remove zero_vertex or use fw_steps: vanilla."),
    Clash(AWAY, (FACTORS,), "is only built for the dense pool (the factor pool takes vanilla "
          "steps)", "Use fw_steps: vanilla."),
    Clash(chosen("zero_vertex", True, label="zero_vertex"), (SOFT,),
          "applies to the hard variant only (the origin as one more vertex to step to)",
          "Remove it or use variant: hard."),
    Clash(ZERO_VERTEX, (not_hull,),
          "adds the origin as a vertex of the hull; a box or simplex already contains the "
          "base and its LMO never picks the origin", "Remove zero_vertex, or use constraint: hull."),
    Clash(chosen("lmo", "cosine"), (not_hull,),
          "ranks whole vertices of the hull; a box or simplex selects task vectors by the "
          "sign (box) or size (simplex) of <g, tau_i>, which is lmo: inner",
          "Use lmo: inner, or constraint: hull."),
    Clash(FACTORS, (not_hull,),
          "runs FW on the LoRA factors, whose set is the hull of the adapters",
          "Add constraint: hull (the authors' settings), or use lora_mode: weights."),
    Clash(both(chosen("coefficients", "free"), SOFT), (not_hull,),
          "fits unconstrained weights, which ignores the set",
          "Use coefficients: simplex (the fit projected onto the set), or constraint: hull."),
)  # fmt: skip


def first_clash(options: Any, choices: tuple[Choice, ...]) -> str | None:
    return next((name for name in (c(options) for c in choices) if name), None)


def out_of_core_clash(options: Any) -> str | None:
    """The option that keeps a run from the out-of-core pre-pass, if any."""
    return first_clash(options, OUT_OF_CORE_CLASHES)


class FWOptions(BaseModel):
    """The Frank-Wolfe options, their types, ranges and defaults: no rule across options.

    Shared by a recipe's settings (FWSettings, which adds the rules) and the options a plan
    records (plan.PlanSettings, which fills what older plans lack).
    """

    # extra keys are allowed only as `init_<name>`: the parameters of a mergekit start
    # (`init: ties`), validated against that method's specs by mergekit/start.py
    model_config = ConfigDict(extra="allow", frozen=True)

    calibration: str = Field(
        description="data file (jsonl/json/txt/csv/parquet) or YAML manifest of named tasks"
    )
    iterations: int = Field(ge=1, le=10_000, description="FW budget T")
    lmo: Literal["inner", "cosine"] = Field(
        "inner", description="inner: <g, s> (paper eq. 7); cosine: authors' code"
    )
    granularity: Literal["tensor", "model"] = Field(
        "tensor", description="tensor: layer-wise LMO; model: task-wise LMO"
    )
    zero_vertex: bool = Field(False, description="origin as an extra vertex (authors' NLP code)")
    constraint: ConstraintName = Field(
        "box",
        description="set over task vectors tau_i = theta_i - base: hull (paper): lambda >= 0, "
        "sum <= 1 | box: 0 <= lambda_i <= scale | simplex: lambda >= 0, sum <= scale",
    )
    scale: float = Field(1.0, gt=0.0, description="kappa of constraint: box / simplex")
    max_distance: float = Field(
        0.5, gt=0.0, description="candidates with ||theta_i - base|| / ||base|| above are foreign"
    )
    foreign: Literal["exclude", "error", "keep"] = Field(
        "exclude", description="what to do with a foreign candidate: exclude (warn) | error | keep"
    )
    init: str = Field(
        "auto",
        description="starting point: auto (the data-free merge with the lowest calibration "
        "loss: base, task arithmetic, TIES) | base | task_arithmetic | a mergekit method name "
        "(its parameters as init_<name> keys) | path/to/recipe.yaml (mergekit recipe)",
    )
    init_scale: float = Field(0.3, description="lambda of the task-arithmetic start")
    screening: bool = Field(
        True,
        description="init: auto also scores each candidate alone and task arithmetic over "
        "the ones that gain alone (n + 12 passes, up to 4 reads of the pool; docs/starts.md) | "
        "false: the base, task arithmetic and TIES only",
    )
    fw_steps: Literal["vanilla", "away", "pairwise"] = Field(
        "vanilla",
        description="vanilla: toward the LMO vertex | away / pairwise: may also move weight "
        "off the worst active vertex, down to exactly 0 (Lacoste-Julien & Jaggi 2015)",
    )
    merge_fn: Literal["linear", "ties", "dare"] = Field(
        "linear",
        description="how a step applies d = s - theta: linear | ties: top merge_density of "
        "|d| per tensor | dare: seeded Bernoulli(merge_density) drop, rescaled",
    )
    merge_density: float = Field(
        0.2, gt=0.0, le=1.0, description="ties: fraction of d kept; dare: keep probability"
    )
    step: StepName = Field(
        "quadratic",
        description="quadratic: fit from the loss, the slope (-FW gap) and 1-2 forward "
        "passes, line search as fallback | line_search: halving + golden section (up to "
        "line_search_evals forward passes) | schedule: step_size*2/(t+2) | constant",
    )
    step_size: float = Field(1.0, gt=0.0, le=1.0, description="scale of schedule/constant steps")
    line_search_evals: int = Field(
        10, ge=3, le=64, description="loss evaluations per line search (quadratic: fallback)"
    )
    tolerance: float = Field(0.0, description="stop when the FW gap falls to this (-.inf: never)")
    prepass: Literal["auto", "in_memory", "out_of_core"] = Field(
        "auto",
        description="where the pre-pass holds the model: in_memory (model + gradient on the "
        "math device) | out_of_core (block by block from disk; memory flat in depth) | auto: "
        "in memory when `mergekit-fw check --estimate` says it fits, else out of core",
    )
    max_length: int = Field(512, ge=2, description="tokens per calibration sample")
    batch_size: int = Field(8, ge=1, description="calibration samples per forward pass")
    seed: int = Field(0, description="torch seed for the pre-pass")
    adapters: str | None = Field(
        None, description="YAML manifest of PEFT LoRA adapters of the base, added as candidates"
    )
    lora_mode: Literal["weights", "factors"] = Field(
        "weights",
        description="weights: adapter vertex W0 + s B A, dense output | factors: authors' "
        "G-hard on the A/B factors, writes a LoRA adapter",
    )
    objective: ObjectiveName = Field(
        "causal_lm", description="causal_lm | classification (sequence classifiers) | entropy"
    )
    reduction: ReductionName = Field(
        "sequence",
        description="a task's loss: sequence: mean over samples of the summed target NLL "
        "(-log P(response)) | token: mean over target tokens | sample_mean: mean over "
        "samples of each one's mean token NLL (the authors' code). One task: sequence and "
        "token give the same merge; several: sequence weighs each task by its mean target "
        "length",
    )
    variant: Literal["hard", "soft"] = Field(
        "hard", description="hard: step to one vertex; soft: fit coefficients of k vertices"
    )
    topk: int = Field(2, ge=1, le=64, description="soft, select topk: vertices per iteration")
    select: Literal["topk", "per_task"] = Field(
        "topk", description="soft: k best of one LMO | one distinct argmin per task (authors)"
    )
    coefficients: Literal["simplex", "free"] = Field(
        "simplex",
        description="soft: projected GD on the simplex (paper) | Adam, unconstrained (authors)",
    )
    fit_granularity: Literal["tensor", "model"] = Field(
        "tensor", description="soft: one coefficient per tensor and vertex | per vertex"
    )
    inner_steps: int = Field(20, ge=1, le=10_000, description="soft: coefficient-fit steps")
    plan: str | None = Field(
        None,
        min_length=1,
        description="fw_plan.json of an earlier run or of `mergekit-fw plan`: write from it "
        "(no calibration data, no gradients) if its input fingerprint matches this recipe",
    )
    inner_lr: float | None = Field(
        None,
        gt=0.0,
        description="soft: free -> Adam learning rate (default 0.05); simplex -> first trial "
        "move of the largest weight (default 1.0, a full step), then adaptive",
    )

    @property
    def init_kind(self) -> str:
        """builtin (base, task_arithmetic) | auto | recipe (a YAML file) | method (mergekit)."""
        if self.init in ("base", "task_arithmetic"):
            return "builtin"
        if self.init == "auto":
            return "auto"
        if self.init.endswith((".yaml", ".yml")):
            return "recipe"
        return "method"

    @property
    def init_parameters(self) -> dict[str, Any]:
        """`init_density: 0.5` -> {"density": 0.5}: the mergekit start's parameters."""
        return {k[len(INIT_PREFIX) :]: v for k, v in (self.model_extra or {}).items()}

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# options that a choice leaves unused: (keys, when they are unused, the choice they serve).
# Set away from their defaults there, they are ignored with a warning, not refused: sweeps
# and recipes that set them across variants keep running (`FWSettings.unused`).
UNUSED: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (("topk", "select", "coefficients", "fit_granularity", "inner_steps", "inner_lr"),
     lambda o: o.variant == "hard", "variant: soft"),
    (("merge_density",), lambda o: o.merge_fn == "linear", "merge_fn: ties | dare"),
    (("step_size",), lambda o: o.step in ("quadratic", "line_search"),
     "step: schedule | constant"),
    (("line_search_evals",), lambda o: o.step in ("schedule", "constant"),
     "step: quadratic | line_search"),
    (("scale",), lambda o: o.constraint == "hull", "constraint: box | simplex"),
    (("init_scale",), lambda o: o.init != "task_arithmetic", "init: task_arithmetic"),
    (("screening",), lambda o: o.init != "auto", "init: auto"),
    (("lora_mode",), lambda o: o.adapters is None, "adapters"),
)  # fmt: skip


class FWSettings(FWOptions):
    """Frank-Wolfe options: `parameters:` of a `merge_method: frank_wolfe` recipe."""

    def unused(self) -> list[str]:
        """One line per option set away from its default that the other choices ignore."""
        lines = []
        for keys, idle, serves in UNUSED:
            if not idle(self):
                continue
            for key in keys:
                if getattr(self, key) != type(self).model_fields[key].default:
                    lines.append(f"{key} only applies with {serves}, so it is ignored here")
        return lines

    @model_validator(mode="after")
    def _rules(self) -> FWSettings:
        """Rules across options: numbers, the form of `init`, the clashes (CLASHES), the
        task-arithmetic start inside the set; the first broken one is the error."""
        if not math.isfinite(self.init_scale):
            raise ValueError("init_scale must be a finite number")
        if math.isnan(self.tolerance):
            raise ValueError("tolerance must not be NaN")
        if not math.isfinite(self.scale) or not math.isfinite(self.max_distance):
            raise ValueError("scale and max_distance must be finite numbers")
        self._check_init()
        for clash in CLASHES:
            problem = clash.problem(self)
            if problem:
                raise ValueError(problem)
        if self.init == "task_arithmetic" and self.constraint != "hull":
            from mergekit_fw.fw.constraints import make_constraint  # torch: only here

            problem = make_constraint(self).start_problem(self.init_scale, None)
            if problem:
                raise ValueError(problem)
        return self

    def _check_init(self) -> None:
        """The form of `init` and its `init_*` keys; mergekit/start.py checks the method."""
        if not self.init.strip():
            raise ValueError("init must not be empty; use base, task_arithmetic or auto")
        extra = dict(self.model_extra or {})
        for key, value in extra.items():
            if not key.startswith(INIT_PREFIX) or key == INIT_PREFIX:
                raise ValueError(f"unknown key {key!r}")
            if isinstance(value, (list, dict)):
                raise ValueError(f"{key} must be a single value, not a {type(value).__name__}")
        if extra and self.init_kind != "method":
            where = (
                "the recipe file sets its own parameters"
                if self.init_kind == "recipe"
                else f"init: {self.init} takes none (init_scale is task_arithmetic's lambda)"
            )
            close = difflib.get_close_matches(next(iter(extra)), self.keys(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"{', '.join(extra)} only apply to a mergekit method start (e.g. init: ties); "
                f"{where}. Remove them or name a mergekit method under init.{hint}"
            )

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.model_fields)

    @classmethod
    def from_parameters(cls, raw: dict[str, Any] | None) -> FWSettings:
        """Validate a recipe's `parameters:` block, with messages that name the fix."""
        return cls.validated(raw, RECIPE_WORDS)

    @classmethod
    def validated(cls, raw: dict[str, Any] | None, words: Wording) -> Any:
        """The one error path of options, a recipe's or the API's: every problem becomes
        one FWConfigError whose option names are `words`'."""
        raw = dict(raw or {})
        unknown = [
            key for key in raw if key not in cls.model_fields and not key.startswith(INIT_PREFIX)
        ]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, cls.keys(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise FWConfigError(
                f"{words.unknown.format(key)}{hint} Valid keys: {', '.join(cls.keys())}."
            )
        for key, value in raw.items():
            if isinstance(value, (list, dict)):
                raise FWConfigError(
                    f"{words.option.format(key)} must be a single value for frank_wolfe, not a "
                    f"{type(value).__name__} (per-layer gradients and filters do not apply "
                    "to FW options)."
                )
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            problems = []
            for item in error.errors():
                where = ".".join(str(p) for p in item["loc"])
                if not item["loc"]:  # a model-level rule: its message names the keys
                    problems.append(item["msg"].removeprefix("Value error, "))
                elif item["type"] == "missing":
                    desc = cls.model_fields[where].description if where in cls.model_fields else ""
                    problems.append(f"{words.option.format(where)} is required ({desc})")
                else:
                    problems.append(
                        f"{words.option.format(where)}: {item['msg']} (got {item.get('input')!r})"
                    )
            raise FWConfigError("Invalid frank_wolfe options: " + "; ".join(problems)) from None


@dataclass(frozen=True)
class Wording:
    """How an error names an option: a recipe's `parameters.<key>`, or the API's keyword."""

    option: str  # "{}": the key
    unknown: str  # the sentence for a key there is no option of


RECIPE_WORDS = Wording(
    "parameters.{}", "Unknown key '{}' under parameters: for merge_method frank_wolfe."
)
API_WORDS = Wording("option {}", "Unknown option '{}'.")


RECIPE_ONLY = {
    "max_length": "tokenize your own batches",
    "batch_size": "pass batches of the size you want in data=",
    "adapters": "pass the adapters' merged weights as candidates",
    "lora_mode": "merge LoRA factors through a recipe",
    "objective": "pass the objective as loss= (a callable, or 'causal_lm' | 'classification' "
    "| 'entropy')",
}


class APIOptions(FWSettings):
    """The options of `mergekit_fw.frank_wolfe_merge`: the recipe's, minus the data file.

    The calibration data is the `data=` argument there, so `calibration` is not required
    (a recipe still must name it: FWSettings is unchanged). Recipe-only keys are refused.
    """

    calibration: str | None = Field(None, description="unused by the API (data= holds the data)")

    @classmethod
    def from_options(cls, raw: dict[str, Any]) -> APIOptions:
        """Validate keyword options: the recipe's checks, worded for a Python caller."""
        for key in raw:
            if key in RECIPE_ONLY or key == "calibration":
                fix = RECIPE_ONLY.get(key, "pass the batches as data=")
                raise FWConfigError(
                    f"frank_wolfe_merge() does not take '{key}' (a recipe option): {fix}."
                )
        settings = cls.validated(raw, API_WORDS)
        if settings.init_kind in ("method", "recipe"):
            raise FWConfigError(
                f"frank_wolfe_merge() cannot start from init={settings.init!r}: a mergekit merge "
                "needs mergekit's loader (a recipe option). Use init='auto' (the base or task "
                "arithmetic, by calibration loss), 'base' or 'task_arithmetic', or pass the "
                "merge to start from as one more candidate."
            )
        return settings
