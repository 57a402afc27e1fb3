"""One memory measurement in a fresh process: `python -m benchmarks.systems.memchild MODE N OUT`.

MODE: fw (mergekit-fw pre-pass + mergekit write), fw_soft (the same with variant: soft,
topk: 2, 3 fit steps, one iteration), ties (stock mergekit TIES),
allmem (every candidate loaded as fp32 in memory, as the authors' code does).
Prints one JSON line: peak RSS (VmHWM) and the peaks of its anonymous and file-backed parts,
sampled every 10 ms; for fw also the sampled peak (anon + file) of the pre-pass and of
mergekit's write phase separately.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from benchmarks.systems.rss import PeakSampler, status


def _merge(mode: str, info: dict, cands: list[str], out: str, sampler: PeakSampler) -> None:
    """The measured work of one MODE; sets `sampler.phase` around the FW pre-pass."""
    import torch

    if mode == "allmem":
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(info["base"], dtype=torch.float32)
        held = [
            {k: v.float() for k, v in load_file(f"{p}/model.safetensors").items()}
            for p in [info["base"], *cands]
        ]
        assert len(held) == len(cands) + 1 and model is not None
        return
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    if mode == "ties":
        models = [{"model": p, "parameters": {"density": 0.5, "weight": 1.0}} for p in cands]
        config = MergeConfiguration.model_validate({
            "merge_method": "ties", "base_model": info["base"], "dtype": "float32",
            "models": models, "parameters": {},
        })  # fmt: skip
        run_merge(config, out, MergeOptions(quiet=True))
        return
    import mergekit_fw  # noqa: F401  (registers the method and the run_merge hook)
    from mergekit_fw.mergekit import runner

    compute_plan = runner.compute_plan

    def timed_plan(*args, **kwargs):
        sampler.phase = "prepass"
        try:
            return compute_plan(*args, **kwargs)
        finally:
            time.sleep(0.03)  # let the sampler see the end of the pre-pass
            sampler.phase = "write"

    runner.compute_plan = timed_plan
    params = {
        "calibration": info["calibration"], "iterations": 2, "step": "constant",
        "step_size": 0.5, "batch_size": 4, "max_length": 64,
        "init": "base",  # as docs/benchmarks.md's figures were measured (before init: auto)
    }  # fmt: skip
    if mode == "fw_soft":
        params.update(variant="soft", topk=2, inner_steps=3, iterations=1)
        del params["step"], params["step_size"]
    config = MergeConfiguration.model_validate({
        "merge_method": "frank_wolfe", "base_model": info["base"], "dtype": "float32",
        "models": [{"model": p} for p in cands], "parameters": params,
    })  # fmt: skip
    runner.run_fw_merge(config, out, MergeOptions(quiet=True))


def main(mode: str, n: int, out: str) -> None:
    import torch

    torch.set_num_threads(2)
    from benchmarks.systems.bigmodel import build

    info = build()
    before = status()
    t0 = time.perf_counter()
    with PeakSampler() as sampler:
        _merge(mode, info, info["cands"][:n], out, sampler)
    seconds = time.perf_counter() - t0
    after = status()
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({
        "mode": mode, "n": n, "peak_rss": after["VmHWM"], "peak_anon": sampler.peaks["RssAnon"],
        "peak_file": sampler.peaks["RssFile"], "start_rss": before["VmRSS"], "seconds": seconds,
        "phase_peaks": sampler.phase_peaks,
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
