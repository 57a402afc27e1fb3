"""Calibration work per FW iteration: `step: line_search` against `step: quadratic`.

Side by side in one process, on the demo zoo (tiny char-level LLaMA; built into
benchmarks/.cache/step_zoo, not .demo/) in three settings: the demo's two targets with the
recipe defaults (box, init: auto), the same over the paper's hull from the base, and all four
tasks calibrated. Per run: gradient passes and forward passes over the calibration set, their
gradient-pass equivalent per iteration (a forward pass counts 1/3), the final calibration
loss and the held-out loss (mean over the targets, 100 unseen samples each).

    PYTHONPATH=. python -m benchmarks.scale.step_rules   # -> benchmarks/results/step_rules.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

from mergekit_fw.cli import toy  # noqa: E402
from mergekit_fw.fw.loop import FrankWolfe  # noqa: E402
from mergekit_fw.mergekit import runner  # noqa: E402

ROOT = Path("benchmarks/.cache/step_zoo")
EXPERTS = ["reverse", "add", "count", "sort"]
RULES = ["line_search", "quadratic"]
SETTINGS = {  # name -> (calibrated tasks, recipe parameters)
    "2 targets, defaults": (["reverse", "add"], {}),
    "2 targets, hull from base": (["reverse", "add"], {"constraint": "hull", "init": "base"}),
    "4 targets, defaults": (EXPERTS, {}),
}
ITERATIONS = 8


def build() -> None:
    if not (ROOT / "base" / "config.json").exists():
        toy.build_zoo(ROOT, EXPERTS)
    for task in EXPERTS:
        toy.write_jsonl(ROOT / f"calib_{task}.jsonl", toy.task_records(task, 32, seed=1000))
        toy.write_jsonl(ROOT / f"test_{task}.jsonl", toy.task_records(task, 100, seed=2000))


def held_out(path: Path, task: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.data.calibration import load_calibration
    from mergekit_fw.fw.objectives import CausalLMObjective, evaluate

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    data = load_calibration(str(ROOT / f"test_{task}.jsonl"), tok, 64)
    batches = make_batches(data, 50, tok.pad_token_id, "cpu", reduction="token")
    return evaluate(model, CausalLMObjective(), batches, [task], grad=False, quiet=True).total


def run(tasks: list[str], parameters: dict, rule: str, out: Path) -> dict:
    manifest = ROOT / f"calib_{'_'.join(tasks)}.yaml"
    manifest.write_text("tasks:\n" + "".join(f"  {t}: calib_{t}.jsonl\n" for t in tasks))
    recipe = {
        "merge_method": "frank_wolfe", "base_model": str(ROOT / "base"), "dtype": "float32",
        "models": [{"model": str(ROOT / f"expert_{e}")} for e in EXPERTS],
        "parameters": {"calibration": str(manifest), "iterations": ITERATIONS, "seed": 0,
                       "step": rule, **parameters},
    }  # fmt: skip
    counts = {"gradient": 0, "forward": 0, "in_loop": False}
    loss, iteration = FrankWolfe.loss, FrankWolfe.iteration

    def counted_loss(self, grad, desc, batches=None):
        if counts["in_loop"]:
            counts["gradient" if grad else "forward"] += 1
        return loss(self, grad, desc, batches)

    def counted_iteration(self, t):
        counts["in_loop"] = True
        try:
            return iteration(self, t)
        finally:
            counts["in_loop"] = False

    FrankWolfe.loss, FrankWolfe.iteration = counted_loss, counted_iteration
    try:
        plan = runner.run_fw_merge(
            MergeConfiguration.model_validate(recipe), str(out), MergeOptions(quiet=True)
        )
    finally:
        FrankWolfe.loss, FrankWolfe.iteration = loss, iteration
    steps = len(plan.iterations)
    scores = {task: held_out(out, task) for task in tasks}
    shutil.rmtree(out, ignore_errors=True)
    return {
        "iterations": steps,
        "gradient_passes": counts["gradient"],
        "forward_passes": counts["forward"],
        "gradient_equivalents_per_iteration": (counts["gradient"] + counts["forward"] / 3)
        / max(steps, 1),
        "final_calibration_loss": plan.final_loss,
        "held_out_loss": scores,
        "held_out_mean": sum(scores.values()) / len(scores),
        "gammas": [r.gamma for r in plan.iterations],
    }


def main() -> None:
    logging.getLogger("mergekit_fw").setLevel(logging.WARNING)
    build()
    work = Path(tempfile.mkdtemp(prefix="fw_step_rules_"))
    results: dict = {"torch_threads": torch.get_num_threads(), "settings": {}}
    try:
        for name, (tasks, parameters) in SETTINGS.items():
            rows = {
                rule: run(tasks, parameters, rule, work / f"{len(results['settings'])}_{rule}")
                for rule in RULES
            }
            line, quad = rows["line_search"], rows["quadratic"]
            rows["quadratic / line_search"] = {
                "work": quad["gradient_equivalents_per_iteration"]
                / line["gradient_equivalents_per_iteration"],
                "final_calibration_loss": quad["final_calibration_loss"]
                / line["final_calibration_loss"],
                "held_out_mean": quad["held_out_mean"] / line["held_out_mean"],
            }
            results["settings"][name] = rows
            print(name, json.dumps(rows["quadratic / line_search"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path("benchmarks/results/step_rules.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
