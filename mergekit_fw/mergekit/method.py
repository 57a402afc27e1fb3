"""`merge_method: frank_wolfe` for mergekit 0.1.5.

The kernel does no optimisation and no arithmetic. The pre-pass (runner.py) has already
turned the FW run into per-tensor coefficients over [base, candidates], and the write
phase's gather task (streaming.py) streams the vertices into sum_k c_k theta_k, so the
kernel returns that tensor; mergekit's executor schedules, casts and writes it. The
options are declared as mergekit parameters, derived from FWSettings, so mergekit's own
validation agrees with ours.
"""

from __future__ import annotations

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

from mergekit_fw.mergekit.checks import METHOD_NAME
from mergekit_fw.settings import FWSettings


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
        from mergekit_fw.mergekit.streaming import is_streamed

        if group.base is None:
            raise RuntimeError(
                f"frank_wolfe: {group.metadata.name} is missing from the base model, and every "
                "Frank-Wolfe output tensor is a combination that includes the base."
            )
        if not is_streamed(entry.id for entry in group.entries):
            raise RuntimeError(
                "frank_wolfe: no Frank-Wolfe plan is prepared for these models. Run the "
                "recipe with `mergekit-yaml` (mergekit-fw installed) or `mergekit-fw run`, or "
                "call mergekit_fw.mergekit.runner.run_fw_merge from Python."
            )
        # streaming.StreamedGather has already formed sum_k c_k theta_k as the base input
        # (or, for a tensor the pre-pass did not optimise, left the base's own tensor)
        return group.base.tensor


def register() -> None:
    """Idempotent: called by the import hook and by `import mergekit_fw`."""
    names = {m.spec.name for m in registry.registered_methods()}
    if METHOD_NAME not in names:
        registry.register(FrankWolfeMerge())


register()
