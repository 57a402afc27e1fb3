"""Saved plans: `mergekit-fw plan` runs the pre-pass only; `run --plan` writes from it with no
data and no gradients; a plan whose inputs changed is refused with what differs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import mergekit_fw.fw.loop
from mergekit_fw.cli.main import main
from mergekit_fw.plan import PLAN_FILE, FWPlan
from tests.helpers import write_recipe


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def planned(zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("planned")
    recipe = write_recipe(
        root / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    result = cli("plan", str(recipe), "-o", str(root / "plan.json"), "--quiet")
    assert result.exit_code == 0, result.output
    full = cli("run", str(recipe), str(root / "full"))  # the same recipe, in one go
    assert full.exit_code == 0, full.output
    return {"root": root, "recipe": recipe, "plan": root / "plan.json", "full": root / "full"}


@pytest.fixture
def no_data(monkeypatch):
    """Writing from a plan must neither read calibration data nor run the loop."""

    def refuse(*args, **kwargs):
        raise AssertionError("calibration data or gradients were used")

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "run", refuse)
    monkeypatch.setattr("mergekit_fw.mergekit.checks.load_calibration", refuse)


def test_plan_carries_the_fingerprint(planned):
    plan = FWPlan.load(planned["plan"])
    assert set(plan.fingerprint) >= {"settings", "models", "calibration", "dtype"}
    assert not Path(str(planned["plan"]) + ".fw-state").exists()


def test_run_from_a_plan_writes_the_same_model(planned, tmp_path, no_data):
    out = tmp_path / "out"
    result = cli("run", str(planned["recipe"]), str(out), "--plan", str(planned["plan"]))
    assert result.exit_code == 0, result.output
    expected = (planned["full"] / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == expected
    assert FWPlan.load(out / PLAN_FILE).coefficients == FWPlan.load(planned["plan"]).coefficients


def test_recipe_key_plan_for_the_stock_cli(planned, tmp_path, no_data):
    recipe = yaml.safe_load(planned["recipe"].read_text())
    recipe["parameters"]["plan"] = str(planned["plan"])
    path = tmp_path / "with_plan.yaml"
    path.write_text(yaml.safe_dump(recipe))
    import mergekit.merge
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate(recipe)
    mergekit.merge.run_merge(config, str(tmp_path / "out"), MergeOptions(quiet=True))
    expected = (planned["full"] / "model.safetensors").read_bytes()
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == expected


def test_a_plan_for_other_settings_is_refused(planned, zoo, tmp_path, no_data):
    recipe = write_recipe(
        tmp_path / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=3,
    )  # fmt: skip
    result = cli("run", str(recipe), str(tmp_path / "out"), "--plan", str(planned["plan"]))
    assert result.exit_code == 1
    assert "does not match this recipe's inputs: parameters.iterations (2 -> 3)" in result.output
    assert not (tmp_path / "out").exists()


def test_a_plan_whose_candidate_changed_is_refused(planned, zoo, tmp_path, no_data):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "add"
    shutil.copytree(zoo["add"], copy)
    recipe = write_recipe(
        tmp_path / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    plan = FWPlan.load(planned["plan"])  # the same plan, pointed at the copy
    text = planned["plan"].read_text().replace(zoo["add"], str(copy))
    (tmp_path / "plan.json").write_text(text)
    recipe.write_text(recipe.read_text().replace(zoo["add"], str(copy)))
    ok = cli("run", str(recipe), str(tmp_path / "ok"), "--plan", str(tmp_path / "plan.json"))
    assert ok.exit_code == 0, ok.output  # a copied folder is the same model
    tensors = load_file(str(copy / "model.safetensors"))
    save_file({k: v + 0.001 for k, v in tensors.items()}, str(copy / "model.safetensors"))
    bad = cli("run", str(recipe), str(tmp_path / "bad"), "--plan", str(tmp_path / "plan.json"))
    assert bad.exit_code == 1
    assert f"model {copy} (changed: model.safetensors)" in bad.output
    assert not (tmp_path / "bad").exists()
    del plan


def test_a_plan_without_fingerprint_or_file_is_refused(planned, tmp_path, no_data):
    plan = FWPlan.load(planned["plan"]).model_copy(update={"fingerprint": {}})
    plan.save(tmp_path / "old.json")
    for path, message in [
        (tmp_path / "old.json", "has no input fingerprint"),
        (tmp_path / "missing.json", "No such plan file"),
    ]:
        result = cli("run", str(planned["recipe"]), str(tmp_path / "out"), "--plan", str(path))
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ties_planned(zoo, tmp_path_factory):
    """A plan whose start is a TIES vertex (what `init: auto` may choose), and the same
    recipe run in one go."""
    root = tmp_path_factory.mktemp("ties_planned")
    recipe = write_recipe(
        root / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
        init="ties", init_density=0.5, init_weight=1.0,
    )  # fmt: skip
    assert cli("plan", str(recipe), "-o", str(root / "plan.json"), "--quiet").exit_code == 0
    assert cli("run", str(recipe), str(root / "full")).exit_code == 0
    return {"recipe": recipe, "plan": root / "plan.json", "full": root / "full"}


def test_a_plan_with_a_ties_start_vertex_writes_the_same_model(ties_planned, tmp_path, no_data):
    """The start vertex only existed in memory: writing from the plan merges it again
    through mergekit (TIES is deterministic) and writes the same bytes."""
    assert FWPlan.load(ties_planned["plan"]).start["id"] == "init:ties"
    out = tmp_path / "out"
    result = cli("run", str(ties_planned["recipe"]), str(out), "--plan", str(ties_planned["plan"]))
    assert result.exit_code == 0, result.output
    expected = (ties_planned["full"] / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == expected


def test_a_plan_with_a_random_start_is_refused(ties_planned, tmp_path, no_data):
    plan = FWPlan.load(ties_planned["plan"])
    plan.start["recipe"]["merge_method"] = "dare_ties"
    plan.save(tmp_path / "plan.json")
    result = CliRunner().invoke(
        main, ["run", str(ties_planned["recipe"]), str(tmp_path / "out"), "--plan",
               str(tmp_path / "plan.json")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "cannot be merged again identically" in result.output
    assert not (tmp_path / "out" / "model.safetensors").exists()
