"""Build the real tier: the base model, 8 task splits, one LoRA per task, expert x task matrix.

    nice -n 10 python -m benchmarks.real.build [--steps 30] [--batch 8] [--lr 2e-3] [--tasks all]

REAL_MODEL picks the model (benchmarks/real/lm.py: smollm2, the default, or gemma3).
Everything is cached under $BENCH_CACHE/<model's folder> (default benchmarks/.cache/real): the
dequantised base, the task files, the adapters; a rerun only does what is missing. Writes
experts.json into the model's results folder: per model (base, lora_<task>) greedy exact match
on the 100 test inputs of every task, each adapter's training record, the time of every stage.
`--tasks targets` trains the 4 target tasks' adapters only and scores on them only (no noise
adapter): the Table 3 analogue's `targets4` pool at a fraction of the build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.real import lm, tasks  # noqa: E402


def write_data(root: Path) -> dict:
    """One jsonl per task and split: chat `messages` records (the calibration format of FW)."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in tasks.TASKS:
        for split, pairs in tasks.splits(name).items():
            path = root / f"{name}_{split}.jsonl"
            path.write_text(
                "".join(json.dumps({"messages": tasks.messages(p, a)}) + "\n" for p, a in pairs)
            )
            sizes[f"{name}_{split}"] = len(pairs)
    return sizes


def adapter_dir(task: str) -> Path:
    return lm.CACHE / "adapters" / task


def evaluate(model, tok, names, split: str = "test") -> dict:
    return {t: lm.exact_match(model, tok, tasks.splits(t)[split]) for t in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--tasks", choices=["all", "targets"], default="all")
    parser.add_argument("--out", type=Path, default=lm.RESULTS / "experts.json")
    args = parser.parse_args()
    names = tasks.TASKS if args.tasks == "all" else tasks.TARGETS
    adapters = [*names, tasks.NOISE] if args.tasks == "all" else list(names)
    lm.threads()
    started = time.perf_counter()
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    hyper = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "rank": 8, "alpha": 16,
             "targets": lm.LORA_TARGETS, "seed": 0}  # fmt: skip
    same = old.get("training") == hyper
    result = {
        "command": "python -m benchmarks.real.build " + " ".join(sys.argv[1:]),
        "model": f"{lm.MODEL.title}, dequantised from the GGUF {lm.MODEL.gguf} ({lm.MODEL.install})",
        "training": hyper, "stages": dict(old.get("stages", {})) if same else {},
        "adapters": dict(old.get("adapters", {})) if same else {},
        "matrix": dict(old.get("matrix", {})) if same else {},
        "tasks": list(names), "targets": list(tasks.TARGETS),
        "splits": {"train": tasks.N_TRAIN, "calib": tasks.N_CALIB, "test": tasks.N_TEST},
        "threads": lm.thread_count(),
    }  # fmt: skip

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    t0 = time.perf_counter()
    info = lm.convert(lm.base_dir())
    worked = not info["cached"]
    if not info["cached"]:
        result["stages"]["convert_s"] = time.perf_counter() - t0
        result["params"] = info["params"]
    else:
        result["params"] = old.get("params")
    print(f"base: {lm.base_dir()} ({'cached' if info['cached'] else 'converted'})", flush=True)
    result["data"] = write_data(lm.CACHE / "data")

    for name in adapters:
        out = adapter_dir(name)
        if (out / "adapter_model.safetensors").exists() and name in result["adapters"]:
            continue
        worked = True
        pairs = tasks.noise_train() if name == tasks.NOISE else tasks.splits(name)["train"]
        rec = lm.train_lora(lm.base_dir(), pairs, out, args.steps, args.batch, args.lr, seed=0)
        result["adapters"][name] = rec
        result["stages"]["train_s"] = sum(r["seconds"] for r in result["adapters"].values())
        print(f"trained lora_{name}: {rec['seconds']:.0f} s, loss {rec['first_loss']:.3f} -> "
              f"{rec['last_losses'][-1]:.4f}", flush=True)  # fmt: skip
        save()

    tok = lm.load_tokenizer(lm.base_dir())
    for model_name in ["base", *(f"lora_{t}" for t in adapters)]:
        if model_name in result["matrix"]:
            continue
        worked = True
        t1 = time.perf_counter()
        adapter = None if model_name == "base" else adapter_dir(model_name[5:])
        model = lm.load_model(lm.base_dir(), adapter)
        result["matrix"][model_name] = evaluate(model, tok, names)
        result["stages"][f"eval_{model_name}_s"] = time.perf_counter() - t1
        row = " ".join(f"{t}={r['em']:.2f}" for t, r in result["matrix"][model_name].items())
        print(f"{model_name}: {row} ({time.perf_counter() - t1:.0f} s)", flush=True)
        save()
    result["stages"]["eval_s"] = sum(
        v for k, v in result["stages"].items() if k.startswith("eval_") and k != "eval_s"
    )
    result["build_s"] = sum(
        result["stages"].get(k, 0.0) for k in ("convert_s", "train_s", "eval_s")
    )
    if worked:  # a run that found everything cached keeps the last real build's wall time
        result["this_run_s"] = time.perf_counter() - started
    elif "this_run_s" in old:
        result["this_run_s"], result["command"] = old["this_run_s"], old["command"]
    save()
    print(f"build: {result['build_s']:.0f} s of stages ({time.perf_counter() - started:.0f} s now)")


if __name__ == "__main__":
    main()
