"""One memory measurement in a fresh process: `python -m benchmarks.memchild MODE N OUT`.

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
import threading
import time


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def main(mode: str, n: int, out: str) -> None:
    import torch

    torch.set_num_threads(2)
    from benchmarks.bigmodel import build

    info = build()
    cands = info["cands"][:n]
    peaks = {"RssAnon": 0, "RssFile": 0}
    phase = ["setup"]
    phase_peaks: dict[str, int] = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            s = _status()
            for k in peaks:
                peaks[k] = max(peaks[k], s[k])
            total = s["RssAnon"] + s["RssFile"]
            phase_peaks[phase[0]] = max(phase_peaks.get(phase[0], 0), total)
            time.sleep(0.01)

    before = _status()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    if mode == "allmem":
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(info["base"], dtype=torch.float32)
        held = [
            {k: v.float() for k, v in load_file(f"{p}/model.safetensors").items()}
            for p in [info["base"], *cands]
        ]
        assert len(held) == n + 1 and model is not None
    else:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        if mode in ("fw", "fw_soft"):
            import mergekit_fw  # noqa: F401  (registers the method and the run_merge hook)
            from mergekit_fw import runner

            compute_plan = runner.compute_plan

            def timed_plan(*args, **kwargs):
                phase[0] = "prepass"
                try:
                    return compute_plan(*args, **kwargs)
                finally:
                    time.sleep(0.03)  # let the sampler see the end of the pre-pass
                    phase[0] = "write"

            runner.compute_plan = timed_plan

            params = {
                "calibration": info["calibration"], "iterations": 2, "step": "constant",
                "step_size": 0.5, "batch_size": 4, "max_length": 64,
            }  # fmt: skip
            if mode == "fw_soft":
                params.update(variant="soft", topk=2, inner_steps=3, iterations=1)
                del params["step"], params["step_size"]
            method = "frank_wolfe"
            models = [{"model": p} for p in cands]
        else:
            params = {"density": 0.5, "weight": 1.0}
            method = "ties"
            models = [{"model": p, "parameters": {"density": 0.5, "weight": 1.0}} for p in cands]
            params = {}
        config = MergeConfiguration.model_validate({
            "merge_method": method, "base_model": info["base"], "dtype": "float32",
            "models": models, "parameters": params,
        })  # fmt: skip
        if mode in ("fw", "fw_soft"):
            from mergekit_fw.runner import run_fw_merge

            run_fw_merge(config, out, MergeOptions(quiet=True))
        else:
            run_merge(config, out, MergeOptions(quiet=True))
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = _status()
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({
        "mode": mode, "n": n, "peak_rss": after["VmHWM"], "peak_anon": peaks["RssAnon"],
        "peak_file": peaks["RssFile"], "start_rss": before["VmRSS"], "seconds": seconds,
        "phase_peaks": phase_peaks,
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
