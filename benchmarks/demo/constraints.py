"""Constraint sets on the `make demo` zoo: hull (the paper), box and simplex, against TIES.

    python -m benchmarks.demo.constraints [--all]   # writes benchmarks/results/constraints_demo.md

Same pool, calibration and held-out samples as `make demo` (mergekit_fw/cli/demo.py); each
FW row is examples/yaml/fw_tiny.yaml with `constraint:` (and `scale:`) set, merged by the
stock mergekit-yaml. Lower held-out loss is better.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from benchmarks.common import RESULTS_DIR
from mergekit_fw.cli import demo

VARIANTS = {
    "hull (paper)": {"constraint": "hull"},
    "box, scale 1": {"constraint": "box", "scale": 1.0},
}
MORE = {  # --all: also these (each FW merge takes minutes on a busy CPU)
    "box, scale 0.5": {"constraint": "box", "scale": 0.5},
    "simplex, scale 1": {"constraint": "simplex", "scale": 1.0},
}
RESULTS = RESULTS_DIR / "constraints_demo.md"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    demo.build()
    rows = [("base", str(demo.ROOT / "base"))]
    rows += [(f"expert_{e}", str(demo.ROOT / f"expert_{e}")) for e in demo.EXPERTS]
    ta_out = demo.ROOT / "out" / "ta"
    if not (ta_out / "model.safetensors").exists():
        demo.merge("examples/yaml/ta_tiny.yaml", ta_out)
    rows.append(("task arithmetic (examples/yaml/ta_tiny.yaml)", str(ta_out)))
    density, ties_out, _ = demo.best_ties(reuse=True)
    rows.append((f"TIES (density {density}, by calibration loss)", str(ties_out)))
    base_recipe = yaml.safe_load(Path("examples/yaml/fw_tiny.yaml").read_text())
    variants = {**VARIANTS, **(MORE if "--all" in sys.argv else {})}
    for name, options in variants.items():
        recipe = {**base_recipe, "parameters": {**base_recipe["parameters"], **options}}
        slug = name.split(" (")[0].replace(", ", "_").replace(" ", "")
        path = demo.write_recipe(demo.ROOT / f"fw_{slug}.yaml", recipe)
        out = demo.ROOT / "out" / f"fw_{slug}"
        if not (out / "fw_plan.json").exists():  # a finished FW merge (written last)
            demo.merge(path, out)
        rows.append((f"FW {name}", str(out)))
    lines = [
        "| model | " + " | ".join(demo.TARGETS) + " | mean |",
        "|" + "---|" * (len(demo.TARGETS) + 2),
    ]
    for name, path in rows:
        losses = [demo.held_out_loss(path, t) for t in demo.TARGETS]
        cells = " | ".join(f"{loss:.3f}" for loss in losses)
        lines.append(f"| {name} | {cells} | {sum(losses) / len(losses):.3f} |")
    text = (
        "Held-out loss on the demo's target tasks (100 unseen samples each; lower is better),\n"
        "from `python -m benchmarks.demo.constraints`:\n\n" + "\n".join(lines) + "\n"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
