"""Merges of zoo pools, all in memory: stock mergekit baselines, the mergekit-fw package, and
prototype FW variants (finer blocks, constraint sets beyond the hull) driven from here.

Baselines use `mergekit.merge_methods.merge_state_dicts` (the same kernels `mergekit-yaml`
runs). Their scaling/density is chosen on the calibration split only, by the same objective
FW minimises (mean per-token loss over the target tasks' calibration samples).
The package runs go through `mergekit_fw.mergekit.runner.prepare` (the exact pre-pass a recipe runs)
and the resulting FWPlan coefficients are applied in memory; mergekit's writer produces the
same per-tensor linear combination (tests/ check that invariant).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import CACHE, ZOO, Encoded, calib_loss, loss_sum, score, threads
from benchmarks.tasks import ALL_TASKS
from benchmarks.zoo import load_zoo

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")  # rows = vocabulary axis


class Zoo:
    """State dicts of the zoo in memory, plus encoded calibration and test splits."""

    def __init__(self, calib_samples: int, info: dict | None = None):
        from transformers import AutoTokenizer, LlamaForCausalLM

        threads()
        if info is None:
            try:
                info = load_zoo()
            except FileNotFoundError:  # zoo still training: use the finished models
                info = {"paths": {d.name: str(d) for d in ZOO.iterdir()
                                  if (d / "stage.json").exists()}, "scores": {}}  # fmt: skip
        self.info = info
        self.paths = self.info["paths"]
        self.tok = AutoTokenizer.from_pretrained(self.paths["base"])
        self.model = LlamaForCausalLM.from_pretrained(self.paths["base"]).eval()
        self.names = [n for n, _ in self.model.named_parameters()]
        self.sd = {}
        for key, path in self.paths.items():
            from safetensors.torch import load_file

            self.sd[key] = load_file(str(Path(path) / "model.safetensors"))
        self.calib_samples = calib_samples
        self.calib, self.test = {}, {}
        for t in ALL_TASKS:
            folder = ZOO / "data" / t
            cal = [json.loads(x) for x in (folder / "calibration.jsonl").read_text().splitlines()]
            tst = [json.loads(x) for x in (folder / "test.jsonl").read_text().splitlines()]
            self.calib[t] = Encoded(t, cal[:calib_samples], self.tok)
            self.test[t] = Encoded(t, tst, self.tok)

    def load(self, sd: dict[str, torch.Tensor]):
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(sd[name])
        return self.model

    def calib_loss(self, sd, tasks) -> float:
        return calib_loss(self.load(sd), [self.calib[t] for t in tasks])

    def scores(self, sd, tasks) -> dict[str, float]:
        model = self.load(sd)
        return {t: score(model, self.test[t]) for t in tasks}

    def manifest(self, tasks) -> str:
        """A mergekit-fw calibration manifest: the calibration split of each target task."""
        path = CACHE / "manifests" / f"{'-'.join(tasks)}-{self.calib_samples}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {
            t: {"path": str(ZOO / "data" / t / "calibration.jsonl"),
                "max_samples": self.calib_samples}
            for t in tasks
        }  # fmt: skip
        path.write_text(yaml.safe_dump({"tasks": entries}))
        return str(path)


# ---- stock mergekit baselines ----------------------------------------------------------
def _merge(zoo: Zoo, pool, method, params, with_base=True):
    from mergekit.merge_methods.api import merge_state_dicts

    models = {k: zoo.sd[k] for k in pool}
    if with_base:
        models = {"base": zoo.sd["base"], **models}
    with torch.no_grad():
        return merge_state_dicts(
            models, method, parameters=params, base="base" if with_base else None
        )


TA_GRID = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
TIES_GRID = [(d, lam) for d in (0.3, 0.7) for lam in (0.7, 1.0)]


def task_arithmetic(zoo, pool, tasks, lam=None):
    """base + lam * sum of task vectors; lam chosen on calibration loss unless given."""
    grid = TA_GRID if lam is None else [lam]
    best = None
    for value in grid:
        sd = _merge(zoo, pool, "task_arithmetic", {"lambda": value, "weight": 1.0})
        loss = zoo.calib_loss(sd, tasks)
        if best is None or loss < best[0]:
            best = (loss, sd, {"lambda": value})
    return best


def ties(zoo, pool, tasks):
    best = None
    for density, lam in TIES_GRID:
        params = {"lambda": lam, "weight": 1.0, "density": density}
        sd = _merge(zoo, pool, "ties", params)
        loss = zoo.calib_loss(sd, tasks)
        if best is None or loss < best[0]:
            best = (loss, sd, {"density": density, "lambda": lam})
    return best


def linear(zoo, pool, tasks):
    sd = _merge(zoo, pool, "linear", {"weight": 1.0, "normalize": True}, with_base=False)
    return zoo.calib_loss(sd, tasks), sd, {}


# ---- the mergekit-fw package -----------------------------------------------------------
FW_PACKAGE = {  # "FW-hard": the package defaults (inner LMO, per tensor, from base, line search)
    "lmo": "inner", "granularity": "tensor", "init": "base", "step": "line_search",
}  # fmt: skip
FW_AUTHORS = {  # the authors' NLP settings (fw_reference.md section 1): gamma_t = 0.029*2/(t+2)
    "lmo": "cosine", "granularity": "tensor", "zero_vertex": True, "init": "task_arithmetic",
    "init_scale": 0.3, "step": "schedule", "step_size": 0.029, "constraint": "hull",
}  # fmt: skip


def fw_package(zoo, pool, tasks, settings: dict, iterations: int, line_evals: int = 8):
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.runner import prepare

    params = {
        "calibration": zoo.manifest(tasks), "iterations": iterations,
        "line_search_evals": line_evals, "batch_size": 100, "max_length": 256,
        "tolerance": float("-inf"), **settings,
    }  # fmt: skip
    config = MergeConfiguration.model_validate({
        "merge_method": "frank_wolfe", "base_model": zoo.paths["base"], "dtype": "float32",
        "models": [{"model": zoo.paths[k]} for k in pool], "parameters": params,
    })  # fmt: skip
    plan = prepare(config, MergeOptions(quiet=True))
    order = ["base", *pool]
    sd = {}
    for name in zoo.names:
        coeffs = plan.coefficients[name]
        sd[name] = sum(c * zoo.sd[k][name] for c, k in zip(coeffs, order))
    meta = {"trajectory": [[r.loss, r.gamma] for r in plan.iterations],
            "final_loss": plan.final_loss}  # fmt: skip
    return zoo.calib_loss(sd, tasks), sd, meta


# ---- prototype FW: blocks along the vocabulary axis, box / scaled-simplex constraints ------
def fw_proto(
    zoo: Zoo,
    pool: list[str],
    tasks: list[str],
    *,
    blocks: str = "tensor",  # tensor | rows (vocab tensors split per row) | rows_all
    constraint: str = "simplex",  # simplex (beta=1: the package's hull) | box
    beta: float = 1.0,
    init_lambda: float = 0.0,  # 0: from base; >0: task-arithmetic start base + lam*sum tau
    iterations: int = 8,
    line_evals: int = 8,
    line: str = "golden",  # golden: the package's LineSearch on [0, 1] | log: 2^-k grid
):
    """FW over theta = base + sum_k lam_k * tau_k, with lam per (tensor, block).

    simplex(beta): lam >= 0, sum_k lam_k <= beta per block (beta=1 is conv{base, experts},
    the package's feasible set); LMO = beta * e_argmin<g, tau_k> if that is < 0, else 0.
    box(beta): 0 <= lam_k <= beta per block; LMO = beta * [<g, tau_k> < 0] for every k,
    i.e. it can add several task vectors at once (task arithmetic is a point of the box).
    """
    from mergekit_fw.fw.steps import LineSearch

    encs = [zoo.calib[t] for t in tasks]
    base = zoo.sd["base"]
    taus, lam = {}, {}
    for name in zoo.names:
        shape = base[name].shape
        rows = shape[0] if (blocks == "rows_all" and len(shape) == 2) or (
            blocks == "rows" and name in VOCAB_TENSORS) else 1  # fmt: skip
        taus[name] = torch.stack([zoo.sd[k][name] - base[name] for k in pool]).reshape(
            len(pool), rows, -1
        )
        lam[name] = torch.full((len(pool), rows), float(init_lambda))
    if constraint == "simplex" and init_lambda * len(pool) > beta + 1e-9:
        raise ValueError("task-arithmetic start outside the scaled simplex")

    def point(name):
        return base[name] + torch.einsum("nr,nrd->rd", lam[name], taus[name]).reshape(
            base[name].shape
        )

    model = zoo.model
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in zoo.names:
            params[name].copy_(point(name))
    history = []
    rule = LineSearch(line_evals)
    for t in range(iterations):
        model.zero_grad(set_to_none=False)
        for p in model.parameters():
            p.requires_grad_(True)
        total = sum(loss_sum(model, e, grad=True) / e.targets for e in encs) / len(encs)
        total.backward()
        f0 = float(total)
        dirs, gap = {}, 0.0
        with torch.no_grad():
            for name in zoo.names:
                g = params[name].grad.reshape(taus[name].shape[1:])
                dots = torch.einsum("rd,nrd->nr", g, taus[name])
                if constraint == "box":
                    s = beta * (dots < 0).float()
                else:
                    best = dots.argmin(dim=0)
                    s = torch.zeros_like(dots)
                    neg = dots.gather(0, best[None])[0] < 0
                    s[best[neg], torch.arange(dots.shape[1])[neg]] = beta
                delta = s - lam[name]
                gap -= float((dots * delta).sum())
                dirs[name] = delta
                lam_d = torch.einsum("nr,nrd->rd", delta, taus[name]).reshape(base[name].shape)
                params[name].grad.copy_(lam_d)  # reuse the buffer: d = s - theta
        position = [0.0]

        def loss_at(gamma, position=position):
            with torch.no_grad():
                for name in zoo.names:
                    params[name].add_(params[name].grad, alpha=gamma - position[0])
            position[0] = gamma
            return calib_loss(model, encs)

        if line == "log":  # gamma in {1, 1/2, ..., 2^-(evals+1)} and 0: finds small steps
            seen = {0.0: f0}
            for k in range(line_evals + 2):
                seen[2.0**-k] = loss_at(2.0**-k)
            gamma = min(seen, key=lambda g: (seen[g], g))
        else:
            gamma = rule.choose(t, f0, loss_at)
        loss_at(gamma)
        for name in zoo.names:
            lam[name].add_(dirs[name], alpha=gamma)
        history.append([f0, gamma, gap])
    with torch.no_grad():
        sd = {name: point(name) for name in zoo.names}
    summary = {
        "trajectory": history,
        "mean_lambda": {k: float(sum(lam[n][i].mean() for n in zoo.names) / len(zoo.names))
                        for i, k in enumerate(pool)},
    }  # fmt: skip
    return zoo.calib_loss(sd, tasks), sd, summary


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    loss, sd, meta = fn(*args, **kwargs)
    return loss, sd, meta, time.perf_counter() - t0


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
