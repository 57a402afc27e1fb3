"""Merges of the real tier's LoRA adapters through the stock CLI, scored by greedy exact match.

    nice -n 10 python -m benchmarks.real.merges [--pools targets4,all8] [--methods M1,M2,...] \
        [--fw-budgets 10:16,10:32] [--chosen-from targets4] [--test-best-only] [--keep M1,M2]

Needs `python -m benchmarks.real.build` first. For each pool (POOLS: the 4 target adapters,
+2 irrelevant ones, all 8, all 8 + the noise adapter, all of them calibrated and scored on the 4
target tasks; `table1`: all 8 adapters on all 8 tasks; the relevance curve's `rel2` and `rel6`:
2 and 6 adapters on their own tasks) and method it writes recipes under
$BENCH_CACHE/real/merges/, runs one merge command per setting: `mergekit-yaml RECIPE OUT` for
the stock methods (LoRA adapters as `base+adapter`, densified into one shared
`--lora-merge-cache`) and for FW (adapters as factors through `parameters.adapters`);
`python -m benchmarks.real.svd_merges` for TSV-M, Iso-C and Iso-CTS;
`python -m benchmarks.real.peft_merges` for peft's `add_weighted_adapter`. It records the
command's wall time and peak RSS (the child's ru_maxrss), scores the output on the 32
calibration inputs of every task of the pool, keeps each method's setting with the best
calibration mean and scores that one on the 100 test inputs of every task of the pool
(`--test-best-only`: only the pool's baseline with the best calibration mean). FW:
`fw_defaults` is the package's recipe defaults (the commit the merge command imports) with one
budget per `--fw-budgets` pair (iterations : the first calibration samples of each task), each
scored on test; `fw_soft` the same with `variant: soft`. `frank_wolfe` (5 iterations, 8
samples) and `frank_wolfe_step` (`--fw-step`, 10 / 16) made the earlier rows. `--chosen-from
POOL` runs, for the methods other than task arithmetic and TIES, only the setting chosen on
POOL's calibration (the same calibration data in every pool of the Table 3 analogue). A
setting already in the results file is not run again. Results:
benchmarks/real/results/merges.json (rewritten after every command). The merge commands
import `mergekit_fw` from PYTHONPATH: put a `git archive` snapshot with a COMMIT file first
there (see `package()`), so that edits to the working tree during a run do not reach it.
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
LORA_CACHE = lm.CACHE / "lora_merge_cache"
BIN = Path(sys.executable).parent
POOLS = {
    "targets4": list(tasks.TARGETS),
    "targets6": [*tasks.TARGETS, *tasks.OTHERS[:2]],  # the Table 3 analogue's middle pool
    "all8": list(tasks.TASKS),
    "all8_noise": [*tasks.TASKS, tasks.NOISE],  # + the adapter trained on random answers
    "table1": list(tasks.TASKS),  # the Table 1 analogue: every adapter, every task
    # the relevance curve: the task set grows with the pool (n tasks, their n adapters); its
    # n = 4 and n = 8 points are targets4 and table1
    "rel2": list(tasks.TARGETS[:2]),
    "rel6": [*tasks.TARGETS, *tasks.OTHERS[:2]],
}
# the tasks a pool is calibrated (FW's data, the choice of setting) and scored on: the 4 targets
# in the Table 3 analogue's pools, all 8 in the Table 1 analogue, its own in the relevance curve
POOL_TASKS = {"table1": list(tasks.TASKS), "rel2": POOLS["rel2"], "rel6": POOLS["rel6"]}
RELEVANCE = ("rel2", "targets4", "rel6", "table1")  # the relevance curve's pools, n = 2 .. 8


def pool_tasks(pool_name: str) -> list[str]:
    return POOL_TASKS.get(pool_name, list(tasks.TARGETS))


GRIDS = {
    "task_arithmetic": [{"weight": w} for w in (0.1, 0.2, 0.3, 0.6, 1.0)],
    "ties": [
        {"weight": w, "density": d, "normalize": False} for d in (0.3, 0.7) for w in (0.5, 1.0)
    ],
    # the other stock methods, small grids on a shared 2-core machine: task arithmetic's
    # chosen weight (0.3) for the methods without sign election, 0.3 and TIES's 0.5 with it
    "linear": [{"weight": 1.0, "normalize": True}],
    "dare_linear": [{"weight": 0.3, "density": 0.5}],
    "della_linear": [{"weight": 0.3, "density": 0.5, "epsilon": 0.15}],
    "breadcrumbs": [{"weight": 0.3, "density": 0.9, "gamma": 0.01}],
    "dare_ties": [{"weight": w, "density": 0.5} for w in (0.3, 0.5)],
    "della": [
        {"weight": w, "density": 0.5, "epsilon": 0.15, "normalize": False} for w in (0.3, 0.5)
    ],  # fmt: skip
    "breadcrumbs_ties": [{"weight": w, "density": 0.9, "gamma": 0.01} for w in (0.3, 0.5)],
    "model_stock": [{}],
    "sce": [{"select_topk": 0.1}],
    # data-free SVD merges written here from their papers (benchmarks/real/svd_merges.py)
    "tsv_m": [{"alpha": a} for a in (0.3, 0.6, 1.0, 1.5, 2.0)],
    "iso_c": [{"alpha": a} for a in (0.5, 1.0, 1.5, 2.0, 3.0)],
    "iso_cts": [{"alpha": a} for a in (0.5, 1.0, 1.5, 2.0, 3.0)],
}
SVD_METHODS = ("tsv_m", "iso_c", "iso_cts")
# peft's LoRA merges (`add_weighted_adapter`, benchmarks/real/peft_merges.py)
GRIDS["peft_cat"] = [{"weight": w} for w in (0.2, 0.3, 0.6)]
GRIDS["peft_ties"] = [{"weight": w, "density": d} for d in (0.3, 0.7) for w in (0.5, 1.0)]
PEFT_METHODS = ("peft_cat", "peft_ties")
SCRIPTED = (*SVD_METHODS, *PEFT_METHODS)  # merges run by a script of this folder
FULL_GRID = ("task_arithmetic", "ties")  # their whole grid on every pool (--chosen-from or not)
# FW's methods: the recipe options each one sets besides the budget (iterations, calibration
# samples per task). `frank_wolfe` (5 / 8) and `frank_wolfe_step` (step given by --fw-step) are
# the earlier runs; `fw_defaults` is the package's defaults at the commit the run imports
# (since 6ddb0de: step quadratic), `fw_soft` changes only `variant: soft`, and `fw_hard` is
# the paper's FW-hard: its set (the hull conv{base, adapters}) from its start (the base). These
# take their budgets from --fw-budgets and score every budget on test.
FW_OPTIONS = {"frank_wolfe": {}, "frank_wolfe_step": {}, "fw_defaults": {},
              "fw_soft": {"variant": "soft"}, "fw_pairwise": {"fw_steps": "pairwise"},
              "fw_hard": {"constraint": "hull", "init": "base"}}  # fmt: skip
FW_EVERY_BUDGET = ("fw_defaults", "fw_soft", "fw_pairwise", "fw_hard")
METHODS = ["fw_defaults", *GRIDS]  # the default --methods
PER_MODEL = ("weight", "density", "gamma", "epsilon")
# FW's budget on that machine: 5 iterations (the README's example recipe has 10), the first
# 8 of the 32 calibration samples of each target task; the other options are the defaults
FW_ITERATIONS, FW_CALIB = 5, 8


def adapter(task: str) -> Path:
    return lm.CACHE / "adapters" / task


def calib_manifest(samples: int, names=tasks.TARGETS) -> Path:
    """The calibration files of the tasks `names`; FW reads the first `samples` of each."""
    which = "targets" if tuple(names) == tasks.TARGETS else f"{len(names)}tasks"
    path = lm.CACHE / "data" / f"calib_{which}_{samples}.yaml"
    path.write_text(
        "tasks:\n"
        + "".join(f"  {t}: {{path: {t}_calib.jsonl, max_samples: {samples}}}\n" for t in names)
    )
    return path


def stock_recipe(method: str, pool: list[str], setting: dict) -> str:
    base = lm.base_dir()
    per_model = {k: v for k, v in setting.items() if k in PER_MODEL}
    overall = {k: v for k, v in setting.items() if k not in PER_MODEL}
    lines = [f"merge_method: {method}"]
    if method != "linear":  # linear averages the listed models only
        lines.append(f"base_model: {base}")
    lines += ["dtype: float32", "models:"]
    for t in pool:
        params = ", ".join(f"{k}: {v}" for k, v in per_model.items())
        lines.append(
            f"  - model: {base}+{adapter(t)}"
            + (f"\n    parameters: {{{params}}}" if params else "")
        )
    if overall:
        lines.append("parameters:")
        lines += [
            f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in overall.items()
        ]
    return "\n".join(lines) + "\n"


def svd_argv(method: str, pool: list[str], setting: dict, out: Path) -> list[str]:
    """The command of one TSV-M / Iso-C / Iso-CTS merge (benchmarks/real/svd_merges.py)."""
    return [sys.executable, "-m", "benchmarks.real.svd_merges", "--method", method,
            "--alpha", str(setting["alpha"]), "--base", str(lm.base_dir()),
            "--adapters", ",".join(str(adapter(t)) for t in pool), str(out)]  # fmt: skip


def fw_recipe(
    pool: list[str], iterations: int, samples: int, folder: Path, options: dict, names
) -> str:
    manifest = folder / "adapters.yaml"
    manifest.write_text(
        "adapters:\n" + "".join(f"  - {{path: {adapter(t)}, name: lora_{t}}}\n" for t in pool)
    )
    base = lm.base_dir()
    return (
        f"merge_method: frank_wolfe\nbase_model: {base}\nmodels:\n  - model: {base}\n"
        f"dtype: float32\nparameters:\n  calibration: {calib_manifest(samples, names)}\n"
        f"  iterations: {iterations}\n  adapters: {manifest}\n"
        + "".join(f"  {k}: {v}\n" for k, v in options.items())
    )


def peft_argv(method: str, pool: list[str], setting: dict, out: Path) -> list[str]:
    """The command of one peft `add_weighted_adapter` merge (benchmarks/real/peft_merges.py)."""
    argv = [sys.executable, "-m", "benchmarks.real.peft_merges", "--combination",
            method.removeprefix("peft_"), "--weight", str(setting["weight"]),
            "--base", str(lm.base_dir()), "--adapters", ",".join(str(adapter(t)) for t in pool)]  # fmt: skip
    if "density" in setting:
        argv += ["--density", str(setting["density"])]
    return [*argv, str(out)]


def merge_argv(method: str, pool: list[str], setting: dict, folder: Path) -> list[str]:
    """The merge command of one setting (its recipe already in folder/recipe.yaml)."""
    out = folder / "out"
    if method in SVD_METHODS:
        return svd_argv(method, pool, setting, out)
    if method in PEFT_METHODS:
        return peft_argv(method, pool, setting, out)
    argv = [str(BIN / "mergekit-yaml"), str(folder / "recipe.yaml"), str(out)]
    if method not in FW_OPTIONS:
        argv += ["--lora-merge-cache", str(LORA_CACHE)]
    return argv


def run_command(argv: list[str], log: Path) -> dict:
    """Wall time and peak RSS (ru_maxrss of the child) of one CLI command."""
    env = {**os.environ, "OMP_NUM_THREADS": str(lm.thread_count()),
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


def fw_record(folder: Path) -> dict:
    """What a FW merge's plan and log say about its run (folder/out/fw_plan.json, merge.log)."""
    plan = json.loads((folder / "out" / "fw_plan.json").read_text())
    return {
        "final_loss": plan["final_loss"], "stopped": plan["stopped"],
        "seconds": plan.get("seconds"), "start": plan.get("start"),
        "iterations_run": len(plan["iterations"]),
        "losses": [it["loss"] for it in plan["iterations"]],
        "init_table": plan.get("init_table"),
        "task_preferences": plan.get("task_preferences"),
        "final_task_losses": plan.get("final_task_losses"),
        # each vertex's coefficient, mean over the tensors, in the merge
        "mean_coefficients": dict(zip(plan["labels"], (
            sum(col) / len(col) for col in zip(*plan["coefficients"].values())))),
        "mergekit_fw": plan.get("fingerprint", {}).get("mergekit_fw"),
        # the data line of the log: samples and target tokens per task
        "data": next((ln.strip() for ln in (folder / "merge.log").read_text(
            errors="replace").splitlines() if "target tokens" in ln), None),
    }  # fmt: skip


def attempt(argv, folder: Path, key: str, setting: dict, result: dict, save):
    """(cost, package) of one merge command, or None: a failure is recorded under
    result["failed"][key] with the log's tail, saved, and printed."""
    pkg = package()
    try:
        cost = run_command(argv, folder / "merge.log")
    except RuntimeError as error:
        tail = (folder / "merge.log").read_text(errors="replace")[-600:]
        result.setdefault("failed", {}).setdefault(key, []).append(
            {"setting": setting, "error": str(error), "log_tail": tail, "package": pkg}
        )
        print(f"{key} {setting}: FAILED ({error})", flush=True)
        save()
        return None
    return cost, pkg


def package() -> str:
    """Which mergekit_fw the merge commands import: a snapshot folder on PYTHONPATH with a
    COMMIT file (`git archive HEAD mergekit_fw`, so that edits in the working tree made while
    the benchmark runs do not reach it), else this checkout's HEAD (plus "+edits" if its
    mergekit_fw/ differs from HEAD)."""
    for entry in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if (Path(entry) / "COMMIT").exists() and (Path(entry) / "mergekit_fw").is_dir():
            return (Path(entry) / "COMMIT").read_text().strip()
    root = Path(__file__).resolve().parents[2]
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "mergekit_fw"]).returncode
    return head.stdout.strip() + ("+edits" if dirty else "")


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
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--fw-iterations", type=int, default=FW_ITERATIONS)
    parser.add_argument(
        "--fw-calib",
        type=int,
        default=FW_CALIB,
        help="calibration samples per target task given to FW (max_samples)",
    )
    parser.add_argument(
        "--fw-budgets",
        default="10:16",
        help="fw_defaults / fw_soft: iterations:calibration-samples-per-task pairs, e.g. 10:16,20:32",
    )
    parser.add_argument("--fw-step-iterations", type=int, default=10)
    parser.add_argument("--fw-step-calib", type=int, default=16)
    parser.add_argument(
        "--fw-step",
        default="quadratic",
        help="the step rule of the `frank_wolfe_step` method (FW with that one option changed)",
    )
    parser.add_argument("--ta-weights", help="task_arithmetic grid, e.g. 0.1,0.3 (default: GRIDS)")
    parser.add_argument(
        "--alphas",
        action="append",
        default=[],
        help="grid of an SVD method, e.g. tsv_m:0.6,1.0 (repeatable; default: GRIDS)",
    )
    parser.add_argument("--ties-grid", help="ties grid as density:weight pairs, e.g. 0.3:0.5,0.7:1")
    parser.add_argument("--out", type=Path, default=lm.RESULTS / "merges.json")
    parser.add_argument(
        "--chosen-from",
        help="run only the setting chosen (on calibration) in this pool, where it has one: "
        "the calibration data are the same in every pool, so this saves the grid",
    )
    parser.add_argument(
        "--test-best-only",
        action="store_true",
        help="score on test only the pool's baseline with the best calibration mean (of every "
        "baseline run in the pool so far), not every method's chosen setting (FW: every run)",
    )
    parser.add_argument(
        "--keep", default="", help="methods whose chosen merge stays on disk (for lmeval)"
    )
    args = parser.parse_args()
    lm.threads()
    if args.ta_weights:
        GRIDS["task_arithmetic"] = [{"weight": float(w)} for w in args.ta_weights.split(",")]
    for spec in args.alphas:
        method, _, alphas = spec.partition(":")
        GRIDS[method] = [{"alpha": float(a)} for a in alphas.split(",")]
    if args.ties_grid:
        GRIDS["ties"] = [
            {"weight": float(w), "density": float(d), "normalize": False}
            for d, w in (pair.split(":") for pair in args.ties_grid.split(","))
        ]
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.setdefault("runs", {})
    result["targets"] = list(tasks.TARGETS)
    result["pools"] = POOLS
    lora_cache = LORA_CACHE

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    def test_run(pool_name: str, method: str, best: dict) -> None:
        """Score one chosen setting on the test inputs (merged again if its output is gone)."""
        tag = "_".join(f"{k}{v}" for k, v in best["setting"].items())
        folder = ROOT / pool_name / f"{method}_{tag}"
        out = folder / "out"
        if not (out / "config.json").exists():  # deleted or interrupted: merge it again
            run_command(merge_argv(method, POOLS[pool_name], best["setting"], folder),
                        folder / "merge_again.log")  # fmt: skip
        best["test"] = score(out, pool_tasks(pool_name), "test")
        best["test_mean"] = mean(best["test"])
        print(f"{pool_name}/{method} best {best['setting']}: test mean {best['test_mean']:.3f}",
              flush=True)  # fmt: skip
        save()
        if method not in args.keep.split(","):
            shutil.rmtree(out, ignore_errors=True)

    for pool_name in args.pools.split(","):
        pool = POOLS[pool_name]
        names = pool_tasks(pool_name)
        baselines: list[tuple[str, dict]] = []  # --test-best-only: (method, chosen run)
        for method in args.methods.split(","):
            key = f"{pool_name}/{method}"
            if method == "frank_wolfe":
                settings = [{"iterations": args.fw_iterations, "calib_per_task": args.fw_calib}]
            elif method == "frank_wolfe_step":
                settings = [{"iterations": args.fw_step_iterations,
                             "calib_per_task": args.fw_step_calib, "step": args.fw_step}]  # fmt: skip
            elif method in FW_EVERY_BUDGET:
                settings = [{"iterations": int(i), "calib_per_task": int(c), **FW_OPTIONS[method]}
                            for i, c in (b.split(":") for b in args.fw_budgets.split(","))]  # fmt: skip
            elif (
                args.chosen_from
                and method not in FULL_GRID
                and result["runs"].get(f"{args.chosen_from}/{method}")
            ):
                ref = result["runs"][f"{args.chosen_from}/{method}"]
                settings = [max(ref, key=lambda r: r["calib_mean"])["setting"]]
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
                out = folder / "out"
                if method in FW_OPTIONS:
                    options = {k: v for k, v in setting.items()
                               if k not in ("iterations", "calib_per_task")}  # fmt: skip
                    text = fw_recipe(pool, setting["iterations"], setting["calib_per_task"], folder,
                                     options, names)  # fmt: skip
                elif method in SCRIPTED:
                    text = " ".join(merge_argv(method, pool, setting, folder)) + "\n"
                else:
                    text = stock_recipe(method, pool, setting)
                (folder / "recipe.yaml").write_text(text)
                argv = merge_argv(method, pool, setting, folder)
                warm = lora_cache.exists() and all(any(lora_cache.glob(f"*{t}*")) for t in pool)
                done = attempt(argv, folder, key, setting, result, save)
                if done is None:  # recorded; the other settings still run
                    continue
                cost, pkg = done
                calib = score(out, names, "calib")
                run = {"setting": setting, "recipe": text, **cost, "package": pkg, "calib": calib,
                       "threads": lm.thread_count(),
                       "calib_mean": mean(calib),
                       "lora_cache_warm": None if method in FW_OPTIONS or method in SCRIPTED
                       else warm}  # fmt: skip
                if method in FW_OPTIONS:
                    run["fw"] = fw_record(folder)
                if method in FW_EVERY_BUDGET:  # each budget is a setting to report, not to pick
                    run["test"] = score(out, names, "test")
                    run["test_mean"] = mean(run["test"])
                runs.append(run)
                print(f"{key} {setting}: calib mean {run['calib_mean']:.3f}, "
                      + (f"test mean {run['test_mean']:.3f}, " if "test" in run else "")
                      + f"{cost['wall_s']:.0f} s, {cost['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
                save()
                keep = out
                best = max(runs, key=lambda r: r["calib_mean"])
                if best is not run:
                    shutil.rmtree(keep, ignore_errors=True)
            if not runs:
                continue
            best = max(runs, key=lambda r: r["calib_mean"])
            if args.test_best_only and method not in FW_OPTIONS:
                baselines.append((method, best))
            elif "test" not in best:
                test_run(pool_name, method, best)
            for r in runs:  # every output folder goes once it is scored (~540 MB each)
                if r is best and method in args.keep.split(","):
                    continue
                tag = "_".join(f"{k}{v}" for k, v in r["setting"].items())
                shutil.rmtree(ROOT / pool_name / f"{method}_{tag}" / "out", ignore_errors=True)
        if args.test_best_only:  # the pool's baseline with the best calibration mean (of
            # every baseline run in this pool, by this command or an earlier one) gets tested
            baselines = [(k.split("/")[1], max(v, key=lambda r: r["calib_mean"]))
                         for k, v in result["runs"].items() if v and k.split("/")[0] == pool_name
                         and k.split("/")[1] not in FW_OPTIONS]  # fmt: skip
        if baselines:
            method, best = max(baselines, key=lambda mb: mb[1]["calib_mean"])
            if "test" not in best:
                test_run(pool_name, method, best)


if __name__ == "__main__":
    main()
