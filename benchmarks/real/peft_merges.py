"""LoRA merges through peft's `add_weighted_adapter` (the LoRA-specific baselines of issue 21).

    python -m benchmarks.real.peft_merges --combination ties|cat --weight 0.5 [--density 0.3] \
        --base DIR --adapters DIR,DIR,... OUT

Loads every adapter onto the base, combines them with
`LoraModel.add_weighted_adapter(names, [weight] * n, "merged", combination_type, density=...)`
(peft's own code: `cat` concatenates the factors, so the merged update is
sum_i weight * scaling * B_i A_i; `ties` trims, elects signs and merges the A and B factors
separately at `density`), merges that adapter into the base and saves a full checkpoint in OUT
(the same form as every other merge of the tier, scored the same way).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", choices=("ties", "cat"), required=True)
    parser.add_argument("--weight", type=float, required=True)
    parser.add_argument("--density", type=float)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--adapters", required=True)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folders = [Path(p) for p in args.adapters.split(",")]
    names = [f"a{i}" for i in range(len(folders))]
    model = AutoModelForCausalLM.from_pretrained(str(args.base), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(folders[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], folders[1:]):
        model.load_adapter(str(folder), adapter_name=name)
    extra = {"density": args.density} if args.combination == "ties" else {}
    model.add_weighted_adapter(
        names, [args.weight] * len(names), "merged", combination_type=args.combination, **extra
    )
    model.set_adapter("merged")
    for name in names:
        model.delete_adapter(name)
    merged = model.merge_and_unload()
    shutil.rmtree(args.out, ignore_errors=True)
    merged.save_pretrained(str(args.out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(args.base)).save_pretrained(str(args.out))


if __name__ == "__main__":
    main()
