"""Merges of re-routing-zoo pools: stock mergekit baselines and mergekit-fw recipes.

- Baselines (linear, task arithmetic, TIES, DARE-TIES) run mergekit's own kernels through its
  Python API (`mergekit.merge_methods.api.merge_state_dicts`), in memory; each grid point's
  hyper-parameters are scored on the calibration split only, and the best one is kept.
- FW runs are recipes, as a user writes them: `merge_method: frank_wolfe`, the calibration
  manifest, `iterations`, and only the option under test; they go through mergekit's
  `run_merge` (what `mergekit-yaml` calls; the package's hook wraps it) and the written model
  is read back from disk and scored.
Selection criterion everywhere: mean calibration exact match over the target tasks, ties
broken by the mean per-token calibration loss (the objective FW minimises).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import threads
from benchmarks.zoo.build import ZOO, load_zoo
from benchmarks.zoo.lm import Encoded, calib_loss, exact_match
from benchmarks.zoo.tasks import ALL_TASKS

TA_GRID = [0.3, 0.5, 0.7, 1.0, 1.3]
TIES_GRID = [(d, lam) for d in (0.3, 0.7) for lam in (0.7, 1.0, 1.3)]
DARE_GRID = [(d, lam) for d in (0.3, 0.7) for lam in (1.0, 1.3)]
FW_ITERATIONS = 10  # the setting; every other FW option is the recipe default
FW_BATCH = 100  # calibration samples per forward pass (speed only: the loss is the same)
# calibration samples per target task (of the 100 in each calibration file), for every
# method: all 100, the setting (BENCH_CALIB: fewer, for an ablation)
CALIB_SAMPLES = int(os.environ.get("BENCH_CALIB") or 100)


class Zoo:
    """State dicts of the zoo in memory, plus encoded calibration and test splits."""

    def __init__(self, calib_samples: int = CALIB_SAMPLES):
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, LlamaForCausalLM

        threads()
        self.info = load_zoo()
        self.paths = self.info["paths"]
        self.tok = AutoTokenizer.from_pretrained(self.paths["base"])
        self.model = LlamaForCausalLM.from_pretrained(self.paths["base"]).eval()
        self.names = [n for n, _ in self.model.named_parameters()]
        self.sd = {k: load_file(f"{p}/model.safetensors") for k, p in self.paths.items()}
        self.calib_samples = calib_samples
        self.calib, self.test = {}, {}
        for t in ALL_TASKS:
            folder = ZOO / "data" / t
            cal = [json.loads(x) for x in (folder / "calibration.jsonl").read_text().splitlines()]
            tst = [json.loads(x) for x in (folder / "test.jsonl").read_text().splitlines()]
            self.calib[t] = Encoded(t, cal[:calib_samples], self.tok)
            self.test[t] = Encoded(t, tst, self.tok)

    def load(self, sd):
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(sd[name])
        return self.model

    def selection(self, sd, tasks) -> tuple[float, float]:
        """(mean calibration exact match, mean calibration loss): the selection criterion."""
        model = self.load(sd)
        em = sum(exact_match(model, self.calib[t]) for t in tasks) / len(tasks)
        return em, calib_loss(model, [self.calib[t] for t in tasks])

    def test_scores(self, sd, tasks) -> dict[str, float]:
        model = self.load(sd)
        return {t: exact_match(model, self.test[t]) for t in tasks}

    def normalised(self, scores: dict[str, float]) -> dict[str, float]:
        own = self.info["scores"]
        return {t: v / own[f"expert_{t}"][t] for t, v in scores.items()}

    def manifest(self, tasks) -> str:
        path = ZOO / "manifests" / f"{'-'.join(tasks)}-{self.calib_samples}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {t: {"path": str(ZOO / "data" / t / "calibration.jsonl"),
                       "max_samples": self.calib_samples} for t in tasks}  # fmt: skip
        path.write_text(yaml.safe_dump({"tasks": entries}))
        return str(path)


def _merge(zoo: Zoo, pool, method, params, with_base=True):
    from mergekit.merge_methods.api import merge_state_dicts

    models = {k: zoo.sd[k] for k in pool}
    if with_base:
        models = {"base": zoo.sd["base"], **models}
    torch.manual_seed(0)  # DARE's random drop
    with torch.no_grad():
        return merge_state_dicts(models, method, parameters=params,
                                 base="base" if with_base else None)  # fmt: skip


def _best(zoo, pool, tasks, method, grid):
    """Grid search on calibration; returns (selection, state dict, chosen parameters)."""
    best = None
    for params in grid:
        sd = _merge(zoo, pool, method, params, with_base=method != "linear")
        sel = zoo.selection(sd, tasks)
        if best is None or (sel[0], -sel[1]) > (best[0][0], -best[0][1]):
            best = (sel, sd, params)
    return best


def baseline(zoo: Zoo, pool, tasks, name: str):
    grids = {
        "linear": [{"weight": 1.0, "normalize": True}],
        "task arithmetic": [{"lambda": v, "weight": 1.0} for v in TA_GRID],
        "TIES": [{"density": d, "lambda": v, "weight": 1.0} for d, v in TIES_GRID],
        "DARE-TIES": [{"density": d, "lambda": v, "weight": 1.0} for d, v in DARE_GRID],
    }
    method = BASELINE_METHODS[name]
    sel, sd, params = _best(zoo, pool, tasks, method, grids[name])
    return sel, sd, {k: v for k, v in params.items() if k != "weight"}


BASELINE_METHODS = {"linear": "linear", "task arithmetic": "task_arithmetic", "TIES": "ties",
                    "DARE-TIES": "dare_ties"}  # fmt: skip


def baseline_recipe(zoo: Zoo, pool, name: str, chosen: dict) -> str:
    """A stock mergekit recipe file of a baseline with its chosen hyper-parameters: the
    `init:` of an FW run that starts from it (issue 12)."""
    params = {"weight": 1.0, **({"normalize": True} if name == "linear" else {})}
    shared = {k: v for k, v in chosen.items() if k == "lambda"}
    params.update({k: v for k, v in chosen.items() if k != "lambda"})
    recipe = {"merge_method": BASELINE_METHODS[name], "dtype": "float32",
              "models": [{"model": zoo.paths[k], "parameters": params} for k in pool]}  # fmt: skip
    if name != "linear":
        recipe["base_model"] = zoo.paths["base"]
    if shared:
        recipe["parameters"] = shared
    tag = "-".join(f"{k}{v}" for k, v in sorted(chosen.items()))
    digest = hashlib.sha1(" ".join(pool).encode()).hexdigest()[:8]
    path = ZOO / "starts" / f"{BASELINE_METHODS[name]}-{len(pool)}-{digest}-{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def fw_recipe(zoo: Zoo, pool, tasks, options: dict | None = None) -> dict:
    """The recipe a user writes: calibration, iterations, plus the option under test."""
    return {
        "merge_method": "frank_wolfe", "base_model": zoo.paths["base"], "dtype": "float32",
        "models": [{"model": zoo.paths[k]} for k in pool],
        "parameters": {"calibration": zoo.manifest(tasks), "iterations": FW_ITERATIONS,
                       "batch_size": FW_BATCH, **(options or {})},
    }  # fmt: skip


def fw(zoo: Zoo, pool, tasks, options: dict | None = None):
    """Run the recipe through mergekit's run_merge; read the written model back."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    import mergekit_fw  # noqa: F401  (registers the method and the run_merge wrapper)
    from mergekit_fw.settings import FWSettings

    options = dict(options or {})
    if "constraint" not in FWSettings.model_fields and options.get("constraint") == "hull":
        options.pop("constraint")  # a package without constraint sets: the hull is all it has
    recipe = fw_recipe(zoo, pool, tasks, options)
    out = Path(tempfile.mkdtemp(prefix="rzoo-fw-"))
    try:
        config = MergeConfiguration.model_validate(recipe)
        run_merge(config, str(out), MergeOptions(quiet=True, copy_tokenizer=False),
                  config_source=yaml.safe_dump(recipe))  # fmt: skip
        sd = {}
        for shard in sorted(out.glob("*.safetensors")):
            sd.update(load_file(str(shard)))
        plan = json.loads((out / "fw_plan.json").read_text()) if (out / "fw_plan.json").exists() \
            else {}  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)
    iterations = plan.get("iterations", [])
    meta = {"options": options or {}, "iterations_run": len(iterations),
            "start_loss": iterations[0]["loss"] if iterations else None,
            "final_loss": plan.get("final_loss"), "excluded": plan.get("excluded"),
            "init_table": plan.get("init_table")}  # fmt: skip
    return zoo.selection(sd, tasks), sd, meta


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return (*out, time.perf_counter() - t0)
