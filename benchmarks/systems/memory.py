"""Peak RSS against the number of candidates, each configuration in a fresh process
(`python -m benchmarks.run --only memory`). Finished cells accumulate in
.cache/results/memory.json (an interrupted run resumes); the finished table is copied to
benchmarks/results/memory.json, which docs/benchmarks.md is rendered from."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from benchmarks.common import CACHE, ROOT, save_result
from benchmarks.systems.bigmodel import build

RESULTS = CACHE / "results" / "memory.json"
SIZES = [2, 4, 8, 16]
MODES = ["fw", "fw_soft", "ties", "allmem"]


def run(sizes=SIZES, modes=MODES) -> dict:
    """Resumable: finished (mode, n) cells are kept in memory.json and skipped."""
    started = time.perf_counter()
    info = build(max(sizes))
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    rows = old["rows"]
    done = {(r["mode"], r["n"]) for r in rows}
    for n in sorted(sizes, key=lambda n: (n not in (min(sizes), max(sizes)), n)):
        for mode in modes:
            if (mode, n) in done:
                continue
            out = str(CACHE / "tmp_out" / f"{mode}_{n}")
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.systems.memchild", mode, str(n), out],
                cwd=str(ROOT.parent), capture_output=True, text=True, check=False,
            )  # fmt: skip
            lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"memchild {mode} {n} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(lines[-1])
            rows.append(row)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps({"params": info["params"], "rows": rows}, indent=1))
            print(f"memory {mode:6s} n={n:2d} peak {row['peak_rss'] / 2**20:7.0f} MiB "
                  f"(anon {row['peak_anon'] / 2**20:.0f}, file {row['peak_file'] / 2**20:.0f})"
                  f" {row['seconds']:.0f}s", flush=True)  # fmt: skip
    result = {
        "params": info["params"],
        "rows": rows,
        "seconds": old.get("seconds", 0.0) + time.perf_counter() - started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    save_result("memory.json", result)
    return result
