"""Wall time of a full FW merge (pre-pass + mergekit write) against a stock task-arithmetic
merge of the same pool, side by side in one process: the 66M random model of bigmodel.py with
16 candidates (`python -m benchmarks.run --only walltime`, results/walltime.json).

Its second case, the retired version-5 zoo, is gone with that zoo; its figure is in
docs/benchmarks_history.md."""

from __future__ import annotations

import json
import shutil
import time

import torch

from benchmarks.common import CACHE, RESULTS_DIR

RESULTS = RESULTS_DIR / "walltime.json"


def _config(method, base, cands, params):
    from mergekit.config import MergeConfiguration

    models = [{"model": p} for p in cands]
    if method == "task_arithmetic":
        models = [{"model": p, "parameters": {"weight": 1.0}} for p in cands]
    return MergeConfiguration.model_validate({
        "merge_method": method, "base_model": base, "dtype": "float32", "models": models,
        "parameters": params,
    })  # fmt: skip


def _time(method, config) -> float:
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.runner import run_fw_merge

    out = str(CACHE / "tmp_out" / "walltime")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if method == "frank_wolfe":
        run_fw_merge(config, out, MergeOptions(quiet=True))
    else:
        run_merge(config, out, MergeOptions(quiet=True))
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def run() -> dict:
    torch.set_num_threads(2)
    from benchmarks.systems.bigmodel import build as build_big

    started = time.perf_counter()
    big = build_big(16)
    big_params = {"calibration": big["calibration"], "iterations": 2, "step": "constant",
                  "step_size": 0.5, "batch_size": 4, "max_length": 64, "init": "base"}  # fmt: skip
    cases = [
        ("66M random model, 16 candidates, 2 FW iterations, 4 samples", big["base"],
         big["cands"], big_params),
    ]  # fmt: skip
    rows = []
    for label, base, cands, params in cases:
        ta = _config("task_arithmetic", base, cands, {"lambda": 0.3})
        fw = _config("frank_wolfe", base, cands, params)
        ta_times = [_time("task_arithmetic", ta)]
        fw_time = _time("frank_wolfe", fw)
        ta_times.append(_time("task_arithmetic", ta))
        row = {"case": label, "fw": fw_time, "task_arithmetic": min(ta_times),
               "ratio": fw_time / min(ta_times)}  # fmt: skip
        rows.append(row)
        print(f"walltime {label}: FW {fw_time:.1f}s, TA {min(ta_times):.1f}s, "
              f"ratio {row['ratio']:.1f}", flush=True)  # fmt: skip
    result = {"rows": rows, "seconds": time.perf_counter() - started}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    return result
