"""Experiments on the re-routing zoo: `python -m benchmarks.run --only irrelevance` (or
relevance, foreign). Hyper-parameters of every method are chosen on calibration only; the
scores are held-out exact match over the own expert's (normalised).

- irrelevance: 4 target tasks; pool = their 4 experts + 0, 4, 8, 12 irrelevant experts;
- relevance: the target set grows with the pool (n tasks, their n experts);
- foreign: 4 targets; pool = their 4 experts, then + 2 experts of two target tasks that were
  fine-tuned from a different base initialisation.
Results are cached per (experiment, pool size, method) in .cache/results/rzoo_<exp>.json, so
an interrupted run resumes; `--fresh` recomputes; `--methods` picks methods by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from benchmarks.common import CACHE
from benchmarks.zoo.merge import CALIB_SAMPLES, Zoo, baseline, baseline_recipe, fw, timed
from benchmarks.zoo.tasks import ADDITIONS, ALL_TASKS, FOREIGN_TASKS, TARGETS

# BENCH_RESULTS: another folder, for a second process running the same experiment in parallel
RESULTS = Path(os.environ.get("BENCH_RESULTS") or CACHE / "results")
SIZES = {"irrelevance": [4, 8, 12, 16], "relevance": [4, 8, 12, 16], "foreign": [4, 6]}
BASELINES = ["linear", "task arithmetic", "TIES", "DARE-TIES"]
# name -> the recipe options under test (everything else is the recipe default). "FW
# defaults" (a recipe naming no constraint) is the row of the package's default constraint:
# the same recipe, so the same merge (zoo/report.py, default_method). The paper's row keeps
# its per-token cross-entropy (reduction: token); "reduction token" is the default recipe
# before reduction: sequence became the default
FW_METHODS: dict[str, dict] = {
    "FW-hull (the paper)": {"constraint": "hull", "init": "base", "reduction": "token"},
    "FW-box, init base": {"constraint": "box", "init": "base"},
    "FW-box, init auto": {"constraint": "box", "init": "auto"},
    "FW-box, init auto, reduction token": {"constraint": "box", "init": "auto",
                                           "reduction": "token"},
}  # fmt: skip
# ablations: irrelevance at 4 and 16 models, relevance at 16, foreign at 6
FW_OPTIONS: dict[str, dict] = {
    "FW-box, init auto, scale 2": {"constraint": "box", "init": "auto", "scale": 2.0},
    "FW-box, init auto, 20 iterations": {"constraint": "box", "init": "auto", "iterations": 20},
    "FW-box, init auto, granularity model": {"constraint": "box", "init": "auto",
                                             "granularity": "model"},
    "FW-box, init auto, pairwise steps": {"constraint": "box", "init": "auto",
                                          "fw_steps": "pairwise"},
    # the default step rule before `step: quadratic` (6ddb0de): FW defaults otherwise
    "FW-box, init auto, step line_search": {"constraint": "box", "init": "auto",
                                            "step": "line_search"},
}  # fmt: skip
# foreign, at 6 models: the screen's counterfactual (foreign: keep = no screen)
FOREIGN_OPTIONS: dict[str, dict] = {
    "FW-hull, foreign: keep": {
        "constraint": "hull",
        "init": "base",
        "reduction": "token",
        "foreign": "keep",
    },
    "FW-box, init auto, foreign: keep": {"constraint": "box", "init": "auto", "foreign": "keep"},
}
# issue 12: FW-box started from each data-free baseline, with the hyper-parameters that
# baseline chose on calibration at that pool size (a mergekit recipe file as `init:`)
FROM_BASELINE = {f"FW-box from {b}": b for b in BASELINES}
FROM_EXPERIMENTS = ("irrelevance", "relevance")


def _file(exp):
    suffix = "" if CALIB_SAMPLES == 100 else f"_calib{CALIB_SAMPLES}"  # ablations: BENCH_CALIB
    return RESULTS / f"rzoo_{exp}{suffix}.json"


def load_results(exps=tuple(SIZES)) -> dict:
    out = {}
    for exp in exps:
        if _file(exp).exists():
            out.update(json.loads(_file(exp).read_text()))
    return out


def _save(results, exp):
    """Merge into the file: rows another process wrote since this one started are kept."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = json.loads(_file(exp).read_text()) if _file(exp).exists() else {}
    rows.update({k: v for k, v in results.items() if v["exp"] == exp})
    _file(exp).write_text(json.dumps(rows, indent=1))


def pools(exp: str, n: int) -> tuple[list[str], list[str]]:
    """(pool, target tasks) of an experiment at pool size n."""
    if exp == "irrelevance":
        return [f"expert_{t}" for t in TARGETS + ADDITIONS[: n - 4]], TARGETS
    if exp == "relevance":
        return [f"expert_{t}" for t in ALL_TASKS[:n]], ALL_TASKS[:n]
    pool = [f"expert_{t}" for t in TARGETS]
    return (pool + [f"foreign_{t}" for t in FOREIGN_TASKS] if n > 4 else pool), TARGETS


def run_one(zoo, results, exp, n, name) -> None:
    key = f"{exp}|{n}|{name}"
    if key in results:
        return
    pool, tasks = pools(exp, n)
    same = f"irrelevance|{n}|{name}"  # the same pool and targets: the same merge
    if exp != "irrelevance" and n == 4 and same in results:
        results[key] = {**results[same], "exp": exp}
        _save(results, exp)
        return
    try:
        if name in BASELINES:
            sel, sd, meta, seconds = timed(baseline, zoo, pool, tasks, name)
        elif name in FROM_BASELINE:
            chosen = results.get(f"{exp}|{n}|{FROM_BASELINE[name]}")
            if chosen is None:
                run_one(zoo, results, exp, n, FROM_BASELINE[name])
                chosen = results[f"{exp}|{n}|{FROM_BASELINE[name]}"]
            options = {"constraint": "box", "reduction": "token",  # as measured for issue 12
                       "init": baseline_recipe(zoo, pool, FROM_BASELINE[name], chosen["meta"])}  # fmt: skip
            sel, sd, meta, seconds = timed(fw, zoo, pool, tasks, options)
            meta["start"] = {"baseline": FROM_BASELINE[name], **chosen["meta"]}
        else:
            options = {**FW_METHODS, **FW_OPTIONS, **FOREIGN_OPTIONS}[name]
            sel, sd, meta, seconds = timed(fw, zoo, pool, tasks, options)
    except Exception as err:  # an option the installed package does not have yet
        print(f"{exp} n={n:2d} {name:28s} skipped: {str(err).splitlines()[0][:120]}")
        return
    raw = zoo.test_scores(sd, tasks)
    norm = zoo.normalised(raw)
    results[key] = {
        "exp": exp, "n": n, "method": name, "pool": pool, "tasks": tasks,
        "calib_exact_match": sel[0], "calib_loss": sel[1], "scores": raw, "normalised": norm,
        "mean_normalised": sum(norm.values()) / len(norm), "seconds": seconds, "meta": meta,
    }  # fmt: skip
    _save(results, exp)
    print(f"{exp} n={n:2d} {name:28s} calib em {sel[0]:.3f} loss {sel[1]:.4f} "
          f"norm {results[key]['mean_normalised']:.3f} ({seconds:.0f}s) {meta}", flush=True)  # fmt: skip


def run(exps=tuple(SIZES), chosen=None, fresh=False, sizes=None, starts=True) -> dict:
    started = time.perf_counter()
    zoo = Zoo()
    results = {} if fresh else load_results(exps)
    if "irrelevance" not in exps:  # the 4-model rows are shared
        results.update(load_results(("irrelevance",)))
    for exp in exps:  # every size with the main methods first, then the ablations
        grid = sizes or SIZES[exp]
        edges = {"irrelevance": [4, 16], "relevance": [16], "foreign": [6]}[exp]
        plan = [(n, name) for n in grid for name in BASELINES + list(FW_METHODS)]
        extra = FOREIGN_OPTIONS if exp == "foreign" else FW_OPTIONS
        plan += [(n, name) for n in grid if n in edges for name in extra]
        if starts and exp in FROM_EXPERIMENTS:  # issue 12: FW from each baseline
            plan += [(n, name) for n in grid for name in FROM_BASELINE]
        if chosen:  # named methods run at every size of the grid
            plan = [(n, name) for n in grid for name in chosen]
        for n, name in plan:
            run_one(zoo, results, exp, n, name)
    print(f"rzoo bench: {time.perf_counter() - started:.0f}s")
    return results
