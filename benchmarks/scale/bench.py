"""The scale tier (`make bench-scale`): memory, reads and time of the pre-pass as depth grows.

Random LLaMA-shaped pools of width 1024 at 8, 16 and 32 layers (benchmarks/scale/build.py;
bf16 on disk, 4 candidates), each measured in fresh processes, side by side in one run:
one bf16 forward + backward of the base (the least a gradient pre-pass holds), stock
mergekit TIES of the pool, and full frank_wolfe merges (pre-pass + mergekit write) in memory
and out of core (2 iterations, init: base, step: quadratic). Bytes per FW iteration are the
difference between pre-pass runs of 2 and 1 iterations, and `init: auto`'s bytes the
difference between auto and base starts (8 layers). Beside each figure: the estimate from
the headers (mergekit/estimate.py). Results go to benchmarks/results/scale.json as they come. `--cold` empties the page cache
before each run (root only), so that `storage_read_bytes` counts what came from disk.

    PYTHONPATH=. python -m benchmarks.scale.bench [--layers 8 32 16] [--only MODE ...] [--smollm2]

`--smollm2` adds the real SmolLM2-135M-Instruct (the real tier's converted base, in bf16,
with 4 noisy copies as candidates): the same memory runs on a pretrained 30-layer model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path("benchmarks/results/scale.json")
FW = ["step=quadratic", "init=base", "iterations=2"]
RUNS = {  # name -> child arguments after LAYERS
    "fwdbwd": ["fwdbwd"],
    "ties": ["ties"],
    "fw_in_memory": ["fw", "prepass=in_memory", *FW],
    "fw_out_of_core": ["fw", "prepass=out_of_core", *FW],
    "prepass_out_of_core": ["fwplan", "prepass=out_of_core", *FW],  # without mergekit's write
    "prepass_in_memory": ["fwplan", "prepass=in_memory", *FW],
    # mergekit's writer holds the output until a shard is full (5 GB by default)
    "fw_out_of_core_shards": ["fw", "prepass=out_of_core", *FW, "out_shard_size=200000000"],
    "ties_shards": ["ties", "out_shard_size=200000000"],
}
BYTES_RUNS = {  # 8 layers only: reads per iteration and of init: auto, pre-pass alone
    "plan_in_memory_1": ["fwplan", "prepass=in_memory", "step=quadratic", "init=base",
                         "iterations=1"],
    "plan_out_of_core_1": ["fwplan", "prepass=out_of_core", "step=quadratic", "init=base",
                           "iterations=1"],
    "plan_in_memory_auto_1": ["fwplan", "prepass=in_memory", "step=quadratic", "init=auto",
                              "iterations=1"],
    "plan_out_of_core_auto_1": ["fwplan", "prepass=out_of_core", "step=quadratic",
                                "init=auto", "iterations=1"],
    "plan_in_memory_auto_noscreen_1": ["fwplan", "prepass=in_memory", "step=quadratic",
                                       "init=auto", "screening=false", "iterations=1"],
    "plan_out_of_core_auto_noscreen_1": ["fwplan", "prepass=out_of_core", "step=quadratic",
                                         "init=auto", "screening=false", "iterations=1"],
    # more iterations: how often the LMO keeps its picks (the fold's prediction)
    "plan_in_memory_4": ["fwplan", "prepass=in_memory", "step=quadratic", "init=base",
                         "iterations=4"],
}  # fmt: skip


def drop_caches() -> bool:
    """Empty the page cache (root only), so that storage reads can be counted."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def child(args: list[str], layers: int | str, cold: bool = False) -> dict:
    mode, rest = args[0], args[1:]
    dropped = drop_caches() if cold else False
    command = [sys.executable, "-m", "benchmarks.scale.child", mode, str(layers), *rest]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."}
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[len("RESULT ") :]), "cold_cache": dropped}
    raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def estimate(layers: int | str) -> dict:
    import torch
    from safetensors import safe_open

    from benchmarks.scale.build import pool_of
    from mergekit_fw.mergekit.estimate import estimate_tensors

    info = pool_of(str(layers))
    with safe_open(f"{info['base']}/model.safetensors", "pt") as handle:
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    pool = sum(
        (Path(p) / "model.safetensors").stat().st_size for p in [info["base"], *info["cands"]]
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(info["base"])
    texts = [json.loads(line)["text"] for line in open(info["calibration"])]
    longest = max(len(tokenizer(t)["input_ids"]) for t in texts)
    return estimate_tensors(shapes, pool, 5, torch.bfloat16, None, len(texts) * longest).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 32, 16])
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--cold", action="store_true", help="empty the page cache before each run")
    parser.add_argument(
        "--smollm2", action="store_true",
        help="also the real SmolLM2-135M pool (needs `make bench-real`'s converted base)",
    )  # fmt: skip
    args = parser.parse_args()
    from benchmarks.scale.build import build, build_smollm2

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("threads", int(os.environ.get("SCALE_THREADS", "1")))
    for layers in args.layers:
        info = build(layers)
        entry = results.setdefault(str(layers), {})
        entry["params"], entry["checkpoint_bytes"] = info["params"], info["checkpoint_bytes"]
        runs = dict(RUNS)
        if layers == 8:
            runs.update(BYTES_RUNS)
        for name, run_args in runs.items():
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            entry[name] = child(run_args, layers, args.cold)
            print(f"L{layers} {name}: {json.dumps(entry[name])} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
            RESULTS.write_text(json.dumps(results, indent=1))
        entry["estimate"] = estimate(layers)
        RESULTS.write_text(json.dumps(results, indent=1))
    if args.smollm2:
        info = build_smollm2()
        if info is None:
            print("SmolLM2: the real tier's base is not built (make bench-real); skipped")
            return
        entry = results.setdefault("smollm2", {})
        entry["params"], entry["checkpoint_bytes"] = info["params"], info["checkpoint_bytes"]
        for name in ("fwdbwd", "ties", "fw_in_memory", "fw_out_of_core"):
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            entry[name] = child(RUNS[name], "smollm2", args.cold)
            print(f"smollm2 {name}: {json.dumps(entry[name])} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
            RESULTS.write_text(json.dumps(results, indent=1))
        entry["estimate"] = estimate("smollm2")
        RESULTS.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
