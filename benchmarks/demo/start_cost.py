"""Cost of the start: `init: ties` and `init: auto` (the default) against `init: base`, side
by side in one process, on two pools: the demo zoo (4 experts, ~24k parameters) and the
re-routing zoo at 16 experts (0.68M parameters, 4 x 100 calibration samples; built by
`python -m benchmarks.run --only zoo`, skipped if absent). Per run: the start vertex's bytes
in memory and the seconds to choose and compute it, and the whole run's seconds. FW takes
no step (tolerance above any gap), so the difference between runs is the start.

    PYTHONPATH=. python -m benchmarks.demo.start_cost    # writes benchmarks/results/start_cost.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

from benchmarks.common import RESULTS_DIR  # noqa: E402
from mergekit_fw.cli import demo  # noqa: E402
from mergekit_fw.mergekit import runner  # noqa: E402

EXPERTS = ["reverse", "add", "count", "sort"]
RUNS = {  # name -> the recipe's init keys; the ratios are to base
    "base": {"init": "base"},
    "ties": {"init": "ties", "init_density": 0.5, "init_weight": 1.0},
    "auto": {"init": "auto"},  # the default: base, 6 task-arithmetic starts, 3 TIES merges
}
NO_STEP = {"iterations": 1, "tolerance": 1e9}


def demo_recipe() -> dict:
    demo.build()
    return {
        "merge_method": "frank_wolfe", "base_model": str(demo.ROOT / "base"), "dtype": "float32",
        "models": [{"model": str(demo.ROOT / f"expert_{e}")} for e in EXPERTS],
        "parameters": {"calibration": str(demo.ROOT / "calib.yaml"), **NO_STEP},
    }  # fmt: skip


def rzoo_recipe() -> dict | None:
    from benchmarks.zoo.build import ZOO

    if not (ZOO / "zoo.json").exists():
        return None
    from benchmarks.zoo.bench import pools
    from benchmarks.zoo.merge import Zoo, fw_recipe

    pool, tasks = pools("irrelevance", 16)
    return fw_recipe(Zoo(), pool, tasks, NO_STEP)


def run(recipe: dict, init: dict, out: Path) -> tuple[float, str | None]:
    """(seconds of the whole run, the start init: auto chose)."""
    recipe = {**recipe, "parameters": {**recipe["parameters"], **init}}
    started = time.perf_counter()
    runner.run_fw_merge(
        MergeConfiguration.model_validate(recipe), str(out), MergeOptions(quiet=True)
    )
    seconds = time.perf_counter() - started
    table = json.loads((out / "fw_plan.json").read_text()).get("init_table") or []
    shutil.rmtree(out, ignore_errors=True)
    return seconds, next((row["start"] for row in table if row.get("chosen")), None)


def measure(recipe: dict, work: Path) -> dict:
    starts: dict = {}
    current = {"name": ""}
    original = runner.build_start

    def timed(fw_recipe, *args, **kwargs):
        started = time.perf_counter()
        result = original(fw_recipe, *args, **kwargs)
        starts[current["name"]] = {
            "start_seconds": time.perf_counter() - started,
            "start_bytes": fw_recipe.start.nbytes() if fw_recipe.start is not None else 0,
        }
        return result

    runner.build_start = timed
    try:
        run(recipe, RUNS["base"], work / "warm-up")  # first-run costs (imports, caches)
        seconds, chosen = {}, {}
        for name, init in RUNS.items():
            current["name"] = name
            seconds[name], chosen[name] = run(recipe, init, work / name)
    finally:
        runner.build_start = original
    base = Path(recipe["base_model"])
    return {
        "candidates": len(recipe["models"]),
        "run_seconds": seconds,
        "run_ratio_to_base": {name: s / seconds["base"] for name, s in seconds.items()},
        "starts": starts,  # init: base builds no start (no entry)
        "auto_chose": chosen["auto"],
        "base_safetensors_bytes": sum(p.stat().st_size for p in base.glob("*.safetensors")),
    }


def main() -> None:
    logging.getLogger("mergekit_fw").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="fw_start_cost_"))
    result = {}
    try:
        for name, recipe in (("demo zoo", demo_recipe()), ("re-routing zoo", rzoo_recipe())):
            if recipe is not None:
                result[name] = measure(recipe, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "start_cost.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
