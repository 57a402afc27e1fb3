"""LoRA adapters as FW vertices against mergekit's densified `base+adapter` pool (issue 4).

    python -m benchmarks.lora.bench [--adapters 16] [--hidden 512] [--layers 14] [--root DIR]

Builds a random LLaMA base of at least 50M parameters and N random PEFT LoRA adapters
(rank 8-16, q_proj and v_proj), then runs, each in a fresh subprocess:

- `run factors|dense`: one full frank_wolfe merge through run_fw_merge (1 iteration,
  4 calibration samples, constant step): the adapters as vertices (`parameters.adapters`),
  or the same adapters as `base+adapter` candidates densified by mergekit into
  `--lora-merge-cache`. Peak RSS (VmHWM; sampled RssAnon/RssFile peaks), bytes written
  (output folder + merge cache, and the process's /proc/self/io wchar), wall time.
- `lmo factors|dense`: two LMO score passes (FrankWolfe.score_pass) on one fixed random
  gradient: the first also computes the vertex norms, the second only the inner products.

Prints the measurements and their ratios (dense / factors) as one JSON document, also
written to ROOT/lora_bench.json. The dense LMO reads the merge cache the dense run has just
written, so both LMO passes read from a warm page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.systems.rss import PeakSampler, status

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
DEFAULT_ROOT = HERE / ".cache" / "lora_bench"
TARGETS = ("q_proj", "v_proj")


# -- fixtures -------------------------------------------------------------------------------
def build(root: Path, n: int, hidden: int, layers: int, vocab: int) -> dict:
    """Random base (saved with the toy tokenizer) and n random PEFT LoRA adapters."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from mergekit_fw.cli import toy

    torch.set_num_threads(1)
    base = root / "base"
    info_file = root / "info.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        if (info["n"], info["hidden"], info["layers"], info["vocab"]) == (n, hidden, layers, vocab):
            return info
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
        max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    toy.save(model, toy.build_tokenizer(), base)
    shapes = {n_: tuple(p.shape) for n_, p in model.named_parameters()}
    del model
    adapters = []
    gen = torch.Generator().manual_seed(1)
    for i in range(n):
        rank = 8 + (i * 5) % 9  # 8..16
        folder = root / f"lora_{i:02d}"
        LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS), lora_dropout=0.0,
            use_rslora=i % 4 == 3, task_type="CAUSAL_LM", base_model_name_or_path=str(base),
        ).save_pretrained(str(folder))  # fmt: skip
        tensors = {}
        for layer in range(layers):
            for target in TARGETS:
                module = f"model.layers.{layer}.self_attn.{target}"
                out_f, in_f = shapes[f"{module}.weight"]
                prefix = f"base_model.model.{module}"
                tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * 0.02
                tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 0.02
        save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
        adapters.append(str(folder))
    (root / "adapters.yaml").write_text(
        "adapters:\n" + "".join(f"  - path: {Path(a).name}\n" for a in adapters)
    )
    toy.write_jsonl(
        root / "calib.jsonl",
        [r for t in ("reverse", "add") for r in toy.task_records(t, 2, seed=9)],
    )
    info = {
        "n": n, "hidden": hidden, "layers": layers, "vocab": vocab, "params": params,
        "base": str(base), "adapters": adapters, "manifest": str(root / "adapters.yaml"),
        "calibration": str(root / "calib.jsonl"),
        "ranks": [8 + (i * 5) % 9 for i in range(n)],
    }  # fmt: skip
    info_file.write_text(json.dumps(info, indent=1))
    return info


def recipe(info: dict, mode: str) -> dict:
    parameters = {
        "calibration": info["calibration"], "iterations": 1, "step": "constant",
        "step_size": 0.5, "batch_size": 4, "max_length": 32,
    }  # fmt: skip
    if mode == "factors":
        models = [{"model": info["base"]}]
        parameters["adapters"] = info["manifest"]
    else:
        models = [{"model": f"{info['base']}+{a}"} for a in info["adapters"]]
    return {
        "merge_method": "frank_wolfe", "base_model": info["base"], "models": models,
        "dtype": "float32", "parameters": parameters,
    }  # fmt: skip


# -- measurements (children) ----------------------------------------------------------------
def _wchar() -> int:
    try:
        with open("/proc/self/io") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("wchar"))
    except (OSError, StopIteration):
        return -1


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child_run(root: Path, mode: str) -> dict:
    """One full merge; peak memory and bytes written."""
    import shutil

    import torch

    torch.set_num_threads(1)
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    import mergekit_fw  # noqa: F401
    from mergekit_fw.mergekit.runner import run_fw_merge

    info = json.loads((root / "info.json").read_text())
    out, cache = root / f"out_{mode}", root / "merge_cache"
    shutil.rmtree(out, ignore_errors=True)
    if mode == "dense":
        shutil.rmtree(cache, ignore_errors=True)
    wchar0 = _wchar()
    started = time.perf_counter()
    with PeakSampler() as sampler:
        config = MergeConfiguration.model_validate(recipe(info, mode))
        options = MergeOptions(quiet=True, lora_merge_cache=str(cache) if mode == "dense" else None)
        plan = run_fw_merge(config, str(out), options)
    seconds = time.perf_counter() - started
    return {
        "mode": mode, "seconds": seconds, "peak_rss": status()["VmHWM"],
        "peak_anon": sampler.peaks["RssAnon"], "peak_file": sampler.peaks["RssFile"],
        "written_output": _du(out), "written_cache": _du(cache) if mode == "dense" else 0,
        "wchar": _wchar() - wchar0, "final_loss": plan.final_loss,
        "picks": plan.iterations[0].picks,
    }  # fmt: skip


def child_lmo(root: Path, mode: str) -> dict:
    """Two score passes on one fixed random gradient (first with norms)."""
    import torch

    torch.set_num_threads(1)
    from mergekit.common import ModelReference
    from mergekit.io.tasks import LoaderCache
    from mergekit.options import MergeOptions

    from mergekit_fw.fw.loop import FrankWolfe, Slot
    from mergekit_fw.pool.lora_files import read_adapter
    from mergekit_fw.pool.vertices import VertexPool
    from mergekit_fw.settings import FWSettings

    info = json.loads((root / "info.json").read_text())
    LoaderCache().setup(MergeOptions(lora_merge_cache=str(root / "merge_cache")))
    base = ModelReference.parse(info["base"])
    cpu = torch.device("cpu")
    if mode == "factors":
        adapters = [read_adapter(a) for a in info["adapters"]]
        pool = VertexPool([base], cpu, torch.float32, adapters=adapters)
    else:
        refs = [ModelReference.parse(f"{info['base']}+{a}") for a in info["adapters"]]
        pool = VertexPool([base, *refs], cpu, torch.float32)
    slots = []
    for i, name in enumerate(sorted(pool.tensor_names(0))):
        param = torch.nn.Parameter(pool.tensor(0, name))
        gen = torch.Generator().manual_seed(i)
        param.grad = torch.randn(param.shape, generator=gen)
        slots.append(Slot(name, param))
    settings = FWSettings(calibration="-", iterations=1, lmo="cosine", constraint="hull")
    loop = FrankWolfe(None, slots, pool, None, [], [], settings, quiet=True)
    times, tables = [], []
    for _ in range(2):
        started = time.perf_counter()
        tables.append(loop.score_pass())
        times.append(time.perf_counter() - started)
    from mergekit_fw.fw.oracles import cosine_scores, tensor_oracle

    picks = tensor_oracle(cosine_scores(tables[-1]), False)
    return {
        "mode": mode, "first_pass_s": times[0], "dots_pass_s": times[1], "picks": picks,
        "dots": tables[-1].dots.tolist(), "norms": tables[-1].norms.tolist(),
    }  # fmt: skip


# -- driver -----------------------------------------------------------------------------------
def spawn(kind: str, mode: str, root: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.lora.bench", "--child", kind, mode, "--root", str(root)],
        cwd=str(HERE.parent), capture_output=True, text=True, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} {mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, mode = args.child
        result = (child_run if kind == "run" else child_lmo)(args.root, mode)
        print(json.dumps(result))
        return
    started = time.perf_counter()
    info = build(args.root, args.adapters, args.hidden, args.layers, args.vocab)
    print(f"base {info['params'] / 1e6:.1f}M parameters, {info['n']} adapters, ranks "
          f"{min(info['ranks'])}-{max(info['ranks'])}", flush=True)  # fmt: skip
    runs = {mode: spawn("run", mode, args.root) for mode in ("factors", "dense")}
    lmos = {mode: spawn("lmo", mode, args.root) for mode in ("factors", "dense")}
    from safetensors.torch import load_file

    a = load_file(str(args.root / "out_factors" / "model.safetensors"))
    b = load_file(str(args.root / "out_dense" / "model.safetensors"))
    max_diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    f, d = runs["factors"], runs["dense"]
    written_f = f["written_output"] + f["written_cache"]
    written_d = d["written_output"] + d["written_cache"]
    rel = 0.0  # max |factor - dense| over a score table, relative to its largest entry
    for key in ("dots", "norms"):
        pairs = [
            (x, y)
            for rf, rd in zip(lmos["factors"][key], lmos["dense"][key])
            for x, y in zip(rf, rd)
        ]
        scale = max(abs(y) for _, y in pairs)
        rel = max(rel, max(abs(x - y) for x, y in pairs) / scale)
    result = {
        "command": "python -m benchmarks.lora.bench " + " ".join(sys.argv[1:]),
        "base_params": info["params"], "adapters": info["n"], "ranks": info["ranks"],
        "targets": list(TARGETS),
        "run": {m: {k: v for k, v in r.items() if k != "picks"} for m, r in runs.items()},
        "lmo": {m: {k: r[k] for k in ("first_pass_s", "dots_pass_s")} for m, r in lmos.items()},
        "ratios_dense_over_factors": {
            "peak_rss": d["peak_rss"] / f["peak_rss"],
            "peak_anon": d["peak_anon"] / max(f["peak_anon"], 1),
            "disk_written": written_d / max(written_f, 1),
            "wchar": d["wchar"] / max(f["wchar"], 1),
            "lmo_first_pass": lmos["dense"]["first_pass_s"] / lmos["factors"]["first_pass_s"],
            "lmo_dots_pass": lmos["dense"]["dots_pass_s"] / lmos["factors"]["dots_pass_s"],
            "full_run_wall": d["seconds"] / f["seconds"],
        },
        "equivalence": {
            "same_picks_run": f["picks"] == d["picks"],
            "same_picks_lmo": lmos["factors"]["picks"] == lmos["dense"]["picks"],
            "lmo_scores_max_rel_diff": rel,
            "output_max_abs_diff": max_diff,
            "final_loss": [f["final_loss"], d["final_loss"]],
        },
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    (args.root / "lora_bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
