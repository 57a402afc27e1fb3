"""`merge_method: frank_wolfe` for mergekit 0.1.5.

The kernel does no optimisation and no arithmetic. The pre-pass (runner.py) has already
turned the FW run into per-tensor coefficients over [base, candidates], and the write
phase's gather task (streaming.py) streams the vertices into sum_k c_k theta_k, so the
kernel returns that tensor; mergekit's executor schedules, casts and writes it. The
options are declared as mergekit parameters, derived from FWSettings, so mergekit's own
validation agrees with ours. The method is registered only while a frank_wolfe run plans and
writes (`registered`), so mergekit's own enumerations of its methods never see it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
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


def register() -> bool:
    """Add frank_wolfe to mergekit's registry (idempotent); True if this call added it."""
    names = {m.spec.name for m in registry.registered_methods()}
    if METHOD_NAME not in names:
        registry.register(FrankWolfeMerge())
        return True
    return False


_users = 0
_added = False
_lock = threading.Lock()


@contextmanager
def registered() -> Iterator[None]:
    """frank_wolfe is in mergekit's registry only while a frank_wolfe recipe is planned and
    written (runner.run_fw_merge). mergekit enumerates its registry and expects every method
    there to merge plain state dicts (`merge_state_dicts`, its test suite), which FW cannot
    do without calibration data and a model; outside a run it is therefore not listed.
    mergekit has no unregister, so this removes the entry from its (0.1.5) registry dict."""
    global _users, _added
    with _lock:
        if _users == 0:
            _added = register()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _added:
                registry._METHODS.pop(METHOD_NAME, None)
                _added = False
