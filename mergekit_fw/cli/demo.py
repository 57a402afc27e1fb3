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


def merge(recipe: str, out: Path, stock: bool = False) -> float:
    """mergekit-yaml RECIPE OUT; `stock`: a non-FW recipe, run with transformers' warnings
    off (mergekit 0.1.5 itself triggers "`torch_dtype` is deprecated!" in transformers 5;
    frank_wolfe runs drop exactly that message themselves, mergekit/host_warnings.py)."""
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).with_name("mergekit-yaml")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"} if stock else None
    started = time.perf_counter()
    subprocess.run([str(exe), recipe, str(out)], check=True, env=env)
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
        seconds = 0.0 if done else merge(recipe, out, stock=True)
        loss = sum(calibration_loss(str(out), t) for t in TARGETS) / len(TARGETS)
        print(
            f"   TIES density {density}: calibration loss {loss:.4f} nats/token (mean over "
            "both tasks' response tokens)",
            flush=True,
        )
        results.append((loss, density, out, seconds))
    loss, density, out, seconds = min(results)
    return density, out, seconds


def calibration_loss(path: str, task: str) -> float:
    return held_out_loss(path, task, split="calib")


def held_out_loss(path: str, task: str, split: str = "test") -> float:
    """Mean response-token cross-entropy (nats/token) on samples the calibration never saw."""
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
    ta_seconds = merge("examples/yaml/ta_tiny.yaml", ROOT / "out" / "ta", stock=True)
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
    print(f"\n{LOSS_TITLE}\n")
    table = ["| model | " + " | ".join(TARGETS) + " | mean |", "|" + "---|" * (len(TARGETS) + 2)]
    print(table[0], table[1], sep="\n", flush=True)
    losses: dict[str, list[float]] = {}
    for name, path in rows:
        losses[name] = [held_out_loss(path, t) for t in TARGETS]
        cells = " | ".join(f"{loss:.3f}" for loss in losses[name])
        table.append(f"| {name} | {cells} | {sum(losses[name]) / len(TARGETS):.3f} |")
        print(table[-1], flush=True)
    verdict = conclusion(losses)
    print("\n" + "\n".join(verdict))
    print(
        f"\nmerge wall time: frank-wolfe {fw_seconds:.1f} s, task arithmetic {ta_seconds:.1f} s "
        f"(ratio {fw_seconds / ta_seconds:.1f})"
    )
    print("FW plan, plots and model card: .demo/out/fw/ (fw_plan.json, README.md)")
    eval_table = lm_eval_table(rows)
    write_tables(table, eval_table, verdict)
    print(f"\ndemo total {time.perf_counter() - started:.0f} s (build, merges, tables, lm-eval)")


LOSS_TITLE = (
    "Held-out response loss in nats per response token (100 unseen samples per task; "
    "calibration used 32 others; lower is better):"
)
MARGIN = 0.05  # nats/token: differences below this are not claimed (they move with the build)


def conclusion(losses: dict[str, list[float]]) -> list[str]:
    """What this run's table shows, checked on its own numbers: only claims with a margin
    of at least MARGIN hold across torch / transformers builds; the order of the two FW
    sets (a few hundredths apart) is reported, not claimed."""
    mean = {name: sum(v) / len(v) for name, v in losses.items()}
    fw = {name: m for name, m in mean.items() if name.startswith("frank-wolfe")}
    data_free = {
        name: m for name, m in mean.items() if name in ("task arithmetic",) or "TIES" in name
    }
    lines = ["Conclusion, checked on this run's table:"]
    for i, task in enumerate(TARGETS):
        own = losses[f"expert_{task}"][i]
        others = [
            v[i] for n, v in losses.items() if n.startswith("expert_") and n != f"expert_{task}"
        ]
        held = own + MARGIN <= min(others)
        lines.append(
            f"- {'holds' if held else 'NOT on this run'}: expert_{task} is the best expert on "
            f"{task} ({own:.3f} against {min(others):.3f} or more) by at least {MARGIN}"
        )
    worst_fw, best_free = max(fw.values()), min(data_free.values())
    held = worst_fw + MARGIN <= best_free
    lines.append(
        f"- {'holds' if held else 'NOT on this run'}: both Frank-Wolfe merges have a lower mean "
        f"than every data-free merge ({worst_fw:.3f} or less, against {best_free:.3f} or more) "
        f"by at least {MARGIN}"
    )
    (a, ma), (b, mb) = sorted(fw.items(), key=lambda kv: kv[1])
    lines.append(
        f"- not claimed: {a} ({ma:.3f}) against {b} ({mb:.3f}); {abs(mb - ma):.3f} apart, an "
        "order that can flip with the torch / transformers build"
    )
    return lines


def build_line() -> str:
    """What produced the numbers: they depend on the torch build and the CPU, not on time."""
    import platform

    import transformers

    return (
        f"torch {torch.__version__}, transformers {transformers.__version__}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads"
    )


def write_tables(
    loss_table: list[str], eval_table: list[str] | None, verdict: list[str] | None = None
) -> None:
    """TABLES_FILE: both tables as markdown, for `make readme-tables` to copy into README."""
    parts = [
        f"Output of `make demo` ({build_line()}).",
        "",
        LOSS_TITLE,
        "",
        *loss_table,
    ]
    if verdict:
        parts += ["", *verdict]
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
