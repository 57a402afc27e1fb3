"""FW started from each data-free baseline vs the baseline itself, on the tiny demo zoo.

For each pool (2 and 4 experts of `make demo`'s zoo) and each baseline (task arithmetic
lambda 0.3, TIES density 0.5 weight 1.0), the baseline is written by stock mergekit, FW is
run from it (`init: task_arithmetic` / `init: ties`), and both are scored on the calibration
data and on the held-out samples; FW from the base (the default) and `init: auto` are
listed too. Writes benchmarks/results/start_from_baselines.{md,json}.

    PYTHONPATH=. python -m benchmarks.demo.start_from_baselines   # builds .demo/ if missing
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

from benchmarks.common import RESULTS_DIR  # noqa: E402
from mergekit_fw.cli import demo  # noqa: E402
from mergekit_fw.mergekit.runner import run_fw_merge  # noqa: E402

RESULTS = RESULTS_DIR
POOLS = {2: ["reverse", "add"], 4: ["reverse", "add", "count", "sort"]}
ITERATIONS = 8


def stock(recipe: dict, out: Path) -> None:
    import mergekit.merge

    run = getattr(mergekit.merge.run_merge, "__wrapped__", mergekit.merge.run_merge)
    run(MergeConfiguration.model_validate(recipe), str(out), MergeOptions(quiet=True))


def fw(models: list[str], out: Path, **parameters) -> dict:
    recipe = {
        "merge_method": "frank_wolfe",
        "base_model": str(demo.ROOT / "base"),
        "models": [{"model": m} for m in models],
        "dtype": "float32",
        "parameters": {
            "calibration": str(demo.ROOT / "calib.yaml"),
            "iterations": ITERATIONS,
            "seed": 0,
            **parameters,
        },
    }
    started = time.perf_counter()
    plan = run_fw_merge(
        MergeConfiguration.model_validate(recipe), str(out), MergeOptions(quiet=True)
    )
    return {
        "start_loss": plan.iterations[0].loss,
        "final_loss": plan.final_loss,
        "seconds": time.perf_counter() - started,
        "plan": plan,
    }


def held_out(path: Path) -> float:
    losses = [demo.held_out_loss(str(path), t) for t in demo.TARGETS]
    return sum(losses) / len(losses)


def baseline_recipe(kind: str, models: list[str]) -> dict:
    if kind == "task_arithmetic":
        params = {"weight": 0.3}
    else:
        params = {"weight": 1.0, "density": 0.5}
    return {
        "merge_method": kind,
        "base_model": str(demo.ROOT / "base"),
        "models": [{"model": m, "parameters": params} for m in models],
        "dtype": "float32",
    }


FW_FROM = {
    "task_arithmetic": {"init": "task_arithmetic", "init_scale": 0.3},
    "ties": {"init": "ties", "init_density": 0.5, "init_weight": 1.0},
}


def main() -> None:
    demo.build()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="fw_start_bench_"))
    try:
        for size, experts in POOLS.items():
            models = [str(demo.ROOT / f"expert_{e}") for e in experts]
            default = fw(models, work / f"fw_base_{size}", init="base")
            default_held = held_out(work / f"fw_base_{size}")
            auto = fw(models, work / f"fw_auto_{size}", init="auto")
            auto_held = held_out(work / f"fw_auto_{size}")
            chosen = next(e["start"] for e in auto["plan"].init_table if e["chosen"])
            for kind in ("task_arithmetic", "ties"):
                stock(baseline_recipe(kind, models), work / f"{kind}_{size}")
                started = fw(models, work / f"fw_{kind}_{size}", **FW_FROM[kind])
                rows.append({
                    "pool": size,
                    "baseline": kind,
                    "baseline_calib": started["start_loss"],
                    "baseline_held_out": held_out(work / f"{kind}_{size}"),
                    "fw_from_calib": started["final_loss"],
                    "fw_from_held_out": held_out(work / f"fw_{kind}_{size}"),
                    "fw_from_seconds": started["seconds"],
                    "fw_default_calib": default["final_loss"],
                    "fw_default_held_out": default_held,
                    "fw_auto_calib": auto["final_loss"],
                    "fw_auto_held_out": auto_held,
                    "auto_chose": chosen,
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (RESULTS / "start_from_baselines.json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"FW ({ITERATIONS} iterations, the package defaults otherwise) on the demo zoo; "
        "calibration: 32 samples each of reverse and add; held-out: 100 other samples each. "
        "The calib columns are the objective FW minimises (`reduction: sequence`: per task, "
        "the mean over samples of the summed response NLL); held-out is the mean "
        "response-token cross-entropy. Lower is better in both.",
        "",
        "| pool | baseline | baseline calib | FW from it calib | baseline held-out | "
        "FW from it held-out | FW init: base calib / held-out | FW auto calib / held-out (start) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pool']} | {r['baseline']} | {r['baseline_calib']:.4f} | "
            f"{r['fw_from_calib']:.4f} | {r['baseline_held_out']:.4f} | "
            f"{r['fw_from_held_out']:.4f} | {r['fw_default_calib']:.4f} / "
            f"{r['fw_default_held_out']:.4f} | {r['fw_auto_calib']:.4f} / "
            f"{r['fw_auto_held_out']:.4f} ({r['auto_chose']}) |"
        )
    (RESULTS / "start_from_baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
