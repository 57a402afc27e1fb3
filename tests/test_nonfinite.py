"""NaN and Inf: in a candidate, the loss or a gradient, each a clear error before any output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions

import mergekit_fw.fw.loop
from mergekit_fw.cli import toy
from mergekit_fw.fw.finite import NonFiniteError
from mergekit_fw.fw.objectives import LossReport
from mergekit_fw.mergekit.resume import state_folder
from tests.helpers import write_recipe

POISONED = "model.layers.0.mlp.up_proj.weight"


def run(recipe: Path, out: Path) -> None:
    from mergekit.merge import run_merge

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(config, str(out), MergeOptions(quiet=True))


@pytest.fixture(scope="module", params=["nan", "inf"])
def poisoned(request, zoo, tmp_path_factory) -> str:
    """The `add` expert with one NaN (or Inf) in one tensor."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(zoo["add"])
    with torch.no_grad():
        model.get_parameter(POISONED)[3, 5] = float(request.param)
    path = tmp_path_factory.mktemp("poisoned") / f"add_{request.param}"
    return toy.save(model, toy.build_tokenizer(), path)


@pytest.mark.parametrize("init", ["base", "task_arithmetic"])
def test_a_candidate_with_nan_or_inf_is_named_with_its_tensor(poisoned, init, zoo, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["reverse"], poisoned],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2, init=init,
    )  # fmt: skip
    label = Path(poisoned).name
    with pytest.raises(NonFiniteError, match=rf"Candidate {label} has NaN or Inf .* {POISONED}"):
        run(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not state_folder(tmp_path / "out").exists()


def test_a_nan_loss_names_the_iteration_and_the_task(zoo, tmp_path, monkeypatch):
    original = mergekit_fw.fw.loop.evaluate
    calls = {"gradient": 0}

    def evaluate(model, objective, batches, names, grad, desc, quiet):
        report = original(model, objective, batches, names, grad=grad, desc=desc, quiet=quiet)
        if grad:
            calls["gradient"] += 1
            if calls["gradient"] == 2:  # the gradient pass of iteration 1
                per_task = dict(report.per_task, add=float("nan"))
                return LossReport(total=float("nan"), per_task=per_task)
        return report

    monkeypatch.setattr(mergekit_fw.fw.loop, "evaluate", evaluate)
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=3, step="constant",
        step_size=0.5,
    )  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"loss is nan at FW iteration 1, on task\(s\) add"):
        run(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_nan_gradient_names_the_tensor(zoo, tmp_path, monkeypatch):
    original = mergekit_fw.fw.loop.FrankWolfe.loss

    def loss(self, grad, desc):
        report = original(self, grad, desc)
        if grad:
            self.slots[2].param.grad[0].fill_(float("inf"))
        return report

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "loss", loss)
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"The gradient of tensor \S+ has NaN or Inf"):
        run(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_saved_plan_never_writes_a_nan_tensor(poisoned, zoo, tmp_path):
    """Writing from a plan reads no gradients, so the write phase itself checks each tensor."""
    from mergekit_fw.mergekit.streaming import combine
    from mergekit_fw.pool.vertices import VertexPool

    refs = [MergeConfiguration.model_validate(
        {"merge_method": "linear", "models": [{"model": p}]}).models[0].model
        for p in (zoo["base"], poisoned)]  # fmt: skip
    pool = VertexPool(refs, torch.device("cpu"), torch.float32)
    assert torch.isfinite(combine(pool, [1.0, 0.0], POISONED)).all()  # c = 0: not read
    with pytest.raises(NonFiniteError, match=rf"{POISONED}.*NaN or Inf"):
        combine(pool, [0.5, 0.5], POISONED)
