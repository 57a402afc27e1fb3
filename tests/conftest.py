"""Shared fixtures (a tiny seeded expert zoo and calibration files, built once per session;
LoRA adapters of its base) and the test tiers. Plain helpers are in tests/helpers.py.

Tiers (pyproject.toml registers the markers; no test is left without one, and none is both
unit and something else):
- slow: marked by hand; over ~10 s on the 2-core machine (subprocess merges, installs, the
  classifier zoo). `make test` only.
- e2e: marked by hand, or any test that needs a model-zoo fixture (MODEL_FIXTURES: the tiny
  LLaMA zoo here, test_api's toy ViT zoo): trained models, real merges. `make test` only.
- unit: everything else (toys, pure functions, parsing); `make test-fast` runs these.
"""

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


@pytest.fixture(scope="module")
def loras(zoo, tmp_path_factory) -> dict[str, str]:
    """The three adapters of helpers.ADAPTERS, trained briefly, and a manifest of them."""
    from tests.helpers import ADAPTERS, make_adapter, write_manifest

    root = tmp_path_factory.mktemp("loras")
    paths = {
        task: make_adapter(zoo["base"], root / f"lora_{task}", seed=i, task=task, **options)
        for i, (task, options) in enumerate(ADAPTERS.items())
    }
    paths["manifest"] = write_manifest(root / "adapters.yaml", [paths[t] for t in ADAPTERS])
    paths["root"] = str(root)
    return paths


MODEL_FIXTURES = {"zoo", "vit"}  # fixtures that train models: their tests are e2e


def pytest_collection_modifyitems(items):
    """Give every test one tier: its own `slow` or `e2e` mark, else e2e if it needs a model zoo
    (directly or through another fixture), else unit."""
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("e2e"):
            continue
        e2e = MODEL_FIXTURES & set(item.fixturenames)
        item.add_marker(pytest.mark.e2e if e2e else pytest.mark.unit)
