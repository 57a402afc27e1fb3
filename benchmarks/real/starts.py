"""init: auto's starts on a real-tier pool, and the two candidate rankings tried before screening.

    PYTHONPATH=. python -m benchmarks.real.starts [--pool all8] [--calib-per-task 16]

Runs the recipe path (`mergekit_fw.mergekit.runner.compute_plan`) of the pool's FW-defaults
recipe up to the start, then, instead of FW:
- the package's own `init: auto` table (`start_grid.score_rows`: the uniform task-arithmetic
  line, each candidate alone at 0.3, the helpful and gain-weighted lines);
- `gradient`: the line weighted by w_i = max(0, -<grad f(base), tau_i>) / max_j (...), one
  backward pass at the base;
- `newton`: a per-candidate quadratic through f(base), the slope -<g, tau_i> and the probe
  f(base + 0.3 tau_i), lambda_i = slope / curvature clipped to [0, 1], then the line
  alpha * sum_i lambda_i tau_i over alpha in the grid.
Writes benchmarks/real/results/starts.json (docs/starts.md cites it). Needs
`python -m benchmarks.real.build` first; about 4 minutes on 2 cores for all8.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.real import lm
from benchmarks.real.merges import POOLS, fw_recipe, pool_tasks
from benchmarks.real.merges import ROOT as MERGES

GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


class Stop(Exception):
    """Raised once the starts are measured: the FW run itself is not wanted."""


def measure(pool_name: str, calib: int) -> dict:
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    from mergekit_fw.fw.screened_start import PROBE
    from mergekit_fw.fw.start_grid import builtin_rows, held_line, score_rows, set_combinations
    from mergekit_fw.mergekit import runner

    found: dict = {}

    def starts(recipe, options, *, model, slots, pool, problem, device, dtype):
        started = time.perf_counter()
        settings, n = recipe.settings, len(pool) - 1
        loss = problem.loss_of(model)
        table, _ = score_rows(builtin_rows(settings, n), slots, pool, loss, model, settings)
        found["init_auto"] = [{k: e[k] for k in ("start", "loss", "row")} for e in table]
        found["seconds_init_auto"] = time.perf_counter() - started
        # the dropped rankings: one gradient at the base, then their lines
        set_combinations(slots, pool, [1.0] + [0.0] * n)
        for slot in slots:
            slot.param.requires_grad_(True)
            slot.param.grad = None
        f0 = problem.loss(model, grad=True, quiet=True).total
        grads = {slot.name: slot.param.grad.detach().clone() for slot in slots}
        model.zero_grad(set_to_none=True)
        with held_line(model, slots, loss) as scan:
            slopes = []
            for k in range(1, n + 1):  # -<g, tau_k>: tau_k held as the direction
                scan.form(slots, pool, [1.0 if i == k else 0.0 for i in range(1, n + 1)])
                slopes.append(-sum(float((grads[s.name] * s.param.grad).sum()) for s in slots))
            alone = {e["row"].index(PROBE): e["loss"] for e in table if " alone " in e["start"]}
            newton = []
            for k, slope in enumerate(slopes, start=1):
                curvature = 2 * (alone[k] - f0 + slope * PROBE) / PROBE**2
                lam = (
                    0.0 if slope <= 0 else (1.0 if curvature <= 0 else min(1.0, slope / curvature))
                )
                newton.append(lam)
            top = max(slopes)
            lines = {"gradient": [max(0.0, s) / top for s in slopes],
                     "newton": [x / max(newton) for x in newton]}  # fmt: skip
            found["f0"], found["slopes"], found["newton_lambda"] = f0, slopes, newton
            found["lines"] = {}
            for name, weights in lines.items():
                scan.form(slots, pool, weights)
                found["lines"][name] = {
                    "weights": weights,
                    "losses": {str(a): scan.loss_at(a) for a in GRID},
                }
        found["labels"] = pool.labels
        raise Stop

    folder = MERGES / pool_name / "starts"
    folder.mkdir(parents=True, exist_ok=True)
    text = fw_recipe(POOLS[pool_name], 1, calib, folder, {}, pool_tasks(pool_name))
    config = MergeConfiguration.model_validate(yaml.safe_load(text))
    runner.build_start = starts
    try:
        runner.prepare(config, MergeOptions(quiet=True))
    except Stop:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default="all8")
    parser.add_argument("--calib-per-task", type=int, default=16)
    args = parser.parse_args()
    lm.threads()
    found = measure(args.pool, args.calib_per_task)
    out = lm.RESULTS / "starts.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old[f"{args.pool}@{args.calib_per_task}"] = found
    out.write_text(json.dumps(old, indent=1) + "\n")
    best = min(found["init_auto"], key=lambda e: e["loss"])
    print(f"init: auto start {best['start']}: {best['loss']:.3f} (base {found['f0']:.3f})")
    for name, line in found["lines"].items():
        lam, value = min(line["losses"].items(), key=lambda kv: kv[1])
        print(f"{name} line: best {value:.3f} at {lam}")


if __name__ == "__main__":
    main()
