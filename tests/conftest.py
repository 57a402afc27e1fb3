"""Shared fixtures: a tiny seeded expert zoo and calibration files, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mergekit_fw.cli import toy  # noqa: E402

EXPERTS = ["reverse", "add", "count", "sort"]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict[str, str]:
    """base + one expert per task (char-level LLaMA, ~30k parameters each)."""
    root = tmp_path_factory.mktemp("zoo")
    paths = toy.build_zoo(root, EXPERTS, base_steps=200, expert_steps=100)
    calib = root / "calib"
    calib.mkdir()
    for task in EXPERTS:
        toy.write_jsonl(calib / f"{task}.jsonl", toy.task_records(task, 16, seed=999))
        toy.write_jsonl(calib / f"{task}_test.jsonl", toy.task_records(task, 32, seed=555))
    (calib / "two_tasks.yaml").write_text("tasks:\n  reverse: reverse.jsonl\n  add: add.jsonl\n")
    paths["calib"] = str(calib)
    paths["root"] = str(root)
    return paths


def write_recipe(path: Path, base: str, models: list[str], **parameters) -> Path:
    """A frank_wolfe recipe as a user would write it."""
    import yaml

    recipe = {
        "merge_method": "frank_wolfe",
        "base_model": base,
        "models": [{"model": m} for m in models],
        "dtype": "float32",
        "parameters": parameters,
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def noisy(zoo) -> str:
    """A candidate that only hurts: the base plus Gaussian noise on every tensor."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(zoo["base"])
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5 * p.std())
    path = Path(zoo["root"]) / "noisy"
    return toy.save(model, toy.build_tokenizer(), path)


def config(base, models, **params):
    """A frank_wolfe MergeConfiguration over local models (for prepare / run_fw_merge)."""
    from mergekit.config import MergeConfiguration

    return MergeConfiguration.model_validate(
        {
            "merge_method": "frank_wolfe",
            "base_model": base,
            "models": [{"model": m} for m in models],
            "dtype": "float32",
            "parameters": params,
        }
    )
