"""Shared by every tier: where things live, the thread count, results files.

- CACHE (`benchmarks/.cache/`, or BENCH_CACHE): models, merges and raw per-run rows; gitignored
  and rebuildable by the tier's own command.
- RESULTS_DIR (`benchmarks/results/`): the small files docs/benchmarks.md is rendered from
  (`python -m benchmarks.report`); committed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("BENCH_CACHE") or ROOT / ".cache")  # override: timing a rebuild
RESULTS_DIR = ROOT / "results"
DOCS = ROOT.parent / "docs"


def threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


def load_result(name: str) -> dict | None:
    """benchmarks/results/NAME as JSON, or None if it is not there."""
    path = RESULTS_DIR / name
    return json.loads(path.read_text()) if path.exists() else None


def save_result(name: str, data: dict) -> Path:
    """Write benchmarks/results/NAME (JSON, indented, one trailing newline)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
