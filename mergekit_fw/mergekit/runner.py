"""How a `frank_wolfe` recipe runs inside mergekit's own `run_merge`.

mergekit never passes the configuration, options or output path to a merge method, and a
method cannot add graph tasks. So the import hook wraps `mergekit.merge.run_merge`: for a
frank_wolfe recipe it (1) checks the recipe, (2) runs the FW pre-pass on the math device,
(3) calls the stock `run_merge`, whose tensors are gathered by streaming.StreamedGather
(one vertex in memory at a time), then (4) writes fw_plan.json and the FW model-card
section. Other recipes pass straight through.
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import os
import sys
from pathlib import Path

import torch
import yaml
from mergekit.common import dtype_from_name
from mergekit.config import MergeConfiguration
from mergekit.io.tasks import LoaderCache
from mergekit.options import MergeOptions

from mergekit_fw.data.batches import make_batches
from mergekit_fw.fw.driver import run_frank_wolfe
from mergekit_fw.fw.loop import build_slots
from mergekit_fw.mergekit.checks import METHOD_NAME, Recipe, check_recipe
from mergekit_fw.mergekit.factor_writer import write_factor_adapter
from mergekit_fw.plan import PLAN_FILE, FWPlan
from mergekit_fw.pool.lora_factors import factor_problem
from mergekit_fw.pool.vertices import VertexPool

LOG = logging.getLogger("mergekit_fw")
LINEAR_RECIPE_FILE = "fw_linear.yaml"


def math_device(options: MergeOptions) -> torch.device:
    name = options.device or "cpu"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def compute_plan(recipe: Recipe, config: MergeConfiguration, options: MergeOptions) -> FWPlan:
    """The FW pre-pass: build the base model on the math device and run the loop."""
    settings = recipe.settings
    device = math_device(options)
    dtype = dtype_from_name(config.dtype) or torch.float32
    loader_cache = LoaderCache()
    loader_cache.setup(options)
    pool = vertex_pool(recipe, config, options)
    objective = recipe.objective
    base_path = recipe.base.merged(
        cache_dir=options.lora_merge_cache,
        trust_remote_code=options.trust_remote_code,
        lora_merge_dtype=options.lora_merge_dtype,
    ).local_path(cache_dir=options.transformers_cache)
    model = objective.auto_class().from_pretrained(
        base_path, dtype=dtype, trust_remote_code=options.trust_remote_code
    )
    model.to(device)
    slots = build_slots(model, set(pool.tensor_names(0)))
    with torch.no_grad():  # theta_0 is exactly what mergekit's loader reads
        for slot in slots:
            slot.param.copy_(pool.tensor(0, slot.name))
    if settings.lora_mode == "factors":  # authors' G-hard: theta = LoRA factors (adapters.py)
        model, slots, pool = factor_problem(model, recipe, device)
    tokenizer = recipe.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    batches = make_batches(recipe.calibration, settings.batch_size, pad_id, device)
    LOG.info(
        "Frank-Wolfe pre-pass: %d candidates, %d tensors, %s, on %s",
        len(pool) - 1, len(slots), recipe.calibration.describe(), device,
    )  # fmt: skip
    plan = run_frank_wolfe(
        model, slots, pool, objective, batches,
        [t.name for t in recipe.calibration.tasks], settings, quiet=options.quiet,
    )  # fmt: skip  # the API's core too (mergekit_fw/api.py)
    plan.adapters = {adapter.id: adapter.path for adapter in recipe.adapters}
    del slots, model
    gc.collect()
    return plan


def prepare(config: MergeConfiguration, options: MergeOptions) -> FWPlan:
    recipe = check_recipe(config, trust_remote_code=options.trust_remote_code)
    return compute_plan(recipe, config, options)


def vertex_pool(recipe: Recipe, config: MergeConfiguration, options: MergeOptions) -> VertexPool:
    """[base, candidates, adapters] on the math device in the merge dtype (headers only;
    nothing is read yet): for the pre-pass, and again for the write phase."""
    dtype = dtype_from_name(config.dtype) or torch.float32
    return VertexPool(
        [recipe.base, *recipe.candidates], math_device(options), dtype, adapters=recipe.adapters
    )


def write_artifacts(out_path: str, plan: FWPlan, config: MergeConfiguration) -> None:
    from mergekit_fw.report.card import append_card_section, report_after_merge

    out = Path(out_path)
    if plan.adapters:  # a mergekit `linear` recipe cannot express adapter vertices
        LOG.info("No %s: the plan has LoRA adapter vertices", LINEAR_RECIPE_FILE)
    else:
        with open(out / LINEAR_RECIPE_FILE, "w", encoding="utf-8") as handle:
            yaml.safe_dump(plan.linear_recipe(config.dtype), handle, sort_keys=False)
    card = out / "README.md"
    if card.exists():
        append_card_section(card, plan)
    report_after_merge(out, plan)  # plots + card; a missing matplotlib only logs a warning
    plan.save(out / PLAN_FILE)  # last: its presence marks a finished FW merge


def run_fw_merge(
    config: MergeConfiguration,
    out_path: str,
    options: MergeOptions,
    config_source: str | None = None,
    run_merge=None,
) -> FWPlan:
    """Check, pre-pass, stock mergekit write, FW artifacts."""
    from mergekit_fw.mergekit.streaming import streamed_gather

    if run_merge is None:
        import mergekit.merge

        run_merge = getattr(mergekit.merge.run_merge, "__wrapped__", mergekit.merge.run_merge)
    stale = Path(out_path) / PLAN_FILE
    if stale.exists():
        stale.unlink()
    if options.random_seed is not None:
        import transformers

        transformers.trainer_utils.set_seed(options.random_seed)
    recipe = check_recipe(config, trust_remote_code=options.trust_remote_code)
    plan = compute_plan(recipe, config, options)
    if plan.settings.get("lora_mode") == "factors":  # a LoRA adapter, not a dense model
        write_factor_adapter(plan, out_path, dtype_from_name(config.dtype))
    else:
        with streamed_gather(plan, vertex_pool(recipe, config, options)):
            run_merge(config, out_path, options, config_source=config_source)
    write_artifacts(out_path, plan, config)
    LOG.info(
        "Frank-Wolfe merge written to %s (plan: %s)", out_path, os.path.join(out_path, PLAN_FILE)
    )
    return plan


def patch_run_merge() -> None:
    """Route frank_wolfe recipes through run_fw_merge; idempotent."""
    # Called right after mergekit.merge executes, before the package attribute is bound.
    module = sys.modules.get("mergekit.merge") or importlib.import_module("mergekit.merge")
    original = module.run_merge
    if getattr(original, "_mergekit_fw", False):
        return

    @functools.wraps(original)
    def run_merge(merge_config, out_path, options, config_source=None):
        if merge_config.merge_method != METHOD_NAME:
            return original(merge_config, out_path, options, config_source=config_source)
        run_fw_merge(merge_config, out_path, options, config_source, run_merge=original)

    run_merge._mergekit_fw = True  # type: ignore[attr-defined]
    module.run_merge = run_merge
