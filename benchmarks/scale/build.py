"""Random LLaMA-shaped pools for the scale tier: width 1024 (MLP 2816, vocabulary 32000,
16 heads), 8 / 16 / 32 layers, bf16 safetensors; base + 4 candidates = base + 1% noise;
8 calibration texts. Cached in benchmarks/.cache/scale/L<layers>/ (rebuilt if absent)."""

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
    from safetensors.torch import save_file

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
    paths = []
    for i in range(CANDIDATES + 1):
        folder = root / ("base" if i == 0 else f"cand_{i}")
        folder.mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        gen = torch.Generator().manual_seed(1000 + i)
        tensors = base if i == 0 else {
            k: (v.float() + 0.01 * v.float().std() * torch.randn(v.shape, generator=gen))
            .to(torch.bfloat16).contiguous()
            for k, v in base.items()
        }  # fmt: skip
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        paths.append(str(folder))
    calibration = root / "calib.jsonl"
    calibration.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    info = {
        "base": paths[0], "cands": paths[1:], "calibration": str(calibration),
        "params": sum(torch.Size(s).numel() for s in shapes.values()), "layers": layers,
        "checkpoint_bytes": (Path(paths[0]) / "model.safetensors").stat().st_size,
    }  # fmt: skip
    marker.write_text(json.dumps(info, indent=1))
    return info


def _shapes(cfg) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    with init_empty_weights():
        model = LlamaForCausalLM(cfg)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}
