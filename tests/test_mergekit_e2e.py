"""The stock `mergekit-yaml` runs a frank_wolfe recipe; mergekit writes what FW computed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mergekit_fw.plan import FWPlan
from tests.helpers import calibration_loss, mergekit_yaml, write_recipe


@pytest.fixture(scope="module")
def merged(zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    recipe = write_recipe(
        root / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=3, constraint="hull",
    )  # fmt: skip
    out = root / "out"
    result = mergekit_yaml(recipe, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"recipe": recipe, "out": out, "root": root, "stderr": result.stderr}


def test_output_is_a_normal_checkpoint_with_fw_artifacts(merged):
    out = merged["out"]
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "fw_plan.json",
        "fw_linear.yaml",
    ]:
        assert (out / name).exists(), name
    card = (out / "README.md").read_text()
    assert "Frank-Wolfe" in card and "fw_plan.json" in card
    assert "FW t=0: loss" in merged["stderr"]  # one summary line per iteration


def test_written_model_has_the_pre_pass_loss(merged, zoo):
    plan = FWPlan.load(merged["out"] / "fw_plan.json")
    loss = calibration_loss(str(merged["out"]), f"{zoo['calib']}/two_tasks.yaml")
    assert loss == pytest.approx(plan.final_loss, abs=1e-4)
    assert plan.final_loss < plan.iterations[0].loss


def test_written_tensors_are_the_plan_combinations(merged):
    plan = FWPlan.load(merged["out"] / "fw_plan.json")
    out = load_file(merged["out"] / "model.safetensors")
    weights = [load_file(Path(m) / "model.safetensors") for m in plan.models]
    assert set(plan.tensors) <= set(out)
    for name in plan.tensors:
        expected = sum(c * w[name].double() for c, w in zip(plan.coefficients[name], weights))
        torch.testing.assert_close(out[name].double(), expected, atol=1e-6, rtol=0)


def test_plan_exports_to_a_stock_linear_recipe(merged):
    """Without mergekit-fw (hook disabled), stock mergekit `linear` reproduces the merge."""
    recipe = merged["root"] / "linear.yaml"
    recipe.write_text((merged["out"] / "fw_linear.yaml").read_text())
    out = merged["root"] / "linear_out"
    result = mergekit_yaml(recipe, out, env={"MERGEKIT_FW_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_file(out / "model.safetensors"), load_file(merged["out"] / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_same_inputs_give_the_same_bytes(merged):
    out2 = merged["root"] / "out2"
    result = mergekit_yaml(merged["recipe"], out2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out2 / "model.safetensors").read_bytes() == (
        merged["out"] / "model.safetensors"
    ).read_bytes()
    p1, p2 = (json.loads((d / "fw_plan.json").read_text()) for d in (merged["out"], out2))
    p1.pop("seconds"), p2.pop("seconds")
    assert p1 == p2


@pytest.mark.slow
def test_hook_opt_out_restores_stock_mergekit(merged, tmp_path):
    result = mergekit_yaml(merged["recipe"], tmp_path / "x", env={"MERGEKIT_FW_DISABLE": "1"})
    assert result.returncode != 0
    assert "Unimplemented merge method frank_wolfe" in result.stderr


@pytest.mark.slow
def test_mergekit_fw_run_and_check(merged, tmp_path):
    cli = str(Path(sys.executable).with_name("mergekit-fw"))
    check = subprocess.run([cli, "check", str(merged["recipe"])], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "OK:" in check.stdout and "candidates (3)" in check.stdout
    exported = subprocess.run(
        [cli, "export", str(merged["out"] / "fw_plan.json")], capture_output=True, text=True
    )
    assert yaml.safe_load(exported.stdout)["merge_method"] == "linear"
