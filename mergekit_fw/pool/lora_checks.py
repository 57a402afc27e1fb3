"""Checks of a recipe's LoRA adapters against its base, from headers only.

Every targeted module must exist in the base with the shape the factors imply, and the
pool-level rules hold: at least one candidate in total, and what `lora_mode: factors` needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from mergekit_fw.pool.lora_files import CONFIG_FILE, Adapter, read_adapter, read_manifest
from mergekit_fw.pool.reader import tensor_shapes
from mergekit_fw.settings import FWConfigError

LOG = logging.getLogger("mergekit_fw")


def _same_base(named: str | None, base_path: str) -> bool:
    if not named:
        return True  # the adapter does not say
    if os.path.exists(named) and os.path.exists(base_path):
        return os.path.samefile(named, base_path)
    norm = [p.rstrip("/\\") for p in (named, base_path)]
    return norm[0] == norm[1] or os.path.basename(norm[0]) == os.path.basename(norm[1])


def check_against_base(base, adapters: Sequence[Adapter]) -> None:
    """Every targeted module must exist in the base with the shape the factors imply."""
    if base.lora:
        raise FWConfigError(
            "parameters.adapters needs a plain base_model, not a `base+adapter` reference."
        )
    shapes = tensor_shapes(base.model.path) if os.path.isdir(base.model.path) else {}
    for adapter in adapters:
        other = not _same_base(adapter.base_name, base.model.path)
        named = f"; its {CONFIG_FILE} names base_model_name_or_path {adapter.base_name!r}"
        for name, module in adapter.modules.items():
            if shapes and name not in shapes:
                targets = adapter.config.get("target_modules")
                raise FWConfigError(
                    f"Adapter {adapter.path} targets {module.module}, which the base "
                    f"{base.model.path} does not have (no tensor {name}; target_modules: "
                    f"{targets}){named if other else ''}. Adapters must be LoRAs of the recipe's "
                    "base_model."
                )
            if shapes and tuple(shapes[name]) != module.shape:
                raise FWConfigError(
                    f"Adapter {adapter.path} is not an adapter of the base {base.model.path}"
                    f"{named if other else ''}: {module.module} is {list(module.shape)} in the "
                    f"adapter (B {list(module.shape_b)} x A {list(module.shape_a)}) and "
                    f"{list(shapes[name])} in the base. Adapters must be LoRAs of the recipe's "
                    "base_model."
                )
        if other:
            LOG.warning(
                "Adapter %s names base_model_name_or_path %r, the recipe's base is %s; its "
                "shapes match, so it is used as an adapter of the recipe's base.",
                adapter.path, adapter.base_name, base.model.path,
            )  # fmt: skip


def load_adapters(settings, base, candidates: Sequence) -> list[Adapter]:
    """The recipe's adapter vertices (`parameters.adapters`), checked; [] when unset.

    Also the pool-level rules: at least one candidate in total, and what lora_mode: factors
    needs.
    """
    adapters: list[Adapter] = []
    manifest = getattr(settings, "adapters", None)
    if manifest:
        entries = read_manifest(manifest)
        adapters = [read_adapter(path, name) for path, name in entries]
        labels = [a.label for a in adapters]
        for label in labels:
            if labels.count(label) > 1:
                raise FWConfigError(
                    f"parameters.adapters ({manifest}): two adapters are named {label!r}; give "
                    "them distinct `name:`s."
                )
        check_against_base(base, adapters)
    if not candidates and not adapters:
        raise FWConfigError(
            "frank_wolfe needs at least one candidate: a model under `models:` besides the "
            "base, or LoRA adapters in a manifest named by parameters.adapters."
        )
    if getattr(settings, "lora_mode", "weights") == "factors":
        if not adapters:
            raise FWConfigError(
                "lora_mode: factors merges LoRA adapters; list them in a manifest named by "
                "parameters.adapters."
            )
        if candidates:
            raise FWConfigError(
                "lora_mode: factors combines the adapters' A and B factors and writes a LoRA "
                f"adapter; dense candidates under `models:` ({', '.join(map(str, candidates))}) "
                "have no factors. List only the base under `models:`, or use lora_mode: weights."
            )
        if settings.init != "task_arithmetic":
            raise FWConfigError(
                "lora_mode: factors needs init: task_arithmetic (the authors' 0.3 * sum of the "
                "factors): at zero factors (init: base) the gradient of every factor is zero."
            )
        if getattr(settings, "variant", "hard") != "hard":
            raise FWConfigError("lora_mode: factors supports variant: hard only.")
        flags = {bool(a.config.get("fan_in_fan_out", False)) for a in adapters}
        if len(flags) > 1:
            raise FWConfigError("lora_mode: factors needs adapters that agree on fan_in_fan_out.")
    return adapters
