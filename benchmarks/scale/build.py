"""Random LLaMA-shaped pools for the scale tier: width 1024 (MLP 2816, vocabulary 32000,
16 heads), 8 / 16 / 32 layers, bf16 safetensors; base + 4 candidates = base + 1% noise;
8 calibration texts. Cached in benchmarks/.cache/scale/L<layers>/ (rebuilt if absent).

`build_smollm2()`: the same pool shape on a real pretrained model, SmolLM2-135M-Instruct
(30 layers, width 576, tied embeddings), from the real tier's converted checkpoint
(benchmarks/real: `make bench-real` builds it), stored in bf16; candidates = base + 1% noise."""

from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path("benchmarks/.cache/scale")
WIDTH = {"hidden": 1024, "intermediate": 2816, "vocab": 32000, "heads": 16}
CANDIDATES = 4
TEXTS = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "merging fine tuned models without retraining them is cheap and useful",
    "frank wolfe steps toward the vertex that best follows the gradient",
    "a small calibration set tells which candidates help the target tasks",
    "out of core means the model is never whole in memory at any time",
    "each decoder layer is read when it runs and freed right after that",
    "the line search fits a parabola from the slope and one more loss",
    "mergekit writes the merged tensors one at a time to safetensors shards",
]


def config(layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=WIDTH["vocab"], hidden_size=WIDTH["hidden"],
        intermediate_size=WIDTH["intermediate"], num_hidden_layers=layers,
        num_attention_heads=WIDTH["heads"], num_key_value_heads=WIDTH["heads"],
        max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, pad_token_id=0, architectures=["LlamaForCausalLM"],
    )  # fmt: skip


def build(layers: int) -> dict:
    """{'base': path, 'cands': [paths], 'calibration': path, 'params': n}; cached."""
    root = ROOT / f"L{layers}"
    marker = root / "pool.json"
    if marker.exists():
        return json.loads(marker.read_text())

    from mergekit_fw.cli import toy

    tokenizer = toy.build_tokenizer()
    cfg = config(layers)
    torch.manual_seed(layers)
    shapes = _shapes(cfg)
    base = {
        name: (torch.randn(shape) * (0.02 if len(shape) == 2 else 0.0) + (len(shape) == 1))
        .to(torch.bfloat16)
        .contiguous()
        for name, shape in shapes.items()
    }

    def extras(folder: Path) -> None:
        cfg.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))

    info = _write_pool(root, base, 1000, extras, layers)
    marker.write_text(json.dumps(info, indent=1))
    return info


def _write_pool(root: Path, base: dict, seed: int, extras, layers) -> dict:
    """The base and CANDIDATES copies with 1% noise (bf16 safetensors, `extras(folder)`
    writes the rest), the calibration texts; the pool's info."""
    from safetensors.torch import save_file

    paths = []
    for i in range(CANDIDATES + 1):
        folder = root / ("base" if i == 0 else f"cand_{i}")
        folder.mkdir(parents=True, exist_ok=True)
        extras(folder)
        gen = torch.Generator().manual_seed(seed + i)
        tensors = base if i == 0 else {
            k: (v.float() + 0.01 * v.float().std() * torch.randn(v.shape, generator=gen))
            .to(torch.bfloat16).contiguous()
            for k, v in base.items()
        }  # fmt: skip
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        paths.append(str(folder))
    calibration = root / "calib.jsonl"
    calibration.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return {
        "base": paths[0], "cands": paths[1:], "calibration": str(calibration),
        "params": sum(v.numel() for v in base.values()), "layers": layers,
        "checkpoint_bytes": (Path(paths[0]) / "model.safetensors").stat().st_size,
    }  # fmt: skip


def _shapes(cfg) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    with init_empty_weights():
        model = LlamaForCausalLM(cfg)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def build_smollm2() -> dict | None:
    """The pool of `build`, on the real tier's SmolLM2 base; None if that is not built."""
    from benchmarks.real import lm

    source = Path(lm.CACHE) / "base"
    root = ROOT / "smollm2"
    marker = root / "pool.json"
    if marker.exists():
        return json.loads(marker.read_text())
    if not (source / "model.safetensors").exists():
        return None
    import shutil

    from safetensors.torch import load_file

    base = {k: v.to(torch.bfloat16).contiguous() for k, v in
            load_file(str(source / "model.safetensors")).items()}  # fmt: skip

    def extras(folder: Path) -> None:  # config, tokenizer, chat template
        for extra in source.iterdir():
            if extra.name != "model.safetensors":
                shutil.copy(extra, folder / extra.name)

    info = _write_pool(root, base, 2000, extras, "smollm2")
    marker.write_text(json.dumps(info, indent=1))
    return info


def pool_of(target: str) -> dict:
    """`build(layers)` for a number of layers, `build_smollm2()` for "smollm2"."""
    if target == "smollm2":
        info = build_smollm2()
        if info is None:
            raise SystemExit("the SmolLM2 base is not built: run `make bench-real` first")
        return info
    return build(int(target))
