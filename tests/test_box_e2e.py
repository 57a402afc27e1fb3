"""The box constraint through stock `mergekit-yaml`: the written tensors are the plan's
combination, with a negative base coefficient, and `fw_linear.yaml` reproduces them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergekit_fw.plan import FWPlan
from tests.helpers import calibration_loss, mergekit_yaml, write_recipe


@pytest.fixture(scope="module")
def box_merge(zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("box_e2e")
    recipe = write_recipe(
        root / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=3, constraint="box", scale=1.0,
    )  # fmt: skip
    out = root / "out"
    result = mergekit_yaml(recipe, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": out, "root": root, "plan": FWPlan.load(out / "fw_plan.json")}


def test_box_plan_has_a_negative_base_coefficient(box_merge):
    plan = box_merge["plan"]
    assert plan.settings.constraint == "box"
    assert min(row[0] for row in plan.coefficients.values()) < -0.1


def test_written_tensors_are_the_box_combination(box_merge, zoo):
    plan = box_merge["plan"]
    out = load_file(box_merge["out"] / "model.safetensors")
    weights = [load_file(Path(m) / "model.safetensors") for m in plan.models]
    for name in plan.tensors:
        expected = sum(c * w[name].double() for c, w in zip(plan.coefficients[name], weights))
        torch.testing.assert_close(out[name].double(), expected, atol=2e-6, rtol=0)
    loss = calibration_loss(str(box_merge["out"]), f"{zoo['calib']}/two_tasks.yaml")
    assert loss == pytest.approx(plan.final_loss, abs=1e-4)


def test_stock_linear_reproduces_the_box_merge(box_merge):
    recipe = box_merge["root"] / "linear.yaml"
    recipe.write_text((box_merge["out"] / "fw_linear.yaml").read_text())
    out = box_merge["root"] / "linear_out"
    result = mergekit_yaml(recipe, out, env={"MERGEKIT_FW_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_file(out / "model.safetensors"), load_file(box_merge["out"] / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-6, rtol=0)
