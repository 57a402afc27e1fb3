"""The box constraint with LoRA adapter vertices: tau = s B A from the factors, the same run
as over mergekit's densified `base+adapter` models, and adapter distances from the factors."""

from __future__ import annotations

import pytest
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions

from mergekit_fw.mergekit.checks import check_recipe
from mergekit_fw.mergekit.foreign import candidate_distances
from mergekit_fw.mergekit.runner import prepare
from tests.helpers import ADAPTERS, calibration_loss, densified, run_in_process, write_recipe


def parsed(path) -> MergeConfiguration:
    return MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))


def test_box_on_adapters_equals_box_on_densified_models(zoo, loras, tmp_path):
    calib = f"{zoo['calib']}/two_tasks.yaml"
    common = dict(calibration=calib, iterations=2, line_search_evals=4, constraint="box")
    fw = write_recipe(
        tmp_path / "a.yaml", zoo["base"], [zoo["base"]], adapters=loras["manifest"], **common
    )
    dense = write_recipe(tmp_path / "d.yaml", zoo["base"], densified(zoo["base"], loras), **common)
    a = run_in_process(fw, tmp_path / "out_a")  # written from the factors
    d = prepare(parsed(dense), MergeOptions(quiet=True, lora_merge_cache=str(tmp_path / "c")))
    assert a.models[1:] == [f"adapter:{loras[t]}" for t in ADAPTERS]
    for x, y in zip(a.iterations, d.iterations, strict=True):
        assert x.picks == y.picks and x.gamma == pytest.approx(y.gamma, rel=1e-5, abs=1e-9)
    for name in a.tensors:
        assert a.coefficients[name] == pytest.approx(d.coefficients[name], rel=1e-6, abs=1e-6)
    assert any("+" in p for p in a.iterations[0].picks.values())  # several adapters at once
    # several adapters in one tensor, each within the box
    assert any(sum(c > 0 for c in row[1:]) > 1 for row in a.coefficients.values())
    assert all(0.0 <= c <= 1.0 + 1e-12 for row in a.coefficients.values() for c in row[1:])
    assert calibration_loss(str(tmp_path / "out_a"), calib) == pytest.approx(a.final_loss, abs=1e-4)


def test_adapter_distances_from_factors_equal_densified(zoo, loras, tmp_path):
    calib = f"{zoo['calib']}/reverse.jsonl"
    fw = write_recipe(
        tmp_path / "a.yaml", zoo["base"], [zoo["base"]], adapters=loras["manifest"],
        calibration=calib, iterations=1,
    )  # fmt: skip
    dense = write_recipe(
        tmp_path / "d.yaml", zoo["base"], densified(zoo["base"], loras), calibration=calib,
        iterations=1,
    )  # fmt: skip
    factors = candidate_distances(check_recipe(parsed(fw), with_calibration=False))
    from mergekit.io.tasks import LoaderCache

    LoaderCache().setup(MergeOptions(lora_merge_cache=str(tmp_path / "c")))
    merged = candidate_distances(check_recipe(parsed(dense), with_calibration=False))
    assert len(factors) == len(merged) == len(ADAPTERS)
    for (_, _, x), (_, _, y) in zip(factors, merged):
        assert 0.0 < x < 0.5
        assert x == pytest.approx(y, rel=1e-4)
