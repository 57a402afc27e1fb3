"""What a 7B and a 70B FW merge need, by the estimate (mergekit/estimate.py), from the
architectures' shapes alone (no weights): LLaMA-2-7B and LLaMA-2-70B, bf16, a pool of the
base and 16 fine-tunes (the paper's Table 1 size), 8 calibration rows of 512 tokens.

    PYTHONPATH=. python -m benchmarks.scale.projection   # -> benchmarks/results/projection.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CANDIDATES = 16
SHAPES = {
    "LLaMA-2-7B": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32},
    "LLaMA-2-70B": {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                    "num_attention_heads": 64, "num_key_value_heads": 8},
}  # fmt: skip


def shapes(**config) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    with init_empty_weights():
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32000, tie_word_embeddings=False, **config))
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def main() -> None:
    from mergekit_fw.mergekit.estimate import estimate_tensors

    results = {}
    for name, config in SHAPES.items():
        found = shapes(**config)
        one = sum(torch.Size(s).numel() for s in found.values()) * 2  # bf16 on disk
        estimate = estimate_tensors(
            found, one * (CANDIDATES + 1), CANDIDATES + 1, torch.bfloat16,
            batch_tokens=8 * 512,
        )  # fmt: skip
        results[name] = estimate.as_dict()
        print(f"{name}, base + {CANDIDATES} candidates, bf16:\n{estimate.table()}\n")
    out = Path("benchmarks/results/projection.json")
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
