"""`make demo`: from nothing to a Frank-Wolfe merge with the stock `mergekit-yaml`.

Builds a tiny zoo in .demo/ (base + experts for reverse, add, count, sort), calibration
data for two target tasks (reverse, add), then merges with FW (recipe defaults, and over the
paper's hull), with task arithmetic and with TIES (stock mergekit; density chosen on the
calibration loss from a small grid), and prints every model's held-out loss on the targets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from mergekit_fw.cli import toy

ROOT = Path(".demo")
TARGETS = ["reverse", "add"]
EXPERTS = ["reverse", "add", "count", "sort"]
TIES_DENSITIES = [0.3, 0.5, 0.7, 0.9]
TABLES_FILE = ROOT / "demo_tables.md"


def build() -> None:
    if not (ROOT / "base" / "config.json").exists():
        print("building the tiny zoo in .demo/ ...", flush=True)
        toy.build_zoo(ROOT, EXPERTS)
    for task in TARGETS:
        toy.write_jsonl(ROOT / f"calib_{task}.jsonl", toy.task_records(task, 32, seed=1000))
        toy.write_jsonl(ROOT / f"test_{task}.jsonl", toy.task_records(task, 100, seed=2000))
    manifest = "tasks:\n" + "".join(f"  {t}: calib_{t}.jsonl\n" for t in TARGETS)
    (ROOT / "calib.yaml").write_text(manifest)


def merge(recipe: str, out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).with_name("mergekit-yaml")
    started = time.perf_counter()
    subprocess.run([str(exe), recipe, str(out)], check=True)
    return time.perf_counter() - started


def write_recipe(path: Path, recipe: dict) -> str:
    import yaml

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def ties_recipe(density: float) -> dict:
    """Stock mergekit TIES over the demo pool (weight 1 each, mergekit's normalisation)."""
    return {
        "merge_method": "ties",
        "base_model": str(ROOT / "base"),
        "models": [
            {"model": str(ROOT / f"expert_{e}"), "parameters": {"density": density, "weight": 1.0}}
            for e in EXPERTS
        ],
        "dtype": "float32",
    }


def hull_recipe() -> dict:
    """fw_tiny.yaml over the paper's set, conv{base, experts} (`constraint: hull`), from
    the base (`init: base`)."""
    import yaml

    recipe = yaml.safe_load(Path("examples/yaml/fw_tiny.yaml").read_text())
    recipe["parameters"]["constraint"] = "hull"
    recipe["parameters"]["init"] = "base"  # the paper's Algorithm 1 starts at the base
    return recipe


def best_ties(reuse: bool = False) -> tuple[float, Path, float]:
    """TIES at each density of the grid; the one with the lowest calibration loss wins.
    `reuse` keeps merges already written (benchmarks/demo/constraints.py)."""
    results = []
    for density in TIES_DENSITIES:
        recipe = write_recipe(ROOT / f"ties_d{density}.yaml", ties_recipe(density))
        out = ROOT / "out" / f"ties_d{density}"
        done = reuse and (out / "model.safetensors").exists()
        seconds = 0.0 if done else merge(recipe, out)
        loss = sum(calibration_loss(str(out), t) for t in TARGETS) / len(TARGETS)
        print(f"   TIES density {density}: calibration loss {loss:.4f}", flush=True)
        results.append((loss, density, out, seconds))
    loss, density, out, seconds = min(results)
    return density, out, seconds


def calibration_loss(path: str, task: str) -> float:
    return held_out_loss(path, task, split="calib")


def held_out_loss(path: str, task: str, split: str = "test") -> float:
    """Mean response-token cross-entropy on samples the calibration never saw."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.data.calibration import load_calibration
    from mergekit_fw.fw.objectives import CausalLMObjective, evaluate

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    calib = load_calibration(str(ROOT / f"{split}_{task}.jsonl"), tok, 64)
    batches = make_batches(calib, 50, tok.pad_token_id, "cpu", reduction="token")
    return evaluate(model, CausalLMObjective(), batches, [task], grad=False, quiet=True).total


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.disable_progress_bar()
    started = time.perf_counter()
    build()
    print(
        "\n== Frank-Wolfe merge with the stock CLI: mergekit-yaml examples/yaml/fw_tiny.yaml .demo/out/fw",
        flush=True,
    )
    fw_seconds = merge("examples/yaml/fw_tiny.yaml", ROOT / "out" / "fw")
    print(
        "\n== task arithmetic for reference: mergekit-yaml examples/yaml/ta_tiny.yaml .demo/out/ta",
        flush=True,
    )
    ta_seconds = merge("examples/yaml/ta_tiny.yaml", ROOT / "out" / "ta")
    print(
        f"\n== TIES (stock mergekit), density from {TIES_DENSITIES} by calibration loss: "
        f"mergekit-yaml {ROOT}/ties_d*.yaml",
        flush=True,
    )
    density, ties_out, _ = best_ties()
    print(
        "\n== Frank-Wolfe over the paper's hull for comparison: mergekit-yaml "
        f"{ROOT}/fw_hull.yaml {ROOT}/out/fw_hull",
        flush=True,
    )
    merge(write_recipe(ROOT / "fw_hull.yaml", hull_recipe()), ROOT / "out" / "fw_hull")
    rows = [("base", str(ROOT / "base"))]
    rows += [(f"expert_{e}", str(ROOT / f"expert_{e}")) for e in EXPERTS]
    rows += [
        ("task arithmetic", str(ROOT / "out" / "ta")),
        (f"TIES (density {density})", str(ties_out)),
        ("frank-wolfe, hull (paper)", str(ROOT / "out" / "fw_hull")),
        ("frank-wolfe (defaults)", str(ROOT / "out" / "fw")),
    ]
    title = (
        "Held-out loss on the target tasks (100 unseen samples each; calibration used 32 "
        "others; lower is better):"
    )
    table = ["| model | " + " | ".join(TARGETS) + " | mean |", "|" + "---|" * (len(TARGETS) + 2)]
    print(f"\n{title}\n")
    for name, path in rows:
        losses = [held_out_loss(path, t) for t in TARGETS]
        cells = " | ".join(f"{loss:.3f}" for loss in losses)
        table.append(f"| {name} | {cells} | {sum(losses) / len(losses):.3f} |")
        print(table[-1], flush=True)
    print(
        f"\nmerge wall time: frank-wolfe {fw_seconds:.1f} s, task arithmetic {ta_seconds:.1f} s "
        f"(ratio {fw_seconds / ta_seconds:.1f}); demo total {time.perf_counter() - started:.0f} s"
    )
    print("FW plan, plots and model card: .demo/out/fw/ (fw_plan.json, README.md)")
    eval_table = lm_eval_table(rows)
    write_tables(table, eval_table)


def build_line() -> str:
    """What produced the numbers: they depend on the torch build and the CPU, not on time."""
    import platform

    import transformers

    return (
        f"torch {torch.__version__}, transformers {transformers.__version__}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads"
    )


def write_tables(loss_table: list[str], eval_table: list[str] | None) -> None:
    """TABLES_FILE: both tables as markdown, for `make readme-tables` to copy into README."""
    parts = [
        f"Output of `make demo` ({build_line()}).",
        "",
        "Held-out response loss (100 unseen samples per task, lower is better):",
        "",
        *loss_table,
    ]
    if eval_table:
        parts += ["", "lm-eval-harness on the offline toy tasks (`--limit 50`):", "", *eval_table]
    TABLES_FILE.write_text("\n".join(parts) + "\n", encoding="utf-8")
    print(f"\nTables written to {TABLES_FILE} (make readme-tables copies them into README.md)")


def lm_eval_table(rows: list[tuple[str, str]]) -> list[str] | None:
    """The same comparison scored by lm-eval-harness on the shipped offline toy tasks."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        print("\n(lm-eval is not installed: pip install '.[eval]' for the lm-eval table)")
        return None
    command = [
        str(Path(sys.executable).with_name("mergekit-fw")), "eval", str(ROOT / "out" / "fw"),
        "--tasks", ",".join(f"toy_{t}" for t in TARGETS),
        "--include-path", "examples/lm_eval_tasks", "--limit", "50", "--device", "cpu",
        "--no-auto-compare",
    ]  # fmt: skip
    for _name, path in rows[:-1]:
        command += ["--compare", path]
    print(
        "\n== lm-eval-harness on the offline toy tasks: mergekit-fw eval .demo/out/fw ...",
        flush=True,
    )
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(result.stdout)
    return [line for line in result.stdout.splitlines() if line.startswith("|")]


if __name__ == "__main__":
    main()
