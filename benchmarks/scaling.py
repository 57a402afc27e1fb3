"""Experiments 1-3 (paper Table 3): irrelevant additions, relevant additions, noisy models.

`python -m benchmarks.run --only scaling` (or irrelevance / relevance / noisy). Results are
cached per (experiment, pool size, method) in .cache/results/scaling.json, so an
interrupted run resumes; `--fresh` recomputes.
"""

from __future__ import annotations

import json
import os
import time

from benchmarks.common import CACHE, normalised
from benchmarks.merging import (
    FW_AUTHORS,
    FW_PACKAGE,
    Zoo,
    fw_package,
    fw_proto,
    linear,
    task_arithmetic,
    ties,
    timed,
)  # fmt: skip
from benchmarks.tasks import ADDITIONS, ALL_TASKS, NOISY_TASKS, TARGETS

RESULTS_DIR = CACHE / "results"  # one file per experiment: parts can run in parallel
# of the 100 calibration samples per task, to keep FW runs short on 2 cores; `--calib N`
# (BENCH_CALIB) runs an ablation whose results go to scaling_<part>_calib<N>.json
CALIB_SAMPLES = int(os.environ.get("BENCH_CALIB") or 16)
ITERATIONS = 4
LINE_EVALS = 8
SIZES = {"irrelevance": [4, 10, 16], "relevance": [4, 16]}
CORE = [
    "task arithmetic",
    "TIES",
    "linear",
    "FW-hard (package default)",
    "FW-hard (authors' settings)",
    "FW rows, box",
    "FW rows, box, TA start",
    "FW tensor, hull, log-step",
    "FW rows, box, log-step",
]
# ablations, run at the smallest and largest pool only
EXTRA = ["FW rows, hull", "FW tensor, box"]  # "FW rows, simplex x2" with --methods


def methods(full: bool) -> dict:
    """name -> callable(zoo, pool, tasks, ctx); ctx carries the tuned TA lambda."""
    m = {
        "task arithmetic": lambda z, p, t, c: task_arithmetic(z, p, t),
        "TIES": lambda z, p, t, c: ties(z, p, t),
        "linear": lambda z, p, t, c: linear(z, p, t),
        "FW-hard (package default)": lambda z, p, t, c: fw_package(
            z, p, t, FW_PACKAGE, ITERATIONS, LINE_EVALS),
        "FW-hard (authors' settings)": lambda z, p, t, c: fw_package(
            z, p, t, FW_AUTHORS, 10),
        "FW rows, hull": lambda z, p, t, c: fw_proto(
            z, p, t, blocks="rows", iterations=ITERATIONS, line_evals=LINE_EVALS),
        "FW rows, box": lambda z, p, t, c: fw_proto(
            z, p, t, blocks="rows", constraint="box", iterations=ITERATIONS,
            line_evals=LINE_EVALS),
        "FW rows, box, TA start": lambda z, p, t, c: fw_proto(
            z, p, t, blocks="rows", constraint="box", init_lambda=c["ta_lambda"],
            iterations=ITERATIONS, line_evals=LINE_EVALS),
        "FW tensor, hull, log-step": lambda z, p, t, c: fw_proto(
            z, p, t, iterations=ITERATIONS, line_evals=LINE_EVALS, line="log"),
        "FW rows, box, log-step": lambda z, p, t, c: fw_proto(
            z, p, t, blocks="rows", constraint="box", iterations=ITERATIONS,
            line_evals=LINE_EVALS, line="log"),
        # ablations (EXTRA), run at the edge pool sizes (all sizes with --full)
        "FW tensor, box": lambda z, p, t, c: fw_proto(
            z, p, t, blocks="tensor", constraint="box", iterations=ITERATIONS,
            line_evals=LINE_EVALS),
        "FW rows, simplex x2": lambda z, p, t, c: fw_proto(
            z, p, t, blocks="rows", beta=2.0, iterations=ITERATIONS, line_evals=LINE_EVALS),
    }  # fmt: skip
    return m


def _file(part):
    suffix = "" if CALIB_SAMPLES == 16 else f"_calib{CALIB_SAMPLES}"
    return RESULTS_DIR / f"scaling_{part}{suffix}.json"


def load_results(parts=("irrelevance", "relevance", "noisy")) -> dict:
    out = {}
    for part in parts:
        if _file(part).exists():
            out.update({k: v for k, v in json.loads(_file(part).read_text()).items()
                        if not k.startswith("_")})  # fmt: skip
    return out


def _save(results, part):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    rows = {k: v for k, v in results.items() if not k.startswith("_") and v["exp"] == part}
    _file(part).write_text(json.dumps(rows, indent=1))


def run_pool(zoo, results, exp, n, pool, tasks, chosen, full, edge=True):
    ctx = {}
    if not chosen:
        chosen = CORE + (EXTRA if (edge or full) and exp != "relevance" else [])
    for name, fn in methods(full).items():
        if name not in chosen:
            continue
        key = f"{exp}|{n}|{name}"
        if key in results:
            if name == "task arithmetic":
                ctx["ta_lambda"] = results[key]["params"]["lambda"]
            continue
        if name == "FW rows, box, TA start" and "ta_lambda" not in ctx:
            ctx["ta_lambda"] = task_arithmetic(zoo, pool, tasks)[2]["lambda"]
        loss, sd, meta, seconds = timed(fn, zoo, pool, tasks, ctx)
        if name == "task arithmetic":
            ctx["ta_lambda"] = meta["lambda"]
        raw = zoo.scores(sd, tasks)
        experts = zoo.info["scores"]  # empty while the zoo is building: report.py recomputes
        norm = {t: normalised(t, raw[t], experts[f"expert_{t}"][t]) for t in tasks} if experts \
            else {t: float("nan") for t in tasks}  # fmt: skip
        results[key] = {
            "exp": exp, "n": n, "method": name, "pool": pool, "tasks": tasks,
            "calib_loss": loss, "scores": raw, "normalised": norm,
            "mean_normalised": sum(norm.values()) / len(norm), "seconds": seconds,
            "params": meta if name in ("task arithmetic", "TIES") else {},
            "meta": meta if name not in ("task arithmetic", "TIES") else {},
        }  # fmt: skip
        _save(results, exp)
        print(f"{exp} n={n:2d} {name:30s} calib {loss:.4f} norm "
              f"{results[key]['mean_normalised']:.3f} ({seconds:.0f}s)", flush=True)  # fmt: skip


def run(parts=("irrelevance", "relevance", "noisy"), chosen=None, fresh=False, full=False,
        sizes=None) -> dict:  # fmt: skip
    started = time.perf_counter()
    zoo = Zoo(CALIB_SAMPLES)
    results = {} if fresh else load_results(parts)
    for part in parts:
        t0 = time.perf_counter()
        grid = sizes or SIZES.get(part, [])
        if part == "irrelevance":
            for n in grid:
                pool = [f"expert_{t}" for t in TARGETS + ADDITIONS[: n - 4]]
                run_pool(zoo, results, part, n, pool, TARGETS, chosen, full,
                         edge=n in (min(grid), max(grid)))  # fmt: skip
        elif part == "relevance":
            for n in grid:
                tasks = ALL_TASKS[:n]
                run_pool(zoo, results, part, n, [f"expert_{t}" for t in tasks], tasks,
                         chosen, full)  # fmt: skip
        elif part == "noisy":
            base_pool = [f"expert_{t}" for t in TARGETS]
            run_pool(zoo, results, part, 4, base_pool, TARGETS, chosen, full, edge=False)
            run_pool(zoo, results, part, 6, base_pool + [f"noisy_{t}" for t in NOISY_TASKS],
                     TARGETS, chosen, full, edge=False)  # fmt: skip
        _save(results, part)
        print(f"scaling {part}: {time.perf_counter() - t0:.0f}s")
    print(f"scaling: {time.perf_counter() - started:.0f}s")
    return results
