"""One LMO pass of the package (FrankWolfe.score_pass) over n candidates,
against a plain read of the same safetensors bytes, warm page cache, in the same process.
(`python -m benchmarks.run --only lmo`)"""

from __future__ import annotations

import json
import os
import time

import torch

from benchmarks.common import RESULTS_DIR
from benchmarks.systems.bigmodel import build

RESULTS = RESULTS_DIR / "lmo.json"
SIZES = [4, 16]
REPEATS = 3


def raw_read(files: list[str]) -> float:
    """Read every byte of every file into one reused buffer (no parsing, no conversion)."""
    size = max(os.path.getsize(f) for f in files)
    buffer = bytearray(size)
    view = memoryview(buffer)
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as handle:
            while handle.readinto(view) > 0:
                pass
    return time.perf_counter() - t0


def safetensors_load(files: list[str]) -> float:
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    for f in files:
        sd = load_file(f)
        del sd
    return time.perf_counter() - t0


def fw_runner(info: dict, n: int):
    """The package's FrankWolfe object, built exactly as runner.compute_plan builds it."""
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM

    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.fw.loop import FrankWolfe, build_slots
    from mergekit_fw.mergekit.checks import check_recipe
    from mergekit_fw.pool.vertices import VertexPool

    config = MergeConfiguration.model_validate({
        "merge_method": "frank_wolfe", "base_model": info["base"], "dtype": "float32",
        "models": [{"model": p} for p in info["cands"][:n]],
        "parameters": {"calibration": info["calibration"], "iterations": 1,
                       "batch_size": 4, "max_length": 64, "init": "base"},
    })  # fmt: skip
    options = MergeOptions(quiet=True)
    recipe = check_recipe(config)
    LoaderCache().setup(options)
    pool = VertexPool([recipe.base, *recipe.candidates], torch.device("cpu"), torch.float32)
    model = AutoModelForCausalLM.from_pretrained(info["base"], dtype=torch.float32)
    slots = build_slots(model, set(pool.tensor_names(0)))
    batches = make_batches(recipe.calibration, 4, 0, torch.device("cpu"))
    runner = FrankWolfe(
        model,
        slots,
        pool,
        recipe.objective,
        batches,
        [t.name for t in recipe.calibration.tasks],
        recipe.settings,
        quiet=True,
    )
    for slot in slots:
        slot.param.requires_grad_(True)
    runner.loss(grad=True, desc="gradient")
    files = [os.path.join(p, "model.safetensors") for p in [info["base"], *info["cands"][:n]]]
    return runner, files


def breakdown(runner) -> dict:
    """Where an LMO pass goes (best of 2): the same blocked preads alone (no conversion, no
    dot), and the whole-tensor path it replaced (read a tensor, bf16 -> fp32, one dot)."""
    from mergekit_fw.pool import vertices

    pool = runner.pool
    best = None
    for _ in range(2):
        t0 = time.perf_counter()
        for slot in runner.slots:
            entries = [r.entry(slot.name) for r in pool.readers]
            size = min(vertices.BLOCK, entries[0].numel)
            buffers = {e.dtype: torch.empty(size, dtype=e.dtype) for e in entries}
            for start in range(0, entries[0].numel, size):
                stop = min(start + size, entries[0].numel)
                for reader, entry in zip(pool.readers, entries):
                    reader.read(slot.name, start, stop, out=buffers[entry.dtype])
        t1 = time.perf_counter()
        for slot in runner.slots:
            g = slot.param.grad.reshape(-1)
            for k in range(len(pool)):
                torch.dot(g, pool.tensor(k, slot.name).reshape(-1))
        t2 = time.perf_counter()
        if best is None or t1 - t0 < best["blocked_reads"]:
            best = {"blocked_reads": t1 - t0, "whole_tensor_path": t2 - t1}
    return best


def run(sizes=SIZES) -> dict:
    torch.set_num_threads(2)
    started = time.perf_counter()
    info = build(max(sizes))
    rows = []
    for n in sizes:
        runner, files = fw_runner(info, n)
        raw_read(files)  # warm the page cache
        first = time.perf_counter()
        runner.score_pass()  # first pass also computes the vertex norms (cached afterwards)
        first = time.perf_counter() - first
        reads, loads, passes = [], [], []
        for _ in range(REPEATS):  # interleaved, so load from other users hits both alike
            reads.append(raw_read(files))
            t0 = time.perf_counter()
            runner.score_pass()
            passes.append(time.perf_counter() - t0)
            loads.append(safetensors_load(files))
        row = {
            "n": n, "bytes": sum(os.path.getsize(f) for f in files), "raw_read": min(reads),
            "safetensors_load": min(loads), "lmo_first": first, "lmo": min(passes),
            "ratio": min(passes) / min(reads), "ratio_first": first / min(reads),
            "ratio_vs_load": min(passes) / min(loads),
        }  # fmt: skip
        if n == min(sizes):
            parts = breakdown(runner)
            row.update({f"breakdown_{k}": v / min(reads) for k, v in parts.items()})
        rows.append(row)
        print(f"lmo n={n:2d}: pass {row['lmo']:.2f}s (first {first:.2f}s), raw read "
              f"{row['raw_read']:.2f}s, load_file {row['safetensors_load']:.2f}s, ratio "
              f"{row['ratio']:.2f}", flush=True)  # fmt: skip
        del runner
    result = {"params": info["params"], "rows": rows, "seconds": time.perf_counter() - started}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    return result
