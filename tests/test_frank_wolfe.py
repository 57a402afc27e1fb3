"""The FW loop on tiny models: picks, monotone line search, coefficients, streaming."""

from __future__ import annotations

import weakref

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions

from mergekit_fw.mergekit.runner import prepare
from mergekit_fw.pool.vertices import VertexPool
from tests.helpers import config


@pytest.fixture(scope="module")
def reverse_plan(zoo, noisy):
    cfg = config(
        zoo["base"], [noisy, zoo["reverse"]],
        calibration=f"{zoo['calib']}/reverse.jsonl", iterations=4, constraint="hull",
        init="base",  # the loop's own progress (init: auto would start at the reverse expert)
    )  # fmt: skip
    return prepare(cfg, MergeOptions(quiet=True))


def test_fw_picks_the_candidate_that_minimises_the_loss(reverse_plan):
    first = reverse_plan.iterations[0]
    assert max(first.wins, key=first.wins.get) == "expert_reverse"
    totals = reverse_plan.total_coefficients()
    assert totals["expert_reverse"] > totals["noisy"]


def test_line_search_never_raises_the_loss(reverse_plan):
    losses = [r.loss for r in reverse_plan.iterations] + [reverse_plan.final_loss]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert reverse_plan.final_loss < reverse_plan.iterations[0].loss - 0.05


def test_coefficients_stay_on_the_simplex_from_the_base(reverse_plan):
    for row in reverse_plan.coefficients.values():
        assert sum(row) == pytest.approx(1.0, abs=1e-9)
        assert min(row) >= -1e-12
    assert reverse_plan.stopped == "budget"
    assert all(0.0 <= r.gamma <= 1.0 and r.gap >= -1e-9 for r in reverse_plan.iterations)


def test_task_arithmetic_start_and_authors_settings(zoo):
    cfg = config(
        zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=2, init="task_arithmetic",
        init_scale=0.3, lmo="cosine", zero_vertex=True, step="schedule", step_size=0.029,
        constraint="hull",
    )  # fmt: skip
    plan = prepare(cfg, MergeOptions(quiet=True))
    assert [r.gamma for r in plan.iterations] == pytest.approx([0.029, 0.029 * 2 / 3])
    # c starts at (1 - n lambda, lambda, lambda); each step is (1-g) c + g e_s (or 0 for the origin)
    left = (1 - 0.029) * (1 - 0.029 * 2 / 3)
    for name, row in plan.coefficients.items():
        picks = [r.picks[name] for r in plan.iterations]
        expected = torch.tensor([0.4, 0.3, 0.3], dtype=torch.float64)
        for gamma, pick in zip([r.gamma for r in plan.iterations], picks):
            vertex = torch.zeros(3, dtype=torch.float64)
            if pick != "zero":
                vertex[plan.labels.index(pick)] = 1.0
            expected = (1 - gamma) * expected + gamma * vertex
        assert row == pytest.approx(expected.tolist(), abs=1e-12), name
    assert set(plan.iterations[0].task_losses) == {"reverse", "add"}
    assert left > 0.95


def test_tolerance_stops_early(zoo):
    cfg = config(
        zoo["base"], [zoo["reverse"]],
        calibration=f"{zoo['calib']}/reverse.jsonl", iterations=5, tolerance=1e9, init="base",
    )  # fmt: skip
    plan = prepare(cfg, MergeOptions(quiet=True))
    assert plan.stopped == "tolerance" and len(plan.iterations) == 1
    assert plan.iterations[0].gamma == 0.0
    assert all(row == [1.0, 0.0] for row in plan.coefficients.values())


def test_model_granularity_picks_one_vertex_for_all_tensors(zoo, noisy):
    cfg = config(
        zoo["base"], [noisy, zoo["reverse"]],
        calibration=f"{zoo['calib']}/reverse.jsonl", iterations=2, granularity="model",
    )  # fmt: skip
    plan = prepare(cfg, MergeOptions(quiet=True))
    for record in plan.iterations:
        assert len(set(record.picks.values())) == 1


def test_candidates_are_streamed_one_tensor_at_a_time(zoo, monkeypatch):
    """No vertex tensor outlives the request for the next one (peak does not grow with n)."""
    live: list[weakref.ref] = []
    original = VertexPool.tensor

    def tracked(self, k, name):
        alive = [ref for ref in live if ref() is not None]
        assert not alive, f"{len(alive)} vertex tensors still alive when loading {name}"
        x = original(self, k, name)
        live.append(weakref.ref(x))
        return x

    monkeypatch.setattr(VertexPool, "tensor", tracked)
    cfg = config(
        zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"], zoo["sort"]],
        calibration=f"{zoo['calib']}/reverse.jsonl", iterations=2, init="task_arithmetic",
        constraint="hull",  # box/simplex hold the base next to one vertex: two tensors
    )  # fmt: skip
    plan = prepare(cfg, MergeOptions(quiet=True))
    assert len(plan.iterations) == 2


def test_recipe_text_round_trip(tmp_path, zoo):
    """The documented YAML contract parses into the same settings mergekit resolves."""
    text = yaml.safe_dump(
        {"merge_method": "frank_wolfe", "base_model": zoo["base"], "models": [{"model": zoo["add"]}],
         "parameters": {"calibration": "x.jsonl", "iterations": 3, "lmo": "cosine",
                        "constraint": "hull"}}
    )  # fmt: skip
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    from mergekit_fw.settings import FWSettings

    assert FWSettings.from_parameters(cfg.parameters).lmo == "cosine"
