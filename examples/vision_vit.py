"""Merge vision experts that keep their own heads, with Frank-Wolfe, from Python.

The CLIP setting at laptop scale: one ViT encoder pretrained on scikit-learn's digits,
experts fine-tuned on different tasks (each under its own frozen head), merged into one
encoder with `mergekit_fw.frank_wolfe_merge`. The loss takes the task name, so each
calibration batch is scored with its task's head. Runs offline, on CPU:

    python examples/vision_vit.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mergekit_fw import frank_wolfe_merge
from mergekit_fw.cli import toy_vit as tv

TASKS = ["rot90", "invert", "hflip", "parity", "mod3", "noise_prime"]


def main() -> None:
    torch.set_num_threads(2)
    splits = tv.digits_splits()  # disjoint train / calibration / test images
    print("pretraining the base ViT ...")
    base = tv.pretrain(splits)
    folder = Path(tempfile.mkdtemp(prefix="vit_experts_"))
    files, heads = [], {}
    for i, name in enumerate(TASKS):  # experts on disk: the merge streams them
        print(f"fine-tuning expert {name} ...")
        state, heads[name] = tv.finetune(base, tv.TASK[name], splits, seed=100 + i)
        files.append(str(folder / f"{name}.safetensors"))
        save_file(state, files[-1])

    def loss(model, batch, task):  # batch from `data`, task = its key there
        images, labels = batch
        return F.cross_entropy(heads[task](model(images)), labels)

    calibration = {t: [tuple(x[:64] for x in tv.TASK[t].apply(*splits["calib"]))] for t in TASKS}
    merged, plan = frank_wolfe_merge(
        model=base,
        candidates=files,
        loss=loss,
        data=calibration,
        iterations=3,
        variant="soft",
        select="per_task",
        quiet=False,
    )
    plan.save(folder / "fw_plan.json")

    def accuracy(state, task):
        encoder = tv.TinyViT()
        encoder.load_state_dict(state)
        return tv.accuracy(encoder, heads[task], *tv.TASK[task].apply(*splits["test"]))

    arithmetic = {  # task arithmetic, lambda 0.3, for comparison
        k: v + 0.3 * sum(tv_state[k] - v for tv_state in map(_load, files))
        for k, v in base.state_dict().items()
    }
    print(f"\n{'task':12} {'base':>6} {'TA 0.3':>7} {'FW-soft':>8}")
    for t in TASKS:
        print(
            f"{t:12} {accuracy(base.state_dict(), t):6.3f} {accuracy(arithmetic, t):7.3f} "
            f"{accuracy(merged, t):8.3f}"
        )
    print(f"\nplan: {folder / 'fw_plan.json'}; total weight per expert:")
    for label, total in plan.total_coefficients().items():
        print(f"  {label:12} {total / len(plan.tensors):.3f}")


def _load(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


if __name__ == "__main__":
    main()
