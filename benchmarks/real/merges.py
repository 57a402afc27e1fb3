"""Merges of the real tier's LoRA adapters through the stock CLI, scored by greedy exact match.

    nice -n 10 python -m benchmarks.real.merges [--pools targets4,all8] \
        [--methods task_arithmetic,ties,frank_wolfe] [--fw-iterations 5] [--fw-calib 8]

Needs `python -m benchmarks.real.build` first. For each pool (the 4 target adapters; all 8) and
method it writes recipes under $BENCH_CACHE/real/merges/, runs `mergekit-yaml RECIPE OUT` for
each (LoRA adapters as `base+adapter` for the stock methods, densified into one shared
`--lora-merge-cache`; FW takes them as factors through `parameters.adapters`), records the
command's wall time and peak RSS (the child's ru_maxrss), scores the output on the 32
calibration inputs of every target task, keeps the stock method's setting with the best
calibration mean and scores that one on the 100 test inputs of every target task. FW is run
once per pool with the recipe defaults except the budget (FW_ITERATIONS iterations, the first
FW_CALIB calibration samples of each target task). A setting already in the results file is
not run again. Results: benchmarks/real/results/merges.json (rewritten after every command).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.real import lm, tasks  # noqa: E402

ROOT = lm.CACHE / "merges"
BIN = Path(sys.executable).parent
POOLS = {"targets4": list(tasks.TARGETS), "all8": list(tasks.TASKS)}
GRIDS = {
    "task_arithmetic": [{"weight": w} for w in (0.1, 0.2, 0.3, 0.6, 1.0)],
    "ties": [
        {"weight": w, "density": d, "normalize": False} for d in (0.3, 0.7) for w in (0.5, 1.0)
    ],
}
# FW's budget on that machine: 5 iterations (the README's example recipe has 10), the first
# 8 of the 32 calibration samples of each target task; the other options are the defaults
FW_ITERATIONS, FW_CALIB = 5, 8


def adapter(task: str) -> Path:
    return lm.CACHE / "adapters" / task


def calib_manifest(samples: int) -> Path:
    """The target tasks' calibration files; FW reads the first `samples` of each."""
    path = lm.CACHE / "data" / f"calib_targets_{samples}.yaml"
    path.write_text(
        "tasks:\n"
        + "".join(
            f"  {t}: {{path: {t}_calib.jsonl, max_samples: {samples}}}\n" for t in tasks.TARGETS
        )
    )
    return path


def stock_recipe(method: str, pool: list[str], setting: dict) -> str:
    base = lm.base_dir()
    per_model = {k: v for k, v in setting.items() if k in ("weight", "density")}
    lines = [f"merge_method: {method}", f"base_model: {base}", "dtype: float32", "models:"]
    for t in pool:
        params = ", ".join(f"{k}: {v}" for k, v in per_model.items())
        lines.append(f"  - model: {base}+{adapter(t)}\n    parameters: {{{params}}}")
    if "normalize" in setting:
        lines.append(f"parameters:\n  normalize: {str(setting['normalize']).lower()}")
    return "\n".join(lines) + "\n"


def fw_recipe(pool: list[str], iterations: int, samples: int, folder: Path) -> str:
    manifest = folder / "adapters.yaml"
    manifest.write_text(
        "adapters:\n" + "".join(f"  - {{path: {adapter(t)}, name: lora_{t}}}\n" for t in pool)
    )
    base = lm.base_dir()
    return (
        f"merge_method: frank_wolfe\nbase_model: {base}\nmodels:\n  - model: {base}\n"
        f"dtype: float32\nparameters:\n  calibration: {calib_manifest(samples)}\n"
        f"  iterations: {iterations}\n  adapters: {manifest}\n"
    )


def run_command(argv: list[str], log: Path) -> dict:
    """Wall time and peak RSS (ru_maxrss of the child) of one CLI command."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("BENCH_THREADS", "1"),
           "MERGEKIT_FW_PROGRESS": "lines"}  # fmt: skip
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}); see {log}")
    return {"wall_s": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def score(out: Path, names, split: str) -> dict:
    tok = lm.load_tokenizer(lm.base_dir())
    model = lm.load_model(out)
    res = {t: lm.exact_match(model, tok, tasks.splits(t)[split])["em"] for t in names}
    del model
    return res


def mean(d: dict) -> float:
    return sum(d.values()) / len(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", default="targets4,all8")
    parser.add_argument("--methods", default="task_arithmetic,ties,frank_wolfe")
    parser.add_argument("--fw-iterations", type=int, default=FW_ITERATIONS)
    parser.add_argument(
        "--fw-calib",
        type=int,
        default=FW_CALIB,
        help="calibration samples per target task given to FW (max_samples)",
    )
    parser.add_argument("--ta-weights", help="task_arithmetic grid, e.g. 0.1,0.3 (default: GRIDS)")
    parser.add_argument("--ties-grid", help="ties grid as density:weight pairs, e.g. 0.3:0.5,0.7:1")
    parser.add_argument("--out", type=Path, default=lm.RESULTS / "merges.json")
    args = parser.parse_args()
    lm.threads()
    if args.ta_weights:
        GRIDS["task_arithmetic"] = [{"weight": float(w)} for w in args.ta_weights.split(",")]
    if args.ties_grid:
        GRIDS["ties"] = [
            {"weight": float(w), "density": float(d), "normalize": False}
            for d, w in (pair.split(":") for pair in args.ties_grid.split(","))
        ]
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.setdefault("runs", {})
    result["targets"] = list(tasks.TARGETS)
    result["pools"] = POOLS
    result["threads"] = int(os.environ.get("BENCH_THREADS", "1"))
    lora_cache = lm.CACHE / "lora_merge_cache"

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    for pool_name in args.pools.split(","):
        pool = POOLS[pool_name]
        for method in args.methods.split(","):
            key = f"{pool_name}/{method}"
            if method == "frank_wolfe":
                settings = [{"iterations": args.fw_iterations, "calib_per_task": args.fw_calib}]
            else:
                settings = GRIDS[method]
            runs = result["runs"].setdefault(key, [])
            for setting in settings:
                if any(r["setting"] == setting for r in runs):
                    continue
                tag = "_".join(f"{k}{v}" for k, v in setting.items())
                folder = ROOT / pool_name / f"{method}_{tag}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                if method == "frank_wolfe":
                    text = fw_recipe(pool, setting["iterations"], setting["calib_per_task"], folder)
                else:
                    text = stock_recipe(method, pool, setting)
                (folder / "recipe.yaml").write_text(text)
                out = folder / "out"
                argv = [str(BIN / "mergekit-yaml"), str(folder / "recipe.yaml"), str(out)]
                if method != "frank_wolfe":
                    argv += ["--lora-merge-cache", str(lora_cache)]
                warm = lora_cache.exists() and all(any(lora_cache.glob(f"*{t}*")) for t in pool)
                cost = run_command(argv, folder / "merge.log")
                calib = score(out, tasks.TARGETS, "calib")
                run = {"setting": setting, "recipe": text, **cost, "calib": calib,
                       "calib_mean": mean(calib),
                       "lora_cache_warm": warm if method != "frank_wolfe" else None}  # fmt: skip
                if method == "frank_wolfe":
                    plan = json.loads((out / "fw_plan.json").read_text())
                    run["fw"] = {
                        "final_loss": plan["final_loss"], "stopped": plan["stopped"],
                        "seconds": plan.get("seconds"), "start": plan.get("start"),
                        "iterations_run": len(plan["iterations"]),
                        "losses": [it["loss"] for it in plan["iterations"]],
                        "init_table": plan.get("init_table"),
                    }  # fmt: skip
                runs.append(run)
                print(f"{key} {setting}: calib mean {run['calib_mean']:.3f}, "
                      f"{cost['wall_s']:.0f} s, {cost['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
                save()
                keep = out
                best = max(runs, key=lambda r: r["calib_mean"])
                if best is not run:
                    shutil.rmtree(keep, ignore_errors=True)
            best = max(runs, key=lambda r: r["calib_mean"])
            if "test" not in best:
                tag = "_".join(f"{k}{v}" for k, v in best["setting"].items())
                folder = ROOT / pool_name / f"{method}_{tag}"
                out = folder / "out"
                if not (out / "config.json").exists():  # an interrupted run: merge it again
                    argv = [str(BIN / "mergekit-yaml"), str(folder / "recipe.yaml"), str(out)]
                    if method != "frank_wolfe":
                        argv += ["--lora-merge-cache", str(lora_cache)]
                    run_command(argv, folder / "merge_again.log")
                best["test"] = score(out, tasks.TARGETS, "test")
                best["test_mean"] = mean(best["test"])
                print(f"{key} best {best['setting']}: test target mean {best['test_mean']:.3f}",
                      flush=True)  # fmt: skip
                save()
            for r in runs:  # every output folder goes once it is scored (~540 MB each)
                tag = "_".join(f"{k}{v}" for k, v in r["setting"].items())
                shutil.rmtree(ROOT / pool_name / f"{method}_{tag}" / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
