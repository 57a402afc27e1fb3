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
import inspect
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from mergekit.common import dtype_from_name
from mergekit.config import MergeConfiguration
from mergekit.io.tasks import LoaderCache
from mergekit.options import MergeOptions

from mergekit_fw.data.batches import make_batches
from mergekit_fw.fw.driver import run_frank_wolfe
from mergekit_fw.fw.problem import CalibrationProblem
from mergekit_fw.fw.slots import Slot, build_slots
from mergekit_fw.mergekit.auto_start import choose_start
from mergekit_fw.mergekit.checks import METHOD_NAME, Recipe, check_recipe, check_source
from mergekit_fw.mergekit.factor_writer import write_factor_adapter
from mergekit_fw.mergekit.foreign import kept_config, screen_foreign
from mergekit_fw.mergekit.host_warnings import host_bars, quiet_host_deprecations
from mergekit_fw.mergekit.placement import FIT, Placement, gpu_budgets, plan_placement
from mergekit_fw.mergekit.resume import run_fingerprint
from mergekit_fw.mergekit.start import compute_start_vertex, dtype_name, start_config, start_id
from mergekit_fw.mergekit.summary import plain_messages, summary
from mergekit_fw.plan import PLAN_FILE, FWPlan
from mergekit_fw.pool.labels import unique_labels
from mergekit_fw.pool.lora_factors import factor_problem
from mergekit_fw.pool.start_vertex import StartedPool, StartVertex
from mergekit_fw.pool.vertices import VertexPool
from mergekit_fw.settings import FWConfigError

LOG = logging.getLogger("mergekit_fw")
LINEAR_RECIPE_FILE = "fw_linear.yaml"


def math_device(options: MergeOptions) -> torch.device:
    name = options.device or "cpu"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def compute_plan(
    recipe: Recipe, config: MergeConfiguration, options: MergeOptions, checkpoint=None
) -> tuple[FWPlan, StartVertex | None]:
    """The FW pre-pass: build the base model on the math device and run the loop.

    Returns the plan and the mergekit start vertex it used, if any (held in memory: the
    write phase streams the same tensors). `checkpoint` (resume.Checkpointer): save the
    state after every iteration, resume a saved one.
    """
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
    choice = choose_prepass(settings, pool, device, dtype, recipe, base_path, options)
    LOG.info("pre-pass %s: %s", "out of core" if choice.out_of_core else "in memory", choice.why)
    out_of_core, placement = choice.out_of_core, choice.placement
    if out_of_core:  # a weightless skeleton; blocks read theta from disk (fw/out_of_core.py)
        model = skeleton(objective, base_path, dtype, device, options.trust_remote_code)
    else:
        spread = {} if placement is None else {"device_map": placement.device_map}
        with host_bars(options.quiet):  # transformers' "Loading weights" bar, on a terminal
            model = objective.auto_class().from_pretrained(
                base_path, dtype=dtype, trust_remote_code=options.trust_remote_code, **spread
            )
        if placement is None:
            model.to(device)
    slots = build_slots(model, set(pool.tensor_names(0)))
    if placement is not None:  # each tensor's vertices stream to its layer's GPU
        pool.placement = {slot.name: slot.param.device for slot in slots}
        device = model.get_input_embeddings().weight.device  # the batches' device
    if not out_of_core:  # theta_0 is exactly what mergekit's loader reads
        with torch.no_grad():
            for slot in slots:
                slot.param.copy_(pool.tensor(0, slot.name))
    if settings.lora_mode == "factors":  # authors' G-hard: theta = LoRA factors (adapters.py)
        model, slots, pool = factor_problem(model, recipe, device)
    tokenizer = recipe.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    batches = make_batches(
        recipe.calibration, settings.batch_size, pad_id, device, settings.reduction
    )
    LOG.info(
        "Frank-Wolfe pre-pass: %d candidates, %d tensors, %s, on %s",
        len(pool) - 1, len(slots), recipe.calibration.describe(), device,
    )  # fmt: skip
    problem = CalibrationProblem(objective, batches, [t.name for t in recipe.calibration.tasks])
    start_row, init_table, start, loop_keywords, formed = None, [], None, {}, False
    if out_of_core:
        if checkpoint is not None:
            LOG.info("prepass: out_of_core keeps no resumable state (a re-run starts over)")
        loop_keywords = out_of_core_keywords(settings, len(pool) - 1, checkpoint)
    else:
        if settings.init_kind != "builtin":  # a mergekit start, or init: auto
            pool, start, start_row, init_table, formed = build_start(
                recipe, options, model=model, slots=slots, pool=pool, problem=problem,
                device=device, dtype=dtype,
            )  # fmt: skip
        if checkpoint is not None:
            loop_keywords = {"resume": checkpoint.saved_state(), "on_iteration": checkpoint.save}
    plan = run_frank_wolfe(
        model, slots, pool, problem, settings, quiet=options.quiet, start_row=start_row,
        start_formed=formed, out_of_core=out_of_core, **loop_keywords,
    )  # fmt: skip  # the API's core too (mergekit_fw/api.py)
    found = {
        "adapters": {adapter.id: adapter.path for adapter in recipe.adapters},
        "distances": recipe.distances,
        "excluded": list(recipe.excluded),
        "init_table": plan.init_table if out_of_core else init_table,
    }
    if start is not None:
        found["start"] = {"id": start.id, "label": start.label, "recipe": start.recipe}
    del slots, model
    gc.collect()
    return plan.model_copy(update=found), start


@dataclass(frozen=True)
class Prepass:
    """Where the pre-pass runs, and why (logged)."""

    out_of_core: bool
    why: str
    placement: Placement | None = None  # in memory over several GPUs (mergekit/placement.py)


def choose_prepass(settings, pool, device, dtype, recipe, base_path=None, options=None):
    """The recipe's `prepass`, or for `auto` the estimate against the math device's free
    memory (mergekit/estimate.py); on CUDA, when one GPU is too small, the GPUs together
    (accelerate's device map) before going out of core."""
    from mergekit_fw.mergekit.estimate import device_free_bytes, estimate_recipe
    from mergekit_fw.settings import out_of_core_clash

    if settings.prepass != "auto":
        return Prepass(settings.prepass == "out_of_core", f"prepass: {settings.prepass}")
    clash = out_of_core_clash(settings)
    estimate = estimate_recipe(recipe, pool, dtype)  # calibration batch included
    need, free = estimate.in_memory_peak, device_free_bytes(device)
    if free is None or need <= FIT * free:
        return Prepass(False, f"prepass: auto, about {need / 2**30:.2f} GiB needed, fits {device}")
    too_much = (
        f"prepass: auto, about {need / 2**30:.2f} GiB needed in memory, more than 80% of the "
        f"{free / 2**30:.2f} GiB free on {device}"
    )
    gpus = gpu_budgets() if device.type == "cuda" else {}
    if len(gpus) > 1 and base_path is not None and settings.lora_mode != "factors":
        model = skeleton(recipe.objective, base_path, dtype, torch.device("cpu"),
                         bool(options and options.trust_remote_code))  # fmt: skip
        placement = plan_placement(model, gpus, need / estimate.model_bytes, dtype)
        if placement is not None:
            return Prepass(False, f"{too_much}; in memory over {len(gpus)} GPUs: "
                           f"{placement.describe()}", placement)  # fmt: skip
        too_much += f", and more than the {len(gpus)} GPUs hold together"
    if clash:
        return Prepass(False, f"{too_much}, but {clash} needs the in-memory pre-pass")
    return Prepass(True, too_much)


def skeleton(objective, base_path: str, dtype, device, trust_remote_code: bool):
    """The base architecture with its parameters on the meta device (no weights held);
    buffers (e.g. rotary frequencies) are real and on the math device."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(base_path, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):
        model = objective.auto_class().from_config(
            model_config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    model.tie_weights()
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)
    return model


def out_of_core_keywords(settings, n: int, checkpoint) -> dict:
    """`run_frank_wolfe`'s out-of-core keywords: the scratch folder (the state folder's, when
    there is one) and, for `init: auto`, the base and the task-arithmetic grid as the
    candidate starts (the loop adds the screened ones), formed block by block from the pool (TIES starts need a mergekit
    merge held in memory and are left out; a mergekit start is refused by the settings,
    `out_of_core_clash`)."""
    from mergekit_fw.fw.start_grid import builtin_rows

    keywords: dict = {"scratch": None if checkpoint is None else str(checkpoint.folder / "scratch")}
    if settings.init_kind == "auto":
        LOG.info("init: auto out of core: base, task-arithmetic and screened starts (no TIES)")
        keywords["start_rows"] = builtin_rows(settings, n)
    return keywords


def build_start(
    recipe: Recipe,
    options: MergeOptions,
    *,
    model: torch.nn.Module,
    slots: list[Slot],
    pool: VertexPool,
    problem: CalibrationProblem,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[VertexPool | StartedPool, StartVertex | None, list[float] | None, list[dict], bool]:
    """The start of a mergekit / auto run: (pool with the start vertex, the vertex, start
    row, table, formed); the vertex is None where auto chose a builtin start; `formed`: the
    parameters hold the start (auto_start.choose_start), so the loop does not form it.

    The start vertex is kept in memory (pool/start_vertex.py), so the write phase streams
    the same tensors; no copy of it is written to disk.
    """
    started = time.perf_counter()
    table: list[dict] = []
    formed = False
    if recipe.settings.init_kind == "auto":
        vertex, row, table, formed = choose_start(
            recipe, options, model=model, slots=slots, pool=pool, problem=problem, device=device
        )
    else:  # re-derived over the current candidates (a screen may have removed some)
        config = start_config(recipe.settings, recipe.base, recipe.candidates, dtype_name(dtype))
        vertex = compute_start_vertex(
            config, options, slots, start_id(recipe.settings),
            "init_" + config.merge_method, device, dtype,
        )  # fmt: skip
        row = None
    if vertex is None:
        return pool, None, row, table, formed
    vertex.label = unique_labels(pool.labels, [vertex.label])[0]
    started_pool = StartedPool(pool, vertex)
    if row is None:
        row = [0.0] * len(pool) + [1.0]
    LOG.info(
        "start %s: %.1f MiB in memory, %.1f s",
        vertex.id, vertex.nbytes() / 2**20, time.perf_counter() - started,
    )  # fmt: skip
    return started_pool, vertex, row, table, formed


def checked_recipe(
    config: MergeConfiguration, options: MergeOptions, with_calibration: bool = True
) -> Recipe:
    """Recipe checks, then the foreign-candidate screen (reads weights, takes no gradient)."""
    recipe = check_recipe(
        config, trust_remote_code=options.trust_remote_code, with_calibration=with_calibration
    )
    LoaderCache().setup(options)  # `model@lora` candidates resolve as mergekit would
    return screen_foreign(recipe)


def prepare(config: MergeConfiguration, options: MergeOptions) -> FWPlan:
    return compute_plan(checked_recipe(config, options), config, options)[0]


def vertex_pool(
    recipe: Recipe,
    config: MergeConfiguration,
    options: MergeOptions,
    start: StartVertex | None = None,
) -> VertexPool | StartedPool:
    """[base, candidates, adapters(, start)] on the math device in the merge dtype (headers
    only; nothing is read yet): for the pre-pass, and again for the write phase."""
    dtype = dtype_from_name(config.dtype) or torch.float32
    pool = VertexPool(
        [recipe.base, *recipe.candidates], math_device(options), dtype, adapters=recipe.adapters
    )
    return pool if start is None else StartedPool(pool, start)


def write_artifacts(out_path: str, plan: FWPlan, config: MergeConfiguration) -> None:
    from mergekit_fw.report.card import append_card_section, report_after_merge

    out = Path(out_path)
    why_not = plan.linear_recipe_refusal()
    if why_not:
        LOG.info("No %s: the plan %s", LINEAR_RECIPE_FILE, why_not)
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
    """Check, pre-pass (resumable) or saved plan, stock mergekit write, FW artifacts."""
    from mergekit_fw.mergekit.method import registered
    from mergekit_fw.mergekit.resume import Checkpointer, OutputGuard, current_request
    from mergekit_fw.mergekit.saved_plan import load_matching_plan, plan_file_of, saved_start

    started = time.perf_counter()
    request = current_request()
    plan_file = request.plan or plan_file_of(config)
    if options.random_seed is not None:
        import transformers

        transformers.trainer_utils.set_seed(options.random_seed)
    check_source(config_source)  # what mergekit's parser drops: unknown or repeated keys
    OutputGuard.check_free(out_path)  # another run on OUT: say so now, not after the checks
    recipe = checked_recipe(config, options, with_calibration=plan_file is None)
    with OutputGuard(out_path) as guard, registered():
        stale = Path(out_path) / PLAN_FILE
        if stale.exists():
            stale.unlink()
        if plan_file is not None:  # no data, no gradients
            dtype = dtype_from_name(config.dtype) or torch.float32
            start = saved_start(plan_file, options, dtype)
            ids = vertex_pool(recipe, config, options, start).ids
            plan = load_matching_plan(plan_file, recipe, config, math_device(options), ids)
        else:
            fingerprint = run_fingerprint(recipe, config, math_device(options))
            checkpoint = Checkpointer(guard.folder, fingerprint, resume=request.resume)
            plan, start = compute_plan(recipe, config, options, checkpoint)
            plan = plan.model_copy(update={"fingerprint": fingerprint})
        write_merge(plan, recipe, start, config, out_path, options, config_source, run_merge)
    for line in summary(plan, out_path, time.perf_counter() - started, plan_file):
        LOG.info("%s", line)
    return plan


def plan_only(config: MergeConfiguration, plan_path: str, options: MergeOptions) -> FWPlan:
    """`mergekit-fw plan`: the pre-pass only, resumable (its state beside the plan file)."""
    from mergekit_fw.mergekit.resume import Checkpointer, OutputGuard, current_request

    recipe = checked_recipe(config, options)
    with OutputGuard(plan_path, folder=False) as guard:
        fingerprint = run_fingerprint(recipe, config, math_device(options))
        checkpoint = Checkpointer(guard.folder, fingerprint, resume=current_request().resume)
        plan = compute_plan(recipe, config, options, checkpoint)[0]
        plan = plan.model_copy(update={"fingerprint": fingerprint})
        try:
            partial = Path(f"{plan_path}.partial")
            plan.save(partial)
            partial.replace(plan_path)
        except OSError as error:
            raise FWConfigError(f"Writing the plan to {plan_path} failed: {error}") from None
    return plan


def write_merge(
    plan, recipe, start, config, out_path, options, config_source, run_merge=None
) -> None:
    """The write phase (`start`: the plan's mergekit start vertex, in memory); fw_plan.json
    last. A failed write (disk full, read-only) is one clear error, and the folder has no
    fw_plan.json, so it never looks finished."""
    from mergekit_fw.mergekit.streaming import streamed_gather

    if run_merge is None:
        import mergekit.merge

        # the stock run_merge under every wrapper (runner's, errors.py's presenting one)
        run_merge = inspect.unwrap(mergekit.merge.run_merge)
    try:
        if plan.settings.lora_mode == "factors":  # a LoRA adapter, not a dense model
            write_factor_adapter(plan, out_path, dtype_from_name(config.dtype))
        else:
            with (
                streamed_gather(plan, vertex_pool(recipe, config, options, start)),
                quiet_host_deprecations(),
            ):
                kept = kept_config(config, recipe)  # without the foreign candidates
                run_merge(kept, out_path, options, config_source=config_source)
        write_artifacts(out_path, plan, config)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise FWConfigError(
            f"Writing the merge to {out_path} failed: {error.strerror or error}{where}. "
            f"{out_path} is incomplete (no {PLAN_FILE}); free space or fix permissions and "
            "re-run the same command (a finished pre-pass resumes from its saved state)."
        ) from None


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
        with quiet_host_deprecations(), plain_messages(options.quiet):  # init: auto's merges too
            run_fw_merge(merge_config, out_path, options, config_source, run_merge=original)

    run_merge._mergekit_fw = True  # type: ignore[attr-defined]
    module.run_merge = run_merge
