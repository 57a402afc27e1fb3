"""One measured run in a fresh process: `python -m benchmarks.scale.child MODE LAYERS [K=V..]`.

MODE: fw (a full frank_wolfe merge through mergekit's run_merge: pre-pass and write),
fwplan (the pre-pass alone, as `mergekit-fw plan` runs it),
ties (stock mergekit TIES of the same pool), fwdbwd (the base in bf16 in memory, one
forward + backward on the calibration texts: the least a gradient pre-pass holds).
K=V: recipe parameters of fw (prepass=out_of_core, iterations=2, init=base, ...).
Prints one JSON line: peak RSS (VmHWM), bytes through read syscalls (rchar), of them the
bytes of the pool's reader and of the scratch stores, and seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _io(key: str = "rchar") -> int:
    """rchar: bytes through read syscalls (page cache or disk); read_bytes: from storage."""
    with open("/proc/self/io") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def options(out_shard_size: int | None = None):
    """mergekit's options; SCALE_DEVICE=cuda runs the math (and mergekit's) on the GPU."""
    from mergekit.options import MergeOptions

    extra = {} if out_shard_size is None else {"out_shard_size": out_shard_size}
    if os.environ.get("SCALE_DEVICE") == "cuda":
        return MergeOptions(quiet=True, cuda=True, device="cuda", **extra)
    return MergeOptions(quiet=True, **extra)


def count_reads() -> dict:
    """Bytes the pool's reader (pool/reader.py) and the out-of-core scratch stores
    (fw/offload.py) hand out: rchar split by where the bytes come from."""
    from mergekit_fw.fw.offload import TensorStore
    from mergekit_fw.pool.reader import TensorReader

    counts = {"pool_read_bytes": 0, "scratch_read_bytes": 0}
    read, get = TensorReader.read, TensorStore.get

    def counted_read(self, *args, **kwargs):
        x = read(self, *args, **kwargs)
        counts["pool_read_bytes"] += 0 if x is None else x.numel() * x.element_size()
        return x

    def counted_get(self, name):
        x = get(self, name)
        counts["scratch_read_bytes"] += x.numel() * x.element_size()
        return x

    TensorReader.read, TensorStore.get = counted_read, counted_get
    return counts


def main() -> None:
    mode, layers = sys.argv[1], sys.argv[2]  # a number of layers, or "smollm2"
    params = {k: _value(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
    shard = params.pop("out_shard_size", None)  # mergekit's --out-shard-size
    import torch

    torch.set_num_threads(int(os.environ.get("SCALE_THREADS", "1")))
    from mergekit.config import MergeConfiguration

    import mergekit_fw  # noqa: F401  (the hook: run_merge routes frank_wolfe recipes)
    from benchmarks.scale.build import pool_of

    info = pool_of(layers)
    counts = count_reads()
    out = tempfile.mkdtemp(prefix=f"scale_{mode}_")
    before, stored, started = _io(), _io("read_bytes"), time.perf_counter()
    depth = int(layers) if layers.isdigit() else layers
    result = {"mode": mode, "layers": depth, **params, "out_shard_size": shard}
    if mode == "fwdbwd":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(info["base"])
        model = AutoModelForCausalLM.from_pretrained(info["base"], dtype=torch.bfloat16)
        texts = [json.loads(x)["text"] for x in open(info["calibration"])]
        batch = tok(texts, return_tensors="pt", padding=True)
        if os.environ.get("SCALE_DEVICE") == "cuda":
            model, batch = model.to("cuda"), batch.to("cuda")
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
    else:
        from mergekit.merge import run_merge

        from mergekit_fw.mergekit.runner import plan_only

        if mode == "ties":
            recipe = {
                "merge_method": "ties", "base_model": info["base"], "dtype": "bfloat16",
                "models": [{"model": p, "parameters": {"density": 0.5, "weight": 1.0}}
                           for p in info["cands"]],
            }  # fmt: skip
        else:
            recipe = {
                "merge_method": "frank_wolfe", "base_model": info["base"], "dtype": "bfloat16",
                "models": [{"model": p} for p in info["cands"]],
                "parameters": {"calibration": info["calibration"], "iterations": 2,
                               "max_distance": 1.0, **params},
            }  # fmt: skip
            os.environ["MERGEKIT_FW_NO_RESUME"] = "1"
        config = MergeConfiguration.model_validate(recipe)
        if mode == "fwplan":
            plan_only(config, os.path.join(out, "fw_plan.json"), options(shard))
        else:
            run_merge(config, out, options(shard))
        if mode.startswith("fw"):
            plan = json.loads(open(os.path.join(out, "fw_plan.json")).read())
            result["final_loss"] = plan["final_loss"]
            result["gammas"] = [r["gamma"] for r in plan["iterations"]]
    if torch.cuda.is_available():
        result["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated()
    result.update(
        seconds=time.perf_counter() - started,
        peak_rss=_status("VmHWM"),
        read_bytes=_io() - before,
        storage_read_bytes=_io("read_bytes") - stored,
        **counts,
    )
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out + ".fw-state", ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
