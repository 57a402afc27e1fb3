"""Vision tier: the paper's CLIP setting (Tables 2 and 3) with a tiny ViT on load_digits.

20 experts share one pretrained encoder; each has its own task and frozen head. A merge
combines encoders only, and is scored on every task's test images with that task's head.
Methods: task arithmetic, TIES, AdaMerging (layer-wise, entropy on the unlabelled test
inputs, as its paper does), and FW-hard, FW-box, FW-soft and FW-soft free through
`mergekit_fw.frank_wolfe_merge`. Hyper-parameters: TA's lambda, TIES's (k, lambda) and
AdaMerging's (learning rate, start) are picked by accuracy on the labelled calibration
images; the FW options are fixed a priori (`FW`). No method ever sees a test label.
About 15 min on one thread, the zoo's build included (BENCH_THREADS sets the threads).

    python -m benchmarks.run --only vision
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from benchmarks.common import RESULTS_DIR, save_result, threads
from benchmarks.vision.zoo import build as build_zoo
from mergekit_fw import frank_wolfe_merge
from mergekit_fw.cli import toy_vit as tv

RESULTS = RESULTS_DIR / "vision.json"
CALIB = 300  # labelled calibration images per task (all of the split): FW's data, and the
# selection data of TA / TIES / AdaMerging
TA_GRID = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
TIES_K = [0.1, 0.2, 0.3]
TIES_LAMBDA = [0.5, 1.0, 1.5, 2.0]
ADA_LR = [1e-3, 3e-3, 1e-2]
ADA_INIT = ["paper", "ta"]  # lambda starts at 0.3 (its paper) or at TA's calibration lambda
ADA_STEPS, ADA_BATCH = 100, 16
# FW options, fixed a priori (10 iterations: the budget; 5 for the soft variants,
# whose iterations each fit coefficients for 30 steps). The rows start at the base
# (`init="base"`, the package default when they were first measured), except "FW defaults":
# every option the API's default (box, `init="auto"`: the base or task arithmetic,
# whichever has the lower calibration loss):
# the soft variants' shared options: per-task selection, 30 coefficient-fit steps, the hull
SOFT = dict(iterations=5, variant="soft", select="per_task", inner_steps=30, constraint="hull")
FW = {
    "FW-hard": dict(iterations=10, constraint="hull", init="base"),  # the paper's set
    "FW-box": dict(iterations=10, init="base"),  # constraint box, scale 1 (the defaults)
    "FW defaults": dict(iterations=10),  # box, init auto
    "FW-soft": dict(SOFT, init="base"),  # the paper's FW-soft: simplex-projected coefficients
    # the authors' code: unconstrained Adam coefficients
    "FW-soft free": dict(SOFT, coefficients="free", init="base"),
}
TARGETS = ["rot90", "invert", "parity", "mod3"]  # Table 3's four target tasks
SIZES = [4, 8, 12, 16]


class Bench:
    """Zoo, data and scorers for one set of evaluated tasks."""

    def __init__(self, zoo: dict, tasks: list[str]):
        self.zoo, self.tasks = zoo, tasks
        splits = tv.digits_splits()
        self.calib = {t: tv.TASK[t].apply(*splits["calib"]) for t in tasks}
        self.calib = {t: (x[:CALIB], y[:CALIB]) for t, (x, y) in self.calib.items()}
        self.test = {t: tv.TASK[t].apply(*splits["test"]) for t in tasks}
        self.heads = {}
        for t in tv.TASK:
            head = torch.nn.Linear(zoo["base"]["norm.weight"].numel(), tv.TASK[t].classes)
            head.load_state_dict(zoo["heads"][t])
            self.heads[t] = head.requires_grad_(False)
        self.encoder = tv.TinyViT()
        self.encoder.load_state_dict(zoo["base"])
        self.base = {k: v.clone() for k, v in zoo["base"].items()}

    def scores(self, state: dict, split: str) -> dict[str, float]:
        data = self.calib if split == "calib" else self.test
        encoder = tv.TinyViT()
        encoder.load_state_dict(state)
        return {t: tv.accuracy(encoder, self.heads[t], *data[t]) for t in self.tasks}

    def mean(self, state: dict, split: str) -> float:
        s = self.scores(state, split)
        return sum(s.values()) / len(s)

    # -- baselines ----------------------------------------------------------------------
    def task_arithmetic(self, experts: list[str], lam: float) -> dict:
        return {
            k: b + lam * sum(self.zoo["experts"][e][k] - b for e in experts)
            for k, b in self.base.items()
        }

    def ties(self, experts: list[str], k: float, lam: float) -> dict:
        """TIES-merging (Yadav et al. 2023): trim to the top-k magnitudes of each task
        vector, elect a sign per entry, average the agreeing entries."""
        names = list(self.base)
        flat = torch.stack(
            [
                torch.cat([(self.zoo["experts"][e][n] - self.base[n]).reshape(-1) for n in names])
                for e in experts
            ]
        )
        keep = max(1, int(k * flat.shape[1]))
        threshold = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
        trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
        sign = torch.sign(trimmed.sum(dim=0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        merged = (trimmed * agree).sum(dim=0) / agree.sum(dim=0).clamp_min(1)
        out, offset = {}, 0
        for n in names:
            size = self.base[n].numel()
            out[n] = self.base[n] + lam * merged[offset : offset + size].view_as(self.base[n])
            offset += size
        return out

    def adamerging(self, experts: list[str], lr: float, init: float, seed: int = 0) -> dict:
        """Layer-wise AdaMerging (Yang et al. 2024): theta = base + sum_k lambda_{k,l} tau_{k,l},
        lambda in [0, 1] from `init`, Adam on the summed prediction entropy of unlabelled test
        inputs of every evaluated task (batches of ADA_BATCH per task)."""
        names = [n for n in self.base if self.base[n].is_floating_point()]
        taus = {
            n: torch.stack([self.zoo["experts"][e][n] - self.base[n] for e in experts])
            for n in names
        }
        lam = torch.full((len(experts), len(names)), float(init), requires_grad=True)
        optimiser = torch.optim.Adam([lam], lr=lr)
        gen = torch.Generator().manual_seed(seed)

        def merged(weights):
            return {
                n: self.base[n]
                + (weights[:, i].view(-1, *[1] * self.base[n].dim()) * taus[n]).sum(0)
                for i, n in enumerate(names)
            }

        for _ in range(ADA_STEPS):
            params = merged(lam)
            loss = 0.0
            for t in self.tasks:
                x = self.test[t][0]
                idx = torch.randint(len(x), (ADA_BATCH,), generator=gen)
                logits = self.heads[t](functional_call(self.encoder, params, (x[idx],)))
                log_p = F.log_softmax(logits, dim=-1)
                loss = loss + (-(log_p.exp() * log_p).sum(-1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                lam.clamp_(0.0, 1.0)
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in merged(lam).items()}

    # -- Frank-Wolfe through the public API ---------------------------------------------
    def frank_wolfe(self, experts: list[str], **options) -> tuple[dict, object]:
        heads = self.heads

        def loss(model, batch, task):
            images, labels = batch
            return F.cross_entropy(heads[task](model(images)), labels)

        data = {t: [self.calib[t]] for t in self.tasks}
        candidates = [self.zoo["experts"][e] for e in experts]
        return frank_wolfe_merge(self.encoder, candidates, loss, data, labels=experts, **options)


def _best(bench: Bench, make, grid) -> tuple[dict, object, float]:
    """The grid point with the best calibration accuracy (ties: the first)."""
    best = None
    for point in grid:
        state = make(point)
        score = bench.mean(state, "calib")
        if best is None or score > best[2]:
            best = (state, point, score)
    return best


def methods(bench: Bench, experts: list[str]) -> dict[str, dict]:
    """Every method on one pool: test accuracy per task, chosen hyper-parameters, seconds."""
    out = {}

    def record(name, state, chosen, started):
        scores = bench.scores(state, "test")
        out[name] = {
            "mean": sum(scores.values()) / len(scores), "tasks": scores, "chosen": chosen,
            "calib": bench.mean(state, "calib"), "seconds": time.perf_counter() - started,
        }  # fmt: skip

    t0 = time.perf_counter()
    record("base", bench.base, {}, t0)  # the pretrained encoder with each task's head
    t0 = time.perf_counter()
    state, lam, _ = _best(bench, lambda lam: bench.task_arithmetic(experts, lam), TA_GRID)
    record("task arithmetic", state, {"lambda": lam}, t0)
    print("  task arithmetic", round(out["task arithmetic"]["mean"], 4), flush=True)
    t0 = time.perf_counter()
    grid = [(k, lam) for k in TIES_K for lam in TIES_LAMBDA]
    state, point, _ = _best(bench, lambda p: bench.ties(experts, *p), grid)
    record("TIES", state, {"k": point[0], "lambda": point[1]}, t0)
    t0 = time.perf_counter()
    ta_lam = out["task arithmetic"]["chosen"]["lambda"]
    inits = {"paper": 0.3, "ta": ta_lam}
    grid = [(lr, init) for init in ADA_INIT for lr in ADA_LR]
    state, (lr, init), _ = _best(
        bench, lambda p: bench.adamerging(experts, p[0], inits[p[1]]), grid
    )
    record("AdaMerging", state, {"lr": lr, "init": inits[init]}, t0)
    print(
        "  TIES",
        round(out["TIES"]["mean"], 4),
        "AdaMerging",
        round(out["AdaMerging"]["mean"], 4),
        f"{out['AdaMerging']['seconds']:.0f}s",
        flush=True,
    )
    for name, options in FW.items():
        t0 = time.perf_counter()
        state, plan = bench.frank_wolfe(experts, **options)
        record(name, state, options, t0)
        out[name]["final_calib_loss"] = plan.final_loss
        totals = plan.total_coefficients()  # an expert's coefficient is its lambda_i
        out[name]["mean_lambda"] = {
            e: totals[e] / len(plan.coefficients) for e in plan.labels if e != "base"
        }
        print(f"  {name}", round(out[name]["mean"], 4), f"{out[name]['seconds']:.0f}s", flush=True)
    return out


def run(fresh: bool = False) -> dict:
    threads()  # BENCH_THREADS, default 1
    t0 = time.perf_counter()
    zoo = build_zoo()
    results = {
        "zoo_seconds": zoo["seconds"], "zoo_version": zoo["version"], "params": zoo["params"],
        "zoo_built": zoo.get("built_now", False),  # in this run (not read from the cache)
        "threads": torch.get_num_threads(), "calib_per_task": CALIB, "ada_steps": ADA_STEPS,
    }  # fmt: skip
    results["experts"] = {t: zoo["expert_acc"][t] for t in zoo["expert_acc"]}
    results["base_heads"] = {t: zoo["base_acc"][t] for t in zoo["base_acc"]}
    everything = [t.name for t in tv.TASKS]
    bench = Bench(zoo, everything)
    results["table2"] = methods(bench, everything)
    print("table 2:", {k: round(v["mean"], 4) for k, v in results["table2"].items()})
    bench = Bench(zoo, TARGETS)
    others = [t for t in everything if t not in TARGETS]
    results["table3"] = {}
    for size in SIZES:
        pool = TARGETS + others[: size - len(TARGETS)]
        results["table3"][str(size)] = methods(bench, pool)
        print(
            f"table 3, {size}:",
            {k: round(v["mean"], 4) for k, v in results["table3"][str(size)].items()},
        )
    results["seconds"] = time.perf_counter() - t0
    save_result(RESULTS.name, results)
    return results
