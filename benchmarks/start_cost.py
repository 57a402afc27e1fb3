"""Cost of a mergekit start on the demo zoo (4 experts): the start vertex's bytes in memory
and the time to compute it, vs the model's own bytes; and the same run's total time from
init: base. FW takes no step (tolerance above any gap), so the difference is the start.

    PYTHONPATH=. python -m benchmarks.start_cost    # writes benchmarks/results/start_cost.json
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

from mergekit_fw.cli import demo  # noqa: E402
from mergekit_fw.mergekit import runner  # noqa: E402

EXPERTS = ["reverse", "add", "count", "sort"]


def run(init: dict, out: Path) -> float:
    recipe = {
        "merge_method": "frank_wolfe",
        "base_model": str(demo.ROOT / "base"),
        "models": [{"model": str(demo.ROOT / f"expert_{e}")} for e in EXPERTS],
        "dtype": "float32",
        "parameters": {
            "calibration": str(demo.ROOT / "calib.yaml"), "iterations": 1, "tolerance": 1e9,
            **init,
        },
    }  # fmt: skip
    started = time.perf_counter()
    runner.run_fw_merge(
        MergeConfiguration.model_validate(recipe), str(out), MergeOptions(quiet=True)
    )
    return time.perf_counter() - started


def main() -> None:
    demo.build()
    captured: dict = {}
    original = runner.build_start

    def timed(recipe, *args, **kwargs):
        started = time.perf_counter()
        result = original(recipe, *args, **kwargs)
        captured["start_seconds"] = time.perf_counter() - started
        captured["start_bytes"] = recipe.start.nbytes() if recipe.start is not None else 0
        return result

    runner.build_start = timed
    logging.getLogger("mergekit_fw").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="fw_start_cost_"))
    try:
        base_seconds = run({}, work / "base")
        ties_seconds = run({"init": "ties", "init_density": 0.5, "init_weight": 1.0}, work / "ties")
        model_bytes = sum(p.stat().st_size for p in (demo.ROOT / "base").glob("*.safetensors"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "candidates": len(EXPERTS),
        "base_run_seconds": base_seconds,
        "ties_run_seconds": ties_seconds,
        **captured,
        "base_safetensors_bytes": model_bytes,
    }
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/start_cost.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
