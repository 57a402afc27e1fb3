"""reduction: a task's loss as a mean per sample of its summed NLL (sequence, the default),
per target token (token) or per sample of its mean token NLL (sample_mean, the authors' code)."""

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


class Ramp(torch.nn.Module):
    """The target token's logit grows along the sequence: each position costs differently."""

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        logits = torch.zeros(*input_ids.shape, V)
        logits[..., 1] = 0.5 * torch.arange(input_ids.shape[1], dtype=torch.float32)
        return SimpleNamespace(logits=logits)


def ramp_nll(position: int) -> float:
    """NLL of the target predicted at `position` (logit 0.5 * position against 3 zeros)."""
    return math.log(3 + math.exp(0.5 * position)) - 0.5 * position


def brute_force(calib: CalibrationSet, reduction: str) -> float:
    task_losses = []
    for task in calib.tasks:
        per_sample = []  # (summed NLL, targets) of each sample
        for s in task.samples:
            nll = [ramp_nll(i - 1) for i, label in enumerate(s.labels) if i and label >= 0]
            per_sample.append((sum(nll), len(nll)))
        if reduction == "token":
            task_losses.append(sum(a for a, _ in per_sample) / sum(n for _, n in per_sample))
        elif reduction == "sequence":
            task_losses.append(sum(a for a, _ in per_sample) / len(per_sample))
        else:  # sample_mean: the authors' code
            task_losses.append(sum(a / n for a, n in per_sample) / len(per_sample))
    return sum(task_losses) / len(task_losses)


@pytest.mark.parametrize("reduction", ["token", "sequence", "sample_mean"])
def test_every_reduction_matches_brute_force_on_the_recipe_and_the_api_path(reduction):
    from mergekit_fw.data.user_batches import named_batches

    calib = calibration()
    expected = brute_force(calib, reduction)
    batches = make_batches(calib, 8, 0, "cpu", reduction)
    names = ["short", "long"]
    recipe = evaluate(Ramp(), CausalLMObjective(), batches, names, grad=False, quiet=True)
    assert recipe.total == pytest.approx(expected)
    data = {name: [] for name in names}  # the same padded batches as a user's dict batches
    for b in batches:
        data[names[b.task]].append({"input_ids": b.input_ids, "attention_mask": b.attention_mask,
                                    "labels": b.labels})  # fmt: skip
    api = named_batches(data, False, "cpu", reduction)
    report = evaluate(Ramp(), CausalLMObjective(), api, names, grad=False, quiet=True)
    assert report.total == pytest.approx(expected)
    if reduction != "token":  # the three differ on this data
        other = brute_force(calib, "token")
        assert abs(expected - other) > 1e-3


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction must be one of"):
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


@pytest.mark.slow
def test_one_task_gives_the_same_merge_several_tasks_are_reweighted(zoo):
    one = f"{zoo['calib']}/reverse.jsonl"
    token, sequence = _plan(zoo, one, "token"), _plan(zoo, one, "sequence")
    for name, row in token.coefficients.items():  # a constant factor: the same steps
        assert sequence.coefficients[name] == pytest.approx(row, abs=1e-6), name
    assert sequence.final_loss > token.final_loss  # a sum over a sample's tokens, not a mean

    two = f"{zoo['calib']}/two_tasks.yaml"
    token, sequence = _plan(zoo, two, "token"), _plan(zoo, two, "sequence")
    assert token.settings.reduction == "token"
    differ = [n for n, row in token.coefficients.items()
              if sequence.coefficients[n] != pytest.approx(row, abs=1e-6)]  # fmt: skip
    assert differ, "two tasks of different target lengths should weigh differently"
