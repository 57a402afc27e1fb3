"""merge_fn: ties | dare steps (fw/merge_fns.py) and their per-tensor replay at write time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions
from safetensors.torch import load_file

from mergekit_fw.fw.loop import FrankWolfe
from mergekit_fw.fw.merge_fns import dare_mask_, ties_mask_
from mergekit_fw.mergekit.runner import run_fw_merge
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWConfigError, FWSettings
from tests.helpers import write_recipe


def test_ties_mask_keeps_the_largest_fraction_per_tensor():
    d = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2, 0.0, 1.0, -0.4, 0.3, 0.6])
    out = ties_mask_(d.clone(), 0.3)
    assert out.tolist() == [0.0, -3.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert torch.equal(ties_mask_(d.clone(), 1.0), d)


def test_dare_mask_is_seeded_and_rescaled():
    d = torch.ones(1000)
    a = dare_mask_(d.clone(), 0.25, seed=0, t=1, name="w")
    assert torch.equal(a, dare_mask_(d.clone(), 0.25, seed=0, t=1, name="w"))
    assert not torch.equal(a, dare_mask_(d.clone(), 0.25, seed=0, t=2, name="w"))
    assert set(a.unique().tolist()) == {0.0, 4.0}  # dropped, or kept and scaled by 1/p
    assert 0.18 < float((a > 0).float().mean()) < 0.32


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("merge_fn", ["ties", "dare"])
def test_replayed_write_is_the_pre_pass_iterate(zoo, tmp_path, monkeypatch, merge_fn):
    last: dict[str, torch.Tensor] = {}
    original = FrankWolfe.run

    def run(self):
        plan = original(self)
        last.update({slot.name: slot.param.detach().clone() for slot in self.slots})
        return plan

    monkeypatch.setattr(FrankWolfe, "run", run)
    recipe = write_recipe(
        tmp_path / "fw.yaml", zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=3,
        merge_fn=merge_fn, merge_density=0.3,
    )  # fmt: skip
    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_fw_merge(config, str(tmp_path / "out"), MergeOptions(quiet=True))
    plan = FWPlan.load(tmp_path / "out" / "fw_plan.json")
    assert any(r.gamma > 0 for r in plan.iterations)  # it stepped: the replay has work to do
    written = _tensors(tmp_path / "out")
    for name, tensor in last.items():
        assert torch.equal(written[name], tensor), name  # the same bytes
    assert not (tmp_path / "out" / "fw_linear.yaml").exists()
    with pytest.raises(FWConfigError, match="not linear"):
        plan.linear_recipe()
    # and it is not the linear combination of the recorded (nominal) coefficients
    base = _tensors(Path(zoo["base"]))
    moved = [n for n in last if not torch.equal(last[n], base[n])]
    assert moved


@pytest.mark.parametrize(
    "options, message",
    [
        ({"merge_fn": "ties", "lora_mode": "factors"}, "lora_mode: factors"),
        ({"merge_fn": "dare", "variant": "soft"}, "variant: soft"),
        ({"merge_fn": "ties", "fw_steps": "away"}, "fw_steps: away"),
        ({"merge_fn": "ties", "merge_density": 0.0}, "merge_density"),
    ],
)
def test_merge_fns_are_rejected_where_they_cannot_apply(options, message):
    with pytest.raises(FWConfigError, match=message):
        FWSettings.from_parameters({"calibration": "x", "iterations": 1, **options})
