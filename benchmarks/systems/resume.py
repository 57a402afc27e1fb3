"""Resume: the cost of saving the pre-pass state after every iteration, and real SIGKILLs.

1. Overhead: the pre-pass (check + compute_plan) with and without the per-iteration state
   save (fingerprint included), `REPEATS` alternating runs each; the ratio of the medians.
2. Kill and resume: `mergekit-fw run` in a subprocess, SIGKILLed once its saved state reaches
   iteration k (k = 1, 2, 3), then the same command again; `cmp` of model.safetensors against
   an uninterrupted run.
3. Why theta is saved: max |sum_k c_k theta_k - theta| over the saved iterate.

    python -m benchmarks.systems.resume          # writes docs/benchmarks_resume.md
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import DOCS
from mergekit_fw.cli import toy

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PARTS = os.environ.get("BENCH_PARTS", "overhead,kill,gap").split(",")
HIDDEN = int(os.environ.get("BENCH_HIDDEN", "64"))
LAYERS = int(os.environ.get("BENCH_LAYERS", "4"))
ITERATIONS = 6
EXPERTS = ["reverse", "add", "count", "sort"]
CLI = str(Path(sys.executable).with_name("mergekit-fw"))


def build(root: Path) -> tuple[Path, dict]:
    zoo = toy.build_zoo(
        root, EXPERTS, base_steps=100, expert_steps=50, hidden=HIDDEN, layers=LAYERS
    )
    calib = root / "calib.jsonl"
    records = [r for task in EXPERTS for r in toy.task_records(task, 16, seed=999)]
    toy.write_jsonl(calib, records)
    recipe = {
        "merge_method": "frank_wolfe",
        "base_model": zoo["base"],
        "models": [{"model": zoo[e]} for e in EXPERTS],
        "dtype": "float32",
        "parameters": {"calibration": str(calib), "iterations": ITERATIONS},
    }
    path = root / "fw.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path, zoo


def prepass_seconds(recipe_path: Path, state: Path | None) -> float:
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.checks import check_recipe
    from mergekit_fw.mergekit.resume import Checkpointer, run_fingerprint
    from mergekit_fw.mergekit.runner import compute_plan

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe_path.read_text()))
    options = MergeOptions(quiet=True)
    started = time.perf_counter()
    recipe = check_recipe(config)
    checkpoint = None
    if state is not None:
        fingerprint = run_fingerprint(recipe, config, torch.device("cpu"))
        checkpoint = Checkpointer(state, fingerprint, resume=False)
    compute_plan(recipe, config, options, checkpoint)
    return time.perf_counter() - started


def overhead(recipe: Path, root: Path) -> dict:
    without, with_state = [], []
    for i in range(REPEATS):  # alternate, so load drift hits both alike
        without.append(prepass_seconds(recipe, None))
        with_state.append(prepass_seconds(recipe, root / f"state{i}"))
    state_bytes = sum(f.stat().st_size for f in (root / "state0").iterdir())
    return {
        "without_s": without,
        "with_s": with_state,
        "ratio": statistics.median(with_state) / statistics.median(without),
        "state_bytes": state_bytes,
    }


def cli_run(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CLI, "run", str(recipe), str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill_at(recipe: Path, out: Path, k: int) -> int:
    """Start a run, SIGKILL it once its state reaches iteration k; the saved next_t."""
    state = Path(str(out) + ".fw-state") / "state.json"
    process = cli_run(recipe, out)
    while process.poll() is None:
        if state.exists():
            try:
                if json.loads(state.read_text())["next_t"] >= k:
                    os.kill(process.pid, signal.SIGKILL)
                    break
            except (ValueError, KeyError):
                pass
        time.sleep(0.02)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the run ended before iteration {k}: {process.returncode}")
    return json.loads(state.read_text())["next_t"]


def kill_and_resume(recipe: Path, root: Path) -> list[dict]:
    reference = root / "uninterrupted"
    done = cli_run(recipe, reference)
    _, err = done.communicate()
    assert done.returncode == 0, err[-2000:]
    rows = []
    for k in (1, 2, 3):
        out = root / f"killed{k}"
        saved = kill_at(recipe, out, k)
        resumed = cli_run(recipe, out)
        _, err = resumed.communicate()
        assert resumed.returncode == 0, err[-2000:]
        cmp = subprocess.run(
            ["cmp", str(reference / "model.safetensors"), str(out / "model.safetensors")],
            capture_output=True, text=True,
        )  # fmt: skip
        rows.append({
            "killed_at": k, "resumed_from": saved, "resume_logged": f"at iteration {saved}" in err,
            "cmp_status": cmp.returncode, "cmp_output": cmp.stdout.strip(),
        })  # fmt: skip
    return rows


def recompute_gap(recipe: Path, root: Path) -> float:
    """max |sum_k c_k theta_k - theta| of a state saved after iteration 3."""
    from safetensors.torch import load_file

    from mergekit_fw.fw import state as loop_state

    out = root / "gap"
    kill_at(recipe, out, 3)
    state, fingerprint = loop_state.load(Path(str(out) + ".fw-state"))
    paths = list(fingerprint["models"])
    vertices = [load_file(str(Path(p) / "model.safetensors")) for p in paths]
    worst = 0.0
    for i, (name, theta) in enumerate(state.theta.items()):
        rebuilt = torch.zeros_like(theta)
        for k, vertex in enumerate(vertices):
            rebuilt.add_(vertex[name], alpha=float(state.coefficients[i, k]))
        worst = max(worst, float((rebuilt - theta).abs().max()))
    return worst


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe, _ = build(root)
        result = {}
        if "overhead" in PARTS:
            result["overhead"] = overhead(recipe, root)
        if "kill" in PARTS:
            result["kill_and_resume"] = kill_and_resume(recipe, root)
        if "gap" in PARTS:
            result["recompute_max_abs_diff"] = recompute_gap(recipe, root)
    print(json.dumps(result, indent=1))
    write_doc(result)


def write_doc(result: dict) -> None:
    lines = [
        "# Resume: state-saving overhead and kill-and-resume",
        "",
        f"Generated by `BENCH_PARTS={','.join(PARTS)} BENCH_REPEATS={REPEATS} BENCH_HIDDEN={HIDDEN} "
        f"BENCH_LAYERS={LAYERS} python -m benchmarks.systems.resume` (toy zoo: base + 4 experts;",
        f"{ITERATIONS} hard FW iterations with line search, CPU, {REPEATS} alternating runs each).",
        "",
    ]
    if "overhead" in result:
        lines += overhead_lines(result["overhead"])
    if "kill_and_resume" in result:
        lines += kill_lines(result["kill_and_resume"])
    if "recompute_max_abs_diff" in result:
        lines += [
            "Recomputing theta from the saved coefficients (sum_k c_k theta_k) instead of saving "
            f"it: max abs difference {result['recompute_max_abs_diff']:.3g} from the iterate.",
            "",
        ]
    (DOCS / "benchmarks_resume.md").write_text("\n".join(lines))


def overhead_lines(o: dict) -> list[str]:
    return [
        "| pre-pass | runs (s) | median (s) |",
        "|---|---|---|",
        f"| without state | {', '.join(f'{s:.2f}' for s in o['without_s'])} | {statistics.median(o['without_s']):.2f} |",
        f"| with state after every iteration | {', '.join(f'{s:.2f}' for s in o['with_s'])} | {statistics.median(o['with_s']):.2f} |",
        "",
        f"Ratio of the medians: **{o['ratio']:.3f}**; state on disk: {o['state_bytes']} bytes.",
        "",
    ]


def kill_lines(rows: list[dict]) -> list[str]:
    lines = [
        "Real SIGKILL of `mergekit-fw run`, then the same command again, against an uninterrupted run:",
        "",
        "| killed once the state reached | resumed from iteration | resume logged | `cmp` exit status |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['killed_at']} | {row['resumed_from']} | {row['resume_logged']} | "
            f"{row['cmp_status']} {row['cmp_output']} |"
        )
    return lines + [""]


if __name__ == "__main__":
    main()
