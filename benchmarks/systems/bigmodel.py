"""A random LLaMA-style model of ~66M parameters (weights dominate memory) and n candidates
that are small perturbations of it, stored as bf16 safetensors in .cache/big/, with the
package's character tokenizer (mergekit_fw.cli.toy) and 4 short calibration texts.

The memory, LMO-speed and wall-time figures in docs/benchmarks.md were measured when the
tokenizer and the 4 texts came from the retired version-5 zoo (docs/benchmarks_history.md);
they have not been re-run since (the weights, unchanged, dominate all three)."""

from __future__ import annotations

import json

import torch

from benchmarks.common import CACHE

BIG = CACHE / "big"
SHAPE = {"hidden": 512, "layers": 8, "intermediate": 2048, "vocab": 32000}
N_MAX = 16


def _config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"],
        intermediate_size=SHAPE["intermediate"], num_hidden_layers=SHAPE["layers"],
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip


def build(n: int = N_MAX) -> dict:
    """base + cand_1..cand_n; returns {'base': path, 'cands': [...], 'params': count}."""
    marker = BIG / "big.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["shape"] == SHAPE and len(info["cands"]) >= n:
            return info
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from mergekit_fw.cli import toy

    tokenizer = toy.build_tokenizer()

    torch.manual_seed(0)
    model = LlamaForCausalLM(_config()).to(torch.bfloat16)
    model.config.architectures = ["LlamaForCausalLM"]
    params = sum(p.numel() for p in model.parameters())
    base = {k: v.contiguous() for k, v in model.state_dict().items()}
    paths = []
    for i in range(n + 1):
        name = "base" if i == 0 else f"cand_{i:02d}"
        folder = BIG / name
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(str(folder))
        gen = torch.Generator().manual_seed(1000 + i)
        sd = base if i == 0 else {
            k: (v.float() + 0.01 * v.float().std() * torch.randn(v.shape, generator=gen))
            .to(torch.bfloat16) for k, v in base.items()
        }  # fmt: skip
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(folder))
        paths.append(str(folder))
    # a few short calibration samples: cheap gradients, weights dominate memory
    calib = BIG / "calibration.jsonl"
    texts = [r["prompt"] + r["response"] for r in toy.task_records("reverse", 16, seed=0)]
    lines = [" ".join(texts[i::4])[:64] for i in range(4)]
    calib.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    info = {"shape": SHAPE, "params": params, "base": paths[0], "cands": paths[1:],
            "calibration": str(calib)}  # fmt: skip
    marker.write_text(json.dumps(info, indent=1))
    return info
