"""FW started from a mergekit merge (`init: ties`, `init: recipe.yaml`, `init: auto`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions
from safetensors.torch import load_file

from mergekit_fw.fw.screened_start import PROBE
from mergekit_fw.fw.start_grid import TA_GRID
from mergekit_fw.mergekit.auto_start import TIES_GRID
from mergekit_fw.mergekit.checks import check_recipe
from mergekit_fw.mergekit.runner import run_fw_merge
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWConfigError
from tests.helpers import write_recipe


def _config(path: Path) -> MergeConfiguration:
    return MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))


def _fw(zoo, root: Path, models: list[str], out: str = "out", **parameters):
    recipe = write_recipe(
        root / f"{out}.yaml", zoo["base"], models,
        calibration=f"{zoo['calib']}/two_tasks.yaml", **parameters,
    )  # fmt: skip
    run_fw_merge(_config(recipe), str(root / out), MergeOptions(quiet=True))
    return root / out


def _stock(zoo, root: Path, recipe: dict, out: str) -> Path:
    """The merge as stock mergekit writes it (no frank_wolfe involved)."""
    import mergekit.merge

    run = getattr(mergekit.merge.run_merge, "__wrapped__", mergekit.merge.run_merge)
    run(MergeConfiguration.model_validate(recipe), str(root / out), MergeOptions(quiet=True))
    return root / out


def _ties_recipe(zoo, models, density=0.5):
    return {
        "merge_method": "ties",
        "base_model": zoo["base"],
        "models": [{"model": m, "parameters": {"density": density, "weight": 1.0}} for m in models],
        "dtype": "float32",
    }


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


@pytest.fixture(scope="module")
def ties_start(zoo, tmp_path_factory):
    """FW from init: ties that takes no step (tolerance above any gap), and stock TIES."""
    root = tmp_path_factory.mktemp("start")
    models = [zoo["reverse"], zoo["add"], zoo["count"]]
    fw = _fw(
        zoo, root, models, iterations=2, tolerance=1e9,
        init="ties", init_density=0.5, init_weight=1.0,
    )  # fmt: skip
    stock = _stock(zoo, root, _ties_recipe(zoo, models), "stock_ties")
    return {"root": root, "fw": fw, "stock": stock, "models": models}


def test_ties_start_without_a_step_is_stock_ties(ties_start):
    fw, stock = _tensors(ties_start["fw"]), _tensors(ties_start["stock"])
    assert fw.keys() == stock.keys()
    base = _tensors(Path(ties_start["models"][0]).parent / "base")
    moved = 0
    for name in stock:
        assert torch.allclose(fw[name], stock[name], atol=1e-6, rtol=0), name
        moved += int(not torch.equal(stock[name], base[name]))
    assert moved > 0  # TIES is not the base: the comparison can fail


def test_ties_start_is_a_vertex_of_the_plan(ties_start):
    plan = FWPlan.load(ties_start["fw"] / "fw_plan.json")
    assert plan.stopped == "tolerance"
    assert plan.models[-1] == "init:ties" and plan.start["recipe"]["merge_method"] == "ties"
    for row in plan.coefficients.values():
        assert row == [0.0] * (len(plan.models) - 1) + [1.0]
    # a start vertex lives in memory only: no linear recipe can name it, and none is written
    assert not (ties_start["fw"] / "fw_linear.yaml").exists()
    with pytest.raises(FWConfigError, match="start vertex"):
        plan.linear_recipe()


def test_recipe_file_start_equals_the_method_start(zoo, ties_start, tmp_path):
    recipe = tmp_path / "ties.yaml"
    recipe.write_text(yaml.safe_dump(_ties_recipe(zoo, ties_start["models"])))
    fw = _fw(zoo, tmp_path, ties_start["models"], iterations=1, tolerance=1e9, init=str(recipe))
    stock = _tensors(ties_start["stock"])
    for name, tensor in _tensors(fw).items():
        assert torch.allclose(tensor, stock[name], atol=1e-6, rtol=0), name


@pytest.mark.slow
def test_fw_from_ties_never_ends_above_it(zoo, ties_start, tmp_path):
    fw = _fw(
        zoo, tmp_path, ties_start["models"], iterations=3,
        init="ties", init_density=0.5, init_weight=1.0,
    )  # fmt: skip
    plan = FWPlan.load(fw / "fw_plan.json")
    assert plan.final_loss <= plan.iterations[0].loss + 1e-6
    assert plan.final_loss < plan.iterations[0].loss  # it moved: the start vertex lost weight
    start_weight = [row[-1] for row in plan.coefficients.values()]
    assert min(start_weight) < 1.0


def test_auto_picks_the_argmin_of_its_table(zoo, tmp_path):
    fw = _fw(
        zoo, tmp_path, [zoo["reverse"], zoo["add"], zoo["count"]], iterations=1,
        tolerance=1e9, init="auto",
    )  # fmt: skip
    plan = FWPlan.load(fw / "fw_plan.json")
    table = plan.init_table
    # the base, every task-arithmetic lambda of the grid (all inside the box), each candidate
    # alone, the screened lines unless every candidate gains alike, 3 TIES
    names = [entry["start"] for entry in table]
    screened = [x for x in names if x.startswith(("helpful", "gain-weighted"))]
    assert names == (
        ["base"] + [f"task_arithmetic lambda={x}" for x in TA_GRID]
        + [f"expert_{k} alone lambda={PROBE}" for k in ("reverse", "add", "count")]
        + screened + [f"ties density={x}" for x in TIES_GRID]
    )  # fmt: skip
    assert len(screened) in (0, len(TA_GRID), 2 * len(TA_GRID))
    losses = [entry["loss"] for entry in table]
    chosen = [entry for entry in table if entry["chosen"]]
    assert len(chosen) == 1 and chosen[0]["loss"] == min(losses)
    assert len(set(losses)) > 1  # the grid points differ: the argmin is a real choice
    # no step was taken, so the run's loss is the chosen start's loss
    assert plan.iterations[0].loss == pytest.approx(chosen[0]["loss"], abs=1e-5)
    assert "init: auto" in (fw / "README.md").read_text()
    assert json.loads((fw / "fw_plan.json").read_text())["init_table"] == table


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"init": "tiess"}, "Did you mean 'ties'"),
        (
            {"init": "ties", "init_weight": 1.0, "init_densty": 0.5},
            "init_densty is not a parameter",
        ),
        ({"init": "ties", "init_density": 0.5}, "needs init_weight"),
        ({"init": "ties", "init_weight": "heavy"}, "init_weight"),
        ({"init": "base", "init_density": 0.5}, "only apply to a mergekit method start"),
        ({"init": "frank_wolfe"}, "start FW from itself"),
        ({"init": "missing.yaml"}, "no such recipe file"),
    ],
)
def test_bad_starts_are_rejected_before_any_work(zoo, tmp_path, parameters, message):
    recipe = write_recipe(
        tmp_path / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=1, **parameters,
    )  # fmt: skip
    with pytest.raises(FWConfigError, match=message):
        check_recipe(_config(recipe), with_calibration=False)


def test_recipe_naming_other_models_is_an_error_naming_them(zoo, tmp_path):
    other = _ties_recipe(zoo, [zoo["reverse"], zoo["sort"]])
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    recipe = write_recipe(
        tmp_path / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=1,
        init=str(tmp_path / "other.yaml"),
    )  # fmt: skip
    with pytest.raises(FWConfigError, match="expert_sort"):
        check_recipe(_config(recipe), with_calibration=False)


@pytest.mark.parametrize("winner", ["line", "ties"])
def test_auto_hands_the_loop_its_start_already_formed(zoo, monkeypatch, winner):
    """init: auto leaves its winner in the parameters (the line's best point formed as it
    was scored, or the TIES snapshot copied back), so the loop forms nothing again; the plan
    equals the one of a loop told to form the start row from the pool itself."""
    from mergekit_fw.mergekit import auto_start, runner
    from tests.helpers import config

    if winner == "ties":  # make a TIES start win, whatever its loss
        choose = auto_start.choose

        def ties_wins(table, unit=""):
            for entry in table:
                if entry["start"] == "ties density=0.5":
                    entry["loss"] = -1.0
            return choose(table, unit)

        monkeypatch.setattr(auto_start, "choose", ties_wins)
    formed, run = [], runner.run_frank_wolfe

    def spy(*args, **kwargs):
        formed.append(kwargs["start_formed"])
        if len(formed) == 2:  # the second run: the loop forms theta_0 from the row
            kwargs["start_formed"] = False
        return run(*args, **kwargs)

    monkeypatch.setattr(runner, "run_frank_wolfe", spy)
    models = [zoo["reverse"], zoo["add"]]
    cfg = config(zoo["base"], models, calibration=f"{zoo['calib']}/two_tasks.yaml",
                 iterations=2, init="auto")  # fmt: skip
    held = runner.prepare(cfg, MergeOptions(quiet=True))
    by_loop = runner.prepare(cfg, MergeOptions(quiet=True))
    assert formed == [True, True]
    if winner == "ties":
        assert [e["start"] for e in held.init_table if e["chosen"]] == ["ties density=0.5"]
    assert held.start_row == by_loop.start_row
    assert held.iterations[0].loss == pytest.approx(by_loop.iterations[0].loss, rel=1e-6)
    assert [r.gamma for r in held.iterations] == pytest.approx(
        [r.gamma for r in by_loop.iterations], rel=1e-5
    )
    for name, row in held.coefficients.items():
        assert by_loop.coefficients[name] == pytest.approx(row, rel=1e-5, abs=1e-7)
