"""`merge_method: frank_wolfe` for mergekit 0.1.5.

The kernel does no optimisation. The pre-pass (runner.py) has already turned the FW run
into per-tensor coefficients over [base, candidates]; each tensor is then produced by
mergekit's own `linear` kernel (normalize: false), through mergekit's lazy loader and
executor. The options are declared as mergekit parameters, derived from FWSettings, so
mergekit's own validation agrees with ours.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import (
    MISSING,
    BasePolicy,
    GroupMergeMethod,
    InputContract,
    MergeMethodSpec,
    OptionalTensorPolicy,
    ParameterScope,
    ParameterSpec,
    TensorGroup,
)

from mergekit_fw.config import FWSettings
from mergekit_fw.plan import FWPlan
from mergekit_fw.validate import METHOD_NAME

_lock = threading.Lock()
_active: list[FWPlan] = []


@contextmanager
def active_plan(plan: FWPlan):
    """Make `plan` the one the kernel reads while mergekit's executor runs."""
    with _lock:
        _active.append(plan)
    try:
        yield plan
    finally:
        with _lock:
            _active.remove(plan)


def _plan_for(ids: set[str]) -> FWPlan:
    with _lock:
        plans = [p for p in reversed(_active) if ids <= set(p.models)]
    if not plans:
        raise RuntimeError(
            "frank_wolfe: no Frank-Wolfe plan is prepared for these models. Run the recipe with "
            "`mergekit-yaml` (mergekit-fw installed) or `mergekit-fw run`, or call "
            "mergekit_fw.runner.run_fw_merge from Python."
        )
    return plans[0]


def parameter_specs() -> tuple[ParameterSpec, ...]:
    return tuple(
        ParameterSpec(
            name=name,
            value_type=field.annotation,
            scope=ParameterScope.SHARED,
            default=MISSING if field.is_required() else field.default,
            description=field.description,
        )
        for name, field in FWSettings.model_fields.items()
    )


class FrankWolfeMerge(GroupMergeMethod):
    spec = MergeMethodSpec(
        name=METHOD_NAME,
        parameters=parameter_specs(),
        # min_non_base=0: a pool of LoRA adapters only lists the base under `models:`;
        # validate.check_recipe requires at least one candidate, dense or adapter
        contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=0),
        pretty_name="Frank-Wolfe Merging",
        reference_url="https://arxiv.org/abs/2503.12649",
        optional_tensor_policy=OptionalTensorPolicy.PASSTHROUGH_BASE_SINGLETON,
    )

    def merge_group(self, group: TensorGroup, /, **parameters) -> torch.Tensor:
        from mergekit import merge_methods

        by_name = {str(entry.id): entry.id for entry in group.entries}
        plan = _plan_for(set(by_name))
        coefficients = plan.coefficients_for(group.metadata.name)
        if coefficients is None:
            # Not a parameter of the transformers model (e.g. a stored buffer): the
            # pre-pass left it at the base, so the output does too.
            weight = {entry.id: 1.0 if entry.is_base else 0.0 for entry in group.entries}
        elif plan.adapters:  # adapter vertices W0 + s B A, added from their factors
            from mergekit_fw.adapters import merge_with_adapters

            return merge_with_adapters(group, plan, coefficients)
        else:
            weight = {by_name[key]: coefficients[key] for key in by_name}
        linear = merge_methods.get("linear")
        (merged,) = linear((group,), parameters={"weight": weight, "normalize": False})
        return merged


def register() -> None:
    """Idempotent: called by the import hook and by `import mergekit_fw`."""
    names = {m.spec.name for m in registry.registered_methods()}
    if METHOD_NAME not in names:
        registry.register(FrankWolfeMerge())


register()
