"""Merge vision experts that keep their own heads, with Frank-Wolfe, from Python.

The CLIP setting at laptop scale: one ViT encoder pretrained on scikit-learn's digits,
experts fine-tuned on different tasks (each under its own frozen head), merged into one
encoder with `mergekit_fw.frank_wolfe_merge`. The loss takes the task name, so each
calibration batch is scored with its task's head. The script prints held-out accuracy per
task of the base encoder, task arithmetic (lambda picked on the calibration images) and the
FW merge. Runs offline, on CPU: about 1.5 min when first measured on one thread; on a
heavily shared 2-core machine (load average ~19) a new-user trial measured 23 min, most of
it in the FW merge.
Every phase prints its progress (one line per FW iteration) and its time:

    python examples/vision_vit.py              # experts and plan in a temporary folder, removed
    python examples/vision_vit.py --keep DIR   # keep the experts' .safetensors and fw_plan.json
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mergekit_fw import frank_wolfe_merge
from mergekit_fw.cli import toy_vit as tv

TASKS = ["rot90", "invert", "hflip", "parity", "mod3", "noise_prime"]
# The best FW variant of the vision tier (docs/benchmarks.md): FW-soft with the authors'
# unconstrained coefficients, one vertex per task each iteration.
FW_OPTIONS = dict(
    iterations=5,
    variant="soft",
    select="per_task",
    constraint="hull",
    coefficients="free",
    inner_steps=30,
)
TA_GRID = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def make_experts(base, splits, tasks, folder: Path, steps: int = 200):
    """Fine-tune one expert per task under its frozen head; save each to a safetensors file."""
    files, heads = [], {}
    for i, name in enumerate(tasks):
        print(f"fine-tuning expert {name} ...", flush=True)
        state, heads[name] = tv.finetune(base, tv.TASK[name], splits, steps=steps, seed=100 + i)
        files.append(str(folder / f"{name}.safetensors"))
        save_file(state, files[-1])  # on disk: the merge streams them
    return files, heads


def split_of(splits, task: str, part: str):
    return tv.TASK[task].apply(*splits[part])


def fw_merge(base, files, heads, splits, tasks, **options):
    """The FW merge of the experts' encoders on the labelled calibration images."""

    def loss(model, batch, task):  # batch from `data`, task = its key there
        images, labels = batch
        return F.cross_entropy(heads[task](model(images)), labels)

    calibration = {t: [split_of(splits, t, "calib")] for t in tasks}
    options = {"progress": "iterations", **(options or FW_OPTIONS)}
    return frank_wolfe_merge(model=base, candidates=files, loss=loss, data=calibration, **options)


def accuracy(base, state, heads, splits, task: str, part: str = "test") -> float:
    encoder = copy.deepcopy(base)
    encoder.load_state_dict(state)
    return tv.accuracy(encoder, heads[task], *split_of(splits, task, part))


def task_arithmetic(base, files, heads, splits, tasks):
    """base + lambda * sum of task vectors, lambda with the best calibration accuracy."""
    start = base.state_dict()
    vectors = [{k: v - start[k] for k, v in load_file(f).items()} for f in files]
    best = None
    for lam in TA_GRID:
        state = {k: b + lam * sum(tau[k] for tau in vectors) for k, b in start.items()}
        score = sum(accuracy(base, state, heads, splits, t, "calib") for t in tasks)
        if best is None or score > best[0]:
            best = (score, lam, state)
    return best[2], best[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="keep the experts and fw_plan.json here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run(Path(args.keep))
    else:  # nothing left behind in the temporary directory
        with tempfile.TemporaryDirectory(prefix="vit_experts_") as folder:
            run(Path(folder), keep=False)


class Phase:
    """`name ...` when a phase starts, `name: N s` when it ends."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.started = time.perf_counter()
        print(f"{self.name} ...", flush=True)

    def __exit__(self, *exc):
        print(f"{self.name}: {time.perf_counter() - self.started:.0f} s", flush=True)


def run(folder: Path, keep: bool = True) -> None:
    started = time.perf_counter()
    splits = tv.digits_splits()  # disjoint train / calibration / test images
    with Phase("pretraining the base ViT"):
        base = tv.pretrain(splits)
    with Phase(f"fine-tuning {len(TASKS)} experts"):
        files, heads = make_experts(base, splits, TASKS, folder)
    iterations = FW_OPTIONS["iterations"]
    with Phase(f"merging with Frank-Wolfe ({iterations} iterations, one line each)"):
        merged, plan = fw_merge(base, files, heads, splits, TASKS)
    plan.save(folder / "fw_plan.json")
    with Phase("task arithmetic, lambda picked on the calibration images"):
        arithmetic, lam = task_arithmetic(base, files, heads, splits, TASKS)

    columns = {"base": base.state_dict(), f"TA {lam}": arithmetic, "FW": merged}
    print(
        f"\nheld-out test accuracy\n{'task':12} {'expert':>7}" + "".join(f"{c:>8}" for c in columns)
    )
    means = dict.fromkeys(columns, 0.0)
    for t, path in zip(TASKS, files):
        row = f"{t:12} {accuracy(base, load_file(path), heads, splits, t):7.3f}"
        for c, state in columns.items():
            value = accuracy(base, state, heads, splits, t)
            means[c] += value / len(TASKS)
            row += f"{value:8.3f}"
        print(row)
    print(f"{'mean':12} {'':7}" + "".join(f"{means[c]:8.3f}" for c in columns))
    where = f"plan: {folder / 'fw_plan.json'}" if keep else "plan (not kept; --keep DIR keeps it)"
    print(f"\n{where}; mean coefficient of each model over the tensors")
    print("(free coefficients: any sign; every tensor's coefficients sum to 1):")
    for label, total in plan.total_coefficients().items():
        print(f"  {label:12} {total / len(plan.tensors):.3f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
