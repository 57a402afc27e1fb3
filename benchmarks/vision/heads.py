"""Why the vision zoo uses prototype heads: base-with-head vs expert under three zoo designs.

For each design, the 20 experts are fine-tuned from the same base (the zoo's, seeded), and
the script records per task the expert's and the base's test accuracy with that task's
head, and task arithmetic of the 4 target experts and of all 20 (lambda picked on the
calibration images, as in benchmarks/vision/bench.py). Designs:

- probe, lr 3e-3: zoo version 1 (a linear probe fitted on the base's features, then frozen);
- prototype, lr 3e-3: the fixed class-prototype head (zoo version 2's) with v1's fine-tuning;
- prototype, lr 1e-3: zoo version 2.

    python -m benchmarks.vision.heads   # ~3 min, 1 thread
"""

from __future__ import annotations

import time

from benchmarks.common import RESULTS_DIR, save_result, threads
from benchmarks.vision.bench import TA_GRID, TARGETS
from mergekit_fw.cli import toy_vit as tv

RESULTS = RESULTS_DIR / "vision_heads.json"
DESIGNS = {
    "probe, lr 3e-3 (zoo v1)": dict(head="probe", lr=3e-3),
    "prototype, lr 3e-3": dict(head="prototype", lr=3e-3),
    "prototype, lr 1e-3 (zoo v2)": dict(head="prototype", lr=1e-3),
}


def _accuracy(state, head, data) -> float:
    encoder = tv.TinyViT()
    encoder.load_state_dict(state)
    return tv.accuracy(encoder, head, *data)


def design(base, splits, head: str, lr: float) -> dict:
    base_state = base.state_dict()
    experts, heads, rows = {}, {}, {}
    for i, task in enumerate(tv.TASKS):  # the zoo's seeds (benchmarks/vision/zoo.py)
        experts[task.name], heads[task.name] = tv.finetune(
            base, task, splits, lr=lr, seed=100 + i, head=head
        )
        test = task.apply(*splits["test"])
        rows[task.name] = {
            "expert": _accuracy(experts[task.name], heads[task.name], test),
            "base": _accuracy(base_state, heads[task.name], test),
        }

    def task_arithmetic(pool: list[str]) -> dict:
        def mean(state, split):
            scores = [_accuracy(state, heads[t], tv.TASK[t].apply(*splits[split])) for t in pool]
            return sum(scores) / len(scores)

        best = None
        for lam in TA_GRID:
            state = {
                k: b + lam * sum(experts[e][k] - b for e in pool) for k, b in base_state.items()
            }
            score = mean(state, "calib")
            if best is None or score > best[0]:
                best = (score, lam, state)
        return {"lambda": best[1], "test": mean(best[2], "test"), "base": mean(base_state, "test")}

    return {
        "tasks": rows,
        "ta4": task_arithmetic(TARGETS),
        "ta20": task_arithmetic([t.name for t in tv.TASKS]),
    }


def run() -> dict:
    threads()
    t0 = time.perf_counter()
    splits = tv.digits_splits()
    base = tv.pretrain(splits)  # the zoo's base (same seed and steps)
    results = {name: design(base, splits, **options) for name, options in DESIGNS.items()}
    results["seconds"] = time.perf_counter() - t0
    save_result(RESULTS.name, results)
    return results


if __name__ == "__main__":
    run()
