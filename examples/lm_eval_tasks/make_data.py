"""Regenerate data/toy_<task>.jsonl: held-out prompt/response pairs for the toy zoo.

Seed 2025 is used by nothing else (the zoo trains on seeds 0-5 and 100-105, the demo
calibrates on 999), so these are fresh draws of the same distributions.
"""

from __future__ import annotations

from pathlib import Path

from mergekit_fw.cli import toy

SEED = 2025
N = 100


def main() -> None:
    data = Path(__file__).resolve().parent / "data"
    data.mkdir(exist_ok=True)
    for task in toy.TASKS:
        toy.write_jsonl(data / f"toy_{task}.jsonl", toy.task_records(task, N, seed=SEED))


if __name__ == "__main__":
    main()
