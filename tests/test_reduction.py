"""reduction: a task's loss as a mean per sample (sequence, the default) or per target token."""

from __future__ import annotations

import math

import pytest
import torch
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions

from mergekit_fw.data.batches import make_batches
from mergekit_fw.data.calibration import CalibrationSet, CalibrationTask, Sample
from mergekit_fw.fw.objectives import IGNORE_INDEX, CausalLMObjective, evaluate
from mergekit_fw.mergekit.runner import prepare

V = 4  # vocabulary of the uniform model: every target token costs log 4


class Uniform(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, V))


def sample(targets: int, prompt: int = 2) -> Sample:
    # a prompt position predicts nothing (IGNORE_INDEX); label i is predicted from < i
    ids = list(range(prompt + targets))
    return Sample(ids, [IGNORE_INDEX] * prompt + [1] * targets)


def calibration() -> CalibrationSet:
    short = CalibrationTask("short", "short.jsonl", 1.0, [sample(1), sample(3)])
    long = CalibrationTask("long", "long.jsonl", 1.0, [sample(8)])
    return CalibrationSet([short, long])


@pytest.mark.parametrize(
    "reduction, short, long",
    [("token", 1.0, 1.0), ("sequence", 2.0, 8.0)],  # in units of log 4
)
def test_task_losses_are_means_per_token_or_per_sample(reduction, short, long):
    batches = make_batches(calibration(), 8, 0, "cpu", reduction)
    report = evaluate(Uniform(), CausalLMObjective(), batches, ["short", "long"], grad=False,
                      quiet=True)  # fmt: skip
    unit = math.log(V)
    assert report.per_task["short"] == pytest.approx(short * unit)
    assert report.per_task["long"] == pytest.approx(long * unit)
    assert report.total == pytest.approx((short + long) / 2 * unit)  # tasks weigh the same


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="token or sequence"):
        make_batches(calibration(), 8, 0, "cpu", "mean")


def _plan(zoo, calibration: str, reduction: str):
    cfg = MergeConfiguration.model_validate(
        {
            "merge_method": "frank_wolfe", "base_model": zoo["base"], "dtype": "float32",
            "models": [{"model": zoo["reverse"]}, {"model": zoo["add"]}],
            "parameters": {"calibration": calibration, "iterations": 3, "init": "base",
                           "reduction": reduction},
        }
    )  # fmt: skip
    return prepare(cfg, MergeOptions(quiet=True))


def test_one_task_gives_the_same_merge_several_tasks_are_reweighted(zoo):
    one = f"{zoo['calib']}/reverse.jsonl"
    token, sequence = _plan(zoo, one, "token"), _plan(zoo, one, "sequence")
    for name, row in token.coefficients.items():  # a constant factor: the same steps
        assert sequence.coefficients[name] == pytest.approx(row, abs=1e-6), name
    assert sequence.final_loss > token.final_loss  # a sum over a sample's tokens, not a mean

    two = f"{zoo['calib']}/two_tasks.yaml"
    token, sequence = _plan(zoo, two, "token"), _plan(zoo, two, "sequence")
    assert token.settings["reduction"] == "token"
    differ = [n for n, row in token.coefficients.items()
              if sequence.coefficients[n] != pytest.approx(row, abs=1e-6)]  # fmt: skip
    assert differ, "two tasks of different target lengths should weigh differently"
