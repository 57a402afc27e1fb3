"""The real tier's dense setting: the 4 target tasks fully fine-tuned, merged as full checkpoints.

    nice -n 10 python -m benchmarks.real.dense [--steps 60] [--batch 8] [--lr 1e-4] \
        [--methods fw_defaults,task_arithmetic,ties,dare_ties,iso_c,tsv_m,iso_cts] \
        [--fw-budget 10:16] [--cross]

Needs `python -m benchmarks.real.build` first (the base and the task files). Trains one full
fine-tune (every parameter, `lm.train_full`: the training pairs, answer-only loss and loop of
the LoRA adapters, a smaller learning rate) per target task under
$BENCH_CACHE/real/dense/experts/<task> (float32 safetensors + tokenizer) and scores each on its
own task's 100 test inputs (`--cross`: on the other 3 targets too). Then merges the 4 experts
(pool `dense4`) through the stock CLI `mergekit-yaml RECIPE OUT`, recording the command's wall
time and peak RSS: FW with the package defaults (`models:` the base and the 4 experts,
`calibration:` the first 16 calibration samples of each target, 10 iterations); task
arithmetic, TIES and DARE-TIES (stock mergekit) and Iso-C, TSV-M, Iso-CTS (`benchmarks/real/svd_merges.py
--experts`, its wall time and peak RSS that script's) over their grids (GRIDS). Every setting is scored on the 32 calibration inputs of
each target; the one with the best calibration mean of each baseline is scored on the 100 test
inputs (FW: every budget). The merge commands import `mergekit_fw` from PYTHONPATH (a
`git archive` snapshot with a COMMIT file, see `merges.package`). A setting already in the
results file is not run again. Results: benchmarks/real/results/dense.json (rewritten after
every step).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.real import lm, merges, tasks  # noqa: E402

ROOT = lm.CACHE / "dense"
POOL = "dense4"
GRIDS = {
    "task_arithmetic": [{"weight": w} for w in (0.1, 0.2, 0.3, 0.5, 1.0)],
    "ties": [
        {"weight": w, "density": d, "normalize": False} for d in (0.3, 0.7) for w in (0.5, 1.0)
    ],
    "dare_ties": [{"weight": w, "density": 0.5} for w in (0.3, 0.5)],
    # 4.0 and 5.0 added after 3.0, the top of the first grid, had the best calibration mean
    "iso_c": [{"alpha": a} for a in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)],
    # 3-point grids first: TSV-M around its paper's 1.0, Iso-CTS around Iso-C's chosen 4.0;
    # TSV-M's 2.0 and 2.5 and Iso-CTS's 5.0 added after the top of each one's first grid had
    # the best calibration mean
    "tsv_m": [{"alpha": a} for a in (0.5, 1.0, 1.5, 2.0, 2.5)],
    "iso_cts": [{"alpha": a} for a in (2.0, 3.0, 4.0, 5.0)],
}
SCRIPTED = ("iso_c", "tsv_m", "iso_cts")  # benchmarks/real/svd_merges.py --experts
FW_METHODS = ("fw_defaults",)
PER_MODEL = merges.PER_MODEL


def expert(task: str):
    return ROOT / "experts" / task


def stock_recipe(method: str, setting: dict) -> str:
    """A stock mergekit recipe over the 4 dense experts (the base as base_model)."""
    per_model = {k: v for k, v in setting.items() if k in PER_MODEL}
    overall = {k: v for k, v in setting.items() if k not in PER_MODEL}
    lines = [f"merge_method: {method}", f"base_model: {lm.base_dir()}", "dtype: float32",
             "models:"]  # fmt: skip
    for t in tasks.TARGETS:
        params = ", ".join(f"{k}: {v}" for k, v in per_model.items())
        lines.append(
            f"  - model: {expert(t)}" + (f"\n    parameters: {{{params}}}" if params else "")
        )
    if overall:
        lines.append("parameters:")
        lines += [
            f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in overall.items()
        ]
    return "\n".join(lines) + "\n"


def fw_recipe(iterations: int, samples: int) -> str:
    """FW with the package defaults: the base and the 4 experts as models, one budget."""
    base = lm.base_dir()
    return (
        f"merge_method: frank_wolfe\nbase_model: {base}\nmodels:\n  - model: {base}\n"
        + "".join(f"  - model: {expert(t)}\n" for t in tasks.TARGETS)
        + f"dtype: float32\nparameters:\n  calibration: "
        f"{merges.calib_manifest(samples, tasks.TARGETS)}\n  iterations: {iterations}\n"
    )


def merge_argv(method: str, setting: dict, folder: Path) -> list[str]:
    """The merge command of one setting (its recipe in folder/recipe.yaml)."""
    out = folder / "out"
    if method in SCRIPTED:
        return [sys.executable, "-m", "benchmarks.real.svd_merges", "--method", method,
                "--alpha", str(setting["alpha"]), "--base", str(lm.base_dir()),
                "--experts", ",".join(str(expert(t)) for t in tasks.TARGETS), str(out)]  # fmt: skip
    return [str(merges.BIN / "mergekit-yaml"), str(folder / "recipe.yaml"), str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--methods", default=",".join(["fw_defaults", *GRIDS]))
    parser.add_argument("--fw-budget", default="10:16", help="iterations:calib samples per task")
    parser.add_argument("--cross", action="store_true", help="score experts on all 4 targets")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--out", default=str(lm.RESULTS / "dense.json"))
    args = parser.parse_args()
    lm.threads()
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    hyper = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "optimizer": "AdamW",
             "weight_decay": 0.0, "schedule": "5-step warm-up, linear decay", "seed": 0,
             "parameters": "all", "dtype": "float32"}  # fmt: skip
    if result.get("training") != hyper:  # other experts: nothing recorded holds
        result = {}
    result.update({
        "command": "python -m benchmarks.real.dense " + " ".join(sys.argv[1:]),
        "model": "SmolLM2-135M-Instruct (the real tier's base), every parameter fine-tuned",
        "training": hyper, "targets": list(tasks.TARGETS), "pool": POOL,
        "threads": lm.thread_count(),
    })  # fmt: skip
    result.setdefault("experts", {})
    result.setdefault("runs", {})

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    tok = lm.load_tokenizer(lm.base_dir())
    for t in tasks.TARGETS:
        folder = expert(t)
        rec = result["experts"].get(t)
        if rec is None or not (folder / "model.safetensors").exists():
            shutil.rmtree(folder, ignore_errors=True)
            train = lm.train_full(lm.base_dir(), tasks.splits(t)["train"], folder, args.steps,
                                  args.batch, args.lr, seed=0)  # fmt: skip
            rec = result["experts"][t] = {"training": train, "test": {}}
            print(f"trained dense_{t}: {train['seconds']:.0f} s, loss {train['first_loss']:.3f}"
                  f" -> {train['last_losses'][-1]:.4f}", flush=True)  # fmt: skip
            save()
        names = tasks.TARGETS if args.cross else (t,)
        todo = [n for n in names if n not in rec["test"]]
        if todo:
            model = lm.load_model(folder)
            for n in todo:
                t0 = time.perf_counter()
                rec["test"][n] = lm.exact_match(model, tok, tasks.splits(n)["test"])["em"]
                print(f"dense_{t} on {n}: {rec['test'][n]:.2f} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)  # fmt: skip
                save()
            del model
    if args.train_only:
        return

    names = list(tasks.TARGETS)
    for method in args.methods.split(","):
        key = f"{POOL}/{method}"
        runs = result["runs"].setdefault(key, [])
        if method in FW_METHODS:
            it, calib = (int(x) for x in args.fw_budget.split(":"))
            settings = [{"iterations": it, "calib_per_task": calib}]
        else:
            settings = GRIDS[method]
        for setting in settings:
            if any(r["setting"] == setting for r in runs):
                continue
            tag = "_".join(f"{k}{v}" for k, v in setting.items())
            folder = ROOT / "merges" / f"{method}_{tag}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            out = folder / "out"
            argv = merge_argv(method, setting, folder)
            if method in FW_METHODS:
                text = fw_recipe(setting["iterations"], setting["calib_per_task"])
            elif method in SCRIPTED:
                text = " ".join(argv) + "\n"
            else:
                text = stock_recipe(method, setting)
            (folder / "recipe.yaml").write_text(text)
            done = merges.attempt(argv, folder, key, setting, result, save)
            if done is None:
                continue
            cost, pkg = done
            calib = merges.score(out, names, "calib")
            run = {"setting": setting, "recipe": text, **cost, "package": pkg, "calib": calib,
                   "threads": lm.thread_count(),
                   "calib_mean": merges.mean(calib),
                   "argv": argv}  # fmt: skip
            if method in FW_METHODS:
                run["fw"] = merges.fw_record(folder)
                run["test"] = merges.score(out, names, "test")
                run["test_mean"] = merges.mean(run["test"])
            runs.append(run)
            print(f"{key} {setting}: calib mean {run['calib_mean']:.3f}, "
                  + (f"test mean {run['test_mean']:.3f}, " if "test" in run else "")
                  + f"{cost['wall_s']:.0f} s, {cost['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
            save()
            best = max(runs, key=lambda r: r["calib_mean"])
            if best is not run:
                shutil.rmtree(out, ignore_errors=True)
            else:  # the previous best goes
                for r in runs:
                    if r is not run:
                        t2 = "_".join(f"{k}{v}" for k, v in r["setting"].items())
                        shutil.rmtree(ROOT / "merges" / f"{method}_{t2}" / "out", True)
        if not runs:
            continue
        best = max(runs, key=lambda r: r["calib_mean"])
        if "test" not in best:
            tag = "_".join(f"{k}{v}" for k, v in best["setting"].items())
            folder = ROOT / "merges" / f"{method}_{tag}"
            out = folder / "out"
            if not (out / "config.json").exists():  # deleted or interrupted: merge it again
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "recipe.yaml").write_text(best["recipe"])
                merges.run_command(merge_argv(method, best["setting"], folder),
                                   folder / "merge_again.log")  # fmt: skip
            best["test"] = merges.score(out, names, "test")
            best["test_mean"] = merges.mean(best["test"])
            print(f"{key} best {best['setting']}: test mean {best['test_mean']:.3f}", flush=True)
            save()
        for r in runs:  # the merged checkpoints go once scored (~540 MB each)
            tag = "_".join(f"{k}{v}" for k, v in r["setting"].items())
            shutil.rmtree(ROOT / "merges" / f"{method}_{tag}" / "out", ignore_errors=True)
    save()  # the command that last ran (a rerun that found everything done records itself)


if __name__ == "__main__":
    main()
