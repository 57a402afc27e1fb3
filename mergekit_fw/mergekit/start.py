"""A mergekit merge as the FW start (`init: ties`, `init: path/to/recipe.yaml`).

The start is computed by mergekit's own planner and executor (`plan_in_memory`): the
executor gathers one output tensor's inputs at a time, runs the method's kernel and hands
the result back, so all candidates are never in memory together and nothing is written to
disk. The caller decides where each finished tensor goes (into the model, into an
in-memory start vertex: pool/start_vertex.py).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import yaml
from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions
from pydantic import ValidationError

from mergekit_fw.pool.start_vertex import StartVertex
from mergekit_fw.settings import INIT_PREFIX, FWConfigError, FWSettings

FW_METHOD = "frank_wolfe"


def _method_spec(name: str):
    from mergekit.merge_methods import registry

    methods = {m.spec.name: m.spec for m in registry.registered_methods()}
    if name == FW_METHOD:
        raise FWConfigError("init: frank_wolfe would start FW from itself; name another method.")
    if name not in methods:
        import difflib

        close = difflib.get_close_matches(name, list(methods), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise FWConfigError(
            f"init: {name!r} is neither base, task_arithmetic, auto, a recipe file (*.yaml) nor "
            f"a mergekit merge method.{hint} Methods: "
            f"{', '.join(sorted(m for m in methods if m != FW_METHOD))}."
        )
    return methods[name]


def method_config(
    method: str,
    params: dict[str, Any],
    base: ModelReference,
    candidates: list[ModelReference],
    dtype,
) -> MergeConfiguration:
    """`init: <method>` + `init_<name>` keys -> a mergekit recipe over the run's models.

    Each key is validated against the method's ParameterSpec (unknown names, types,
    required values); input-scoped parameters are given to every candidate alike.
    """
    spec = _method_spec(method)
    known = {p.name: p for p in spec.parameters}
    for key in params:
        if key not in known:
            valid = ", ".join(INIT_PREFIX + n for n in known) or "none"
            raise FWConfigError(
                f"{INIT_PREFIX}{key} is not a parameter of mergekit's {spec.name}; "
                f"its parameters: {valid}."
            )
    shared: dict[str, Any] = {}
    per_model: dict[str, Any] = {}
    for name, p in known.items():
        if name not in params:
            if p.required:
                raise FWConfigError(
                    f"init: {spec.name} needs {INIT_PREFIX}{name} "
                    f"({p.description or p.value_type}); add it under parameters:."
                )
            continue
        try:
            value = p.validate(params[name])
        except ValidationError as error:
            msg = error.errors()[0]["msg"]
            raise FWConfigError(
                f"{INIT_PREFIX}{name}: {msg} (got {params[name]!r}) for mergekit's {spec.name}."
            ) from None
        (shared if p.scope.value == "shared" else per_model)[name] = value
    recipe: dict[str, Any] = {
        "merge_method": spec.name,
        "base_model": str(base),
        "models": [
            {"model": str(ref), **({"parameters": dict(per_model)} if per_model else {})}
            for ref in candidates
        ],
        "dtype": dtype,
    }
    if shared:
        recipe["parameters"] = shared
    return _validated(recipe, f"init: {spec.name}")


def recipe_config(
    path: str, base: ModelReference, candidates: list[ModelReference], dtype
) -> MergeConfiguration:
    """`init: path/to/recipe.yaml`: any mergekit recipe over the run's base and candidates."""
    if not os.path.isfile(path):
        raise FWConfigError(
            f"init: {path}: no such recipe file (resolved from {os.getcwd()}). "
            "Fix the path; relative paths resolve from the working directory."
        )
    try:
        raw = yaml.safe_load(open(path, encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FWConfigError(f"init: {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise FWConfigError(f"init: {path} is not a mergekit recipe (a YAML mapping).")
    if raw.get("merge_method") == FW_METHOD:
        raise FWConfigError(f"init: {path} is a frank_wolfe recipe; name another merge.")
    config = _validated(raw, f"init: {path}")
    _method_spec(config.merge_method)
    run = {str(ref) for ref in [base, *candidates]}
    used = {str(ref) for ref in config.referenced_models()}
    other = sorted(used - run)
    if other:
        raise FWConfigError(
            f"init: {path} names models this run does not have: {', '.join(other)}; the run "
            f"merges {', '.join(sorted(run))}. A start must be a merge of the same base and "
            "candidates (fix the paths in one of the two recipes)."
        )
    if config.base_model is not None and str(config.base_model) != str(base):
        raise FWConfigError(
            f"init: {path} has base_model {config.base_model}, this run {base}; they must be "
            "the same model."
        )
    if config.tokenizer is not None or config.tokenizer_source is not None:
        raise FWConfigError(
            f"init: {path} sets tokenizer:/tokenizer_source:; the start must keep the base's "
            "vocabulary (remove the key)."
        )
    if dtype and not config.dtype:
        config.dtype = dtype
    return config


def _validated(recipe: dict, where: str) -> MergeConfiguration:
    try:
        return MergeConfiguration.model_validate(recipe)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise FWConfigError(
            f"{where}: mergekit rejects the recipe: {loc}: {first['msg']}"
        ) from None


def start_config(
    settings: FWSettings, base: ModelReference, candidates: list[ModelReference], dtype
) -> MergeConfiguration | None:
    """The mergekit recipe of the start, or None for base / task_arithmetic / auto."""
    if settings.init_kind == "method":
        return method_config(settings.init, settings.init_parameters, base, candidates, dtype)
    if settings.init_kind == "recipe":
        return recipe_config(settings.init, base, candidates, dtype)
    return None


def describe(config: MergeConfiguration) -> dict[str, Any]:
    """The start recipe as plain data, for fw_plan.json and the card."""
    return yaml.safe_load(config.to_yaml())


def stream_merge(
    config: MergeConfiguration,
    options: MergeOptions,
    wanted: Callable[[str], bool],
    device: torch.device | str = "cpu",
) -> Iterator[tuple[str, torch.Tensor]]:
    """(tensor name, merged tensor) pairs from mergekit's planner and executor, one at a
    time; only the tensors `wanted` names are yielded (the rest are not computed)."""
    from mergekit.architecture import get_architecture_info
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import _model_out_config
    from mergekit.plan import MergePlanner

    config = copy.deepcopy(config)  # the planner normalises (mutates) its configuration
    LoaderCache().setup(options)
    arch_info = get_architecture_info(config, options)
    out_config = _model_out_config(config, arch_info, trust_remote_code=options.trust_remote_code)
    planner = MergePlanner(config, arch_info, options, out_config)
    # plan_in_memory() would wrap each tensor task in ReturnTensor, which mergekit 0.1.5
    # cannot build (pydantic tries to instantiate the abstract Task[Tensor]); the planned
    # (weight, task) pairs are what it wraps, so run those tasks as the targets instead
    planner._plan()
    names = {task: weight.name for weight, task in planner._tensors if wanted(weight.name)}
    executor = Executor(targets=list(names), math_device=device, storage_device="cpu")
    for task, value in executor.run(quiet=True):
        yield names[task], value


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float32 -> "float32", the form a mergekit recipe's `dtype:` takes."""
    return str(dtype).removeprefix("torch.")


def start_id(settings: FWSettings) -> str:
    """The plan's entry for a mergekit start vertex."""
    return f"init:{settings.init}"


def merged_tensors(
    config: MergeConfiguration,
    options: MergeOptions,
    names: set[str],
    aliases: dict[str, str],
    dtype: torch.dtype,
    what: str,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor in dtype) of each of `names` in mergekit's merge of `config`, once each
    (a tied alias is read under its primary name); raises, naming `what`, if any is missing."""
    wanted = lambda name: name in names or name in aliases  # noqa: E731
    done: set[str] = set()
    for name, tensor in stream_merge(config, options, wanted, device):
        primary = aliases.get(name, name)
        if primary not in done:
            done.add(primary)
            yield primary, tensor.to(dtype=dtype)
    missing = sorted(names - done)
    if missing:
        raise FWConfigError(
            f"{what} produced no tensor for {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}; the start must cover every tensor of the "
            "base model."
        )


def compute_start_vertex(
    config: MergeConfiguration,
    options: MergeOptions,
    slots,
    vertex_id: str,
    label: str,
    device: torch.device | str,
    dtype: torch.dtype,
    keep: bool = True,
) -> StartVertex | None:
    """The merge of `config`, streamed by mergekit's executor into the slots' parameters
    and (with `keep`) into an in-memory vertex."""
    by_name = {slot.name: slot for slot in slots}
    vertex = StartVertex(vertex_id, label, describe(config))
    vertex.aliases = {alias: slot.name for slot in slots for alias in slot.aliases}
    what = f"init: mergekit's {config.merge_method} merge"
    for name, tensor in merged_tensors(
        config, options, set(by_name), vertex.aliases, dtype, what, device
    ):
        if keep:
            vertex.put(name, tensor)
        with torch.no_grad():
            by_name[name].param.copy_(tensor)
        del tensor
    return vertex if keep else None


def snapshot(slots, vertex_id: str, label: str, recipe: dict | None) -> StartVertex:
    """The model's current tensors as a start vertex (a copy)."""
    vertex = StartVertex(vertex_id, label, recipe)
    vertex.aliases = {alias: slot.name for slot in slots for alias in slot.aliases}
    for slot in slots:
        vertex.put(slot.name, slot.param)
    return vertex
