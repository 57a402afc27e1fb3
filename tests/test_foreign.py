"""Foreign candidates (mergekit/foreign.py): a model from another initialisation is left
out of the pool, named in the log, the plan and the card; `foreign: error` stops first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mergekit.options import MergeOptions
from safetensors.torch import load_file

import mergekit_fw.fw.loop
from mergekit_fw.cli import toy
from mergekit_fw.mergekit.runner import prepare
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWConfigError
from tests.helpers import config, mergekit_yaml, write_recipe


@pytest.fixture(scope="module")
def foreign(zoo, tmp_path_factory) -> str:
    """The base architecture from another seed, trained as briefly as the zoo's base."""
    tokenizer = toy.build_tokenizer()
    model = toy.make_model(seed=123)
    records = [r for t in toy.TASKS for r in toy.task_records(t, 50, seed=7)]
    toy.train(model, tokenizer, records, steps=30, lr=3e-3, seed=5)
    return toy.save(model, tokenizer, tmp_path_factory.mktemp("foreign") / "other_seed")


def dense_distance(base: str, model: str) -> float:
    a, b = load_file(Path(base) / "model.safetensors"), load_file(Path(model) / "model.safetensors")
    diff = sum(float(((b[k].double() - a[k].double()) ** 2).sum()) for k in a)
    return (diff / sum(float((a[k].double() ** 2).sum()) for k in a)) ** 0.5


@pytest.fixture(scope="module")
def excluded_merge(zoo, foreign, tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign_merge")
    recipe = write_recipe(
        root / "fw.yaml", zoo["base"], [zoo["reverse"], foreign, zoo["add"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=2, constraint="box",
    )  # fmt: skip
    result = mergekit_yaml(recipe, root / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": root / "out", "stderr": result.stderr, "recipe": recipe}


def test_foreign_candidate_is_left_out_and_named_everywhere(excluded_merge, zoo, foreign):
    plan = FWPlan.load(excluded_merge["out"] / "fw_plan.json")
    far = dense_distance(zoo["base"], foreign)
    near = dense_distance(zoo["base"], zoo["reverse"])
    assert far > 0.5 > near  # the toy experts sit near 0.3 (big steps on a tiny model)
    # the plan: left out, with both numbers, and every distance
    assert foreign not in plan.models and zoo["reverse"] in plan.models
    (entry,) = plan.excluded
    assert entry.model == foreign and entry.label == "other_seed"
    assert entry.distance == pytest.approx(far, rel=1e-6) and entry.max_distance == 0.5
    assert plan.distances[zoo["reverse"]] == pytest.approx(near, rel=1e-6)
    # the log names it with both numbers
    line = next(x for x in excluded_merge["stderr"].splitlines() if "is foreign" in x)
    assert "other_seed" in line and f"{far:.4f}" in line and "0.5" in line
    # the card lists it
    card = (excluded_merge["out"] / "README.md").read_text()
    section = card[card.index("### Left out of the pool") :]
    assert "other_seed" in section and f"{far:.4f}" in section
    # what was written is the plan over the kept models
    out = load_file(excluded_merge["out"] / "model.safetensors")
    weights = [load_file(Path(m) / "model.safetensors") for m in plan.models]
    for name in plan.tensors:
        expected = sum(c * w[name].double() for c, w in zip(plan.coefficients[name], weights))
        torch.testing.assert_close(out[name].double(), expected, atol=2e-6, rtol=0)


def test_foreign_error_stops_before_any_gradient(zoo, foreign, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("gradient work started before the foreign candidate was rejected")

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "run", refuse)
    monkeypatch.setattr(mergekit_fw.fw.loop, "evaluate", refuse)
    cfg = config(
        zoo["base"], [zoo["reverse"], foreign],
        calibration=f"{zoo['calib']}/reverse.jsonl", iterations=1, foreign="error",
    )  # fmt: skip
    with pytest.raises(FWConfigError) as error:
        prepare(cfg, MergeOptions(quiet=True))
    message = str(error.value)
    assert (
        "other_seed" in message and "max_distance 0.5" in message and "foreign: exclude" in message
    )


def test_keep_and_a_raised_max_distance_keep_it(zoo, foreign):
    for options in [{"foreign": "keep"}, {"max_distance": 5.0}]:
        cfg = config(
            zoo["base"], [zoo["reverse"], foreign],
            calibration=f"{zoo['calib']}/reverse.jsonl", iterations=1, **options,
        )  # fmt: skip
        plan = prepare(cfg, MergeOptions(quiet=True))
        assert foreign in plan.models and not plan.excluded
        assert plan.distances[foreign] > 0.5


@pytest.mark.slow
def test_check_prints_distances_only_on_request(excluded_merge, foreign):
    cli = str(Path(sys.executable).with_name("mergekit-fw"))
    recipe = str(excluded_merge["recipe"])
    plain = subprocess.run([cli, "check", recipe], capture_output=True, text=True)
    assert plain.returncode == 0 and "distances" not in plain.stdout
    shown = subprocess.run([cli, "check", recipe, "--distances"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "other_seed:" in x)
    assert "FOREIGN: left out" in line
    assert any("expert_reverse:" in x and " ok " in x for x in shown.stdout.splitlines())


def test_every_candidate_foreign_is_an_error(zoo, foreign):
    cfg = config(zoo["base"], [foreign], calibration=f"{zoo['calib']}/reverse.jsonl", iterations=1)
    with pytest.raises(FWConfigError, match="nothing is left to merge"):
        prepare(cfg, MergeOptions(quiet=True))
