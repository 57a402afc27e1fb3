"""Away and pairwise steps (fw/away.py) on toys where the answer is known by hand.

Vertices v0 = (0, 1), v1 = (-1, 0), v2 = (1, 0); loss ||theta - target||^2.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mergekit_fw.fw.away import ActiveSets
from mergekit_fw.fw.constraints import Box, Hull
from mergekit_fw.fw.loop import FrankWolfe, Slot
from mergekit_fw.fw.oracles import ScoreTable
from mergekit_fw.settings import FWConfigError, FWSettings
from tests.helpers import Distance, Pool, Vector

V = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])]


def run(target, start_row, iterations=1, vertices=V, **options):
    from mergekit_fw.fw.objectives import Batch

    model = Vector(vertices[0])
    dummy = torch.zeros(1, 1, dtype=torch.long)
    options.setdefault("constraint", "hull")  # the hull toys; box ones say so
    settings = FWSettings(calibration="x", iterations=iterations, **options)
    loop = FrankWolfe(
        model, [Slot("w", model.w)], Pool(vertices), Distance([torch.tensor(target)]),
        [Batch(0, dummy, dummy, dummy, 1.0, 1)], ["t"], settings, quiet=True,
        start_row=start_row,
    )  # fmt: skip
    return loop.run(), model.w.detach()


def test_away_step_drops_the_start_to_exactly_zero():
    # theta_0 = (0, 0.3); target (0, 0) lies on the edge v1-v2: v0 must leave the merge.
    # FW gap 0.18 < away gap 0.42, so the step is an away step off v0, and at its largest
    # feasible size (gamma = 1) theta is the target and v0's weight exactly 0.
    plan, theta = run([0.0, 0.0], [0.3, 0.35, 0.35], fw_steps="away")
    assert plan.iterations[0].steps == {"away": 1}
    assert plan.coefficients["w"][0] == 0.0
    assert plan.coefficients["w"][1:] == pytest.approx([0.5, 0.5], abs=1e-12)
    assert torch.allclose(theta, torch.zeros(2), atol=1e-6)
    assert plan.final_loss < 1e-10


def test_vanilla_fw_keeps_weight_on_the_start():
    # the same toy without away steps: v0's weight only decays
    plan, _ = run([0.0, 0.0], [0.3, 0.35, 0.35], iterations=3)
    assert plan.coefficients["w"][0] > 0.0
    assert plan.final_loss > 1e-4


def test_pairwise_moves_the_weight_of_the_worst_vertex_to_the_best():
    # v2 = (1, -0.5) so v0 is strictly the worst active vertex (no tie with v2).
    # theta_0 = 0.3 v0 + 0.1 v1 + 0.6 v2 = (0.5, 0); target 0.4 v1 + 0.6 v2 = (0.2, -0.3):
    # moving v0's whole weight to v1 (the LMO's vertex) lands on it.
    vertices = [V[0], V[1], torch.tensor([1.0, -0.5])]
    plan, theta = run([0.2, -0.3], [0.3, 0.1, 0.6], vertices=vertices, fw_steps="pairwise")
    assert plan.iterations[0].steps == {"pairwise": 1}
    assert plan.coefficients["w"] == [0.0, pytest.approx(0.4), pytest.approx(0.6)]
    assert torch.allclose(theta, torch.tensor([0.2, -0.3]), atol=1e-6)


BOX = [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])]


def test_box_away_step_drops_a_task_vector_to_exactly_zero():
    # box, kappa 1, tau_1 = (1, 1), tau_2 = (0, 1); start lambda = (0.3, 0.8): corners
    # {2}: 0.5, {1, 2}: 0.3, base: 0.2. The target lambda = (0, 5/7) is what is left when
    # the corner {1, 2} leaves, and the away gap (1.11) beats the FW gap (1.03).
    plan, theta = run(
        [0.0, 5.0 / 7.0], [-0.1, 0.3, 0.8], vertices=BOX, fw_steps="away", constraint="box",
    )  # fmt: skip
    assert plan.iterations[0].steps == {"away": 1}
    c = plan.coefficients["w"]
    assert c[1] == 0.0  # tau_1 is out of the merge, exactly
    assert c[2] == pytest.approx(5.0 / 7.0)
    assert torch.allclose(theta, torch.tensor([0.0, 5.0 / 7.0]), atol=1e-6)


def test_box_vanilla_keeps_the_task_vector():
    plan, _ = run([0.0, 5.0 / 7.0], [-0.1, 0.3, 0.8], iterations=3, vertices=BOX, constraint="box")
    assert plan.coefficients["w"][1] > 0.0


@pytest.mark.parametrize("constraint", ["hull", "box"])
@pytest.mark.parametrize("mode", ["away", "pairwise"])
def test_coefficients_stay_in_the_set_and_match_theta(constraint, mode):
    vertices = V if constraint == "hull" else BOX
    start = [0.2, 0.3, 0.5] if constraint == "hull" else [0.4, 0.3, 0.3]
    gen = torch.Generator().manual_seed(3)
    target = (torch.rand(2, generator=gen) - 0.5).tolist()
    plan, theta = run(
        target, start, iterations=6, vertices=vertices, fw_steps=mode, constraint=constraint
    )
    c = torch.tensor(plan.coefficients["w"])
    assert float(c.sum()) == pytest.approx(1.0)
    if constraint == "hull":
        assert float(c.min()) >= -1e-12
    else:
        assert float(c[1:].min()) >= -1e-12 and float(c[1:].max()) <= 1.0 + 1e-12
    assert torch.allclose(theta, sum(ci * v for ci, v in zip(c, vertices)).float(), atol=1e-5)
    losses = [r.loss for r in plan.iterations] + [plan.final_loss]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


def test_model_granularity_uses_one_away_vertex_for_all_rows():
    scores = torch.tensor([[0.5, -1.0, 0.2], [0.5, -1.0, 0.3]], dtype=torch.float64)
    coefficients = torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.4, 0.4]], dtype=torch.float64)
    current = (coefficients * scores).sum(dim=1)
    table = ScoreTable(scores, torch.ones_like(scores), torch.ones(2), current)
    settings = SimpleNamespace(granularity="model", fw_steps="pairwise")
    hull = Hull("inner", "model", False)
    active = ActiveSets(hull, coefficients, settings)
    steps = active.choose("pairwise", table, hull.lmo(table))
    assert [(st.kind, sorted(st.away)) for st in steps] == [("pairwise", [0])] * 2
    assert steps[0].scale == pytest.approx(0.2)  # the block's smallest weight on v0


def test_box_corners_decompose_and_rebuild_the_coefficients():
    settings = SimpleNamespace(granularity="tensor", fw_steps="away")
    box = Box(2.0, "tensor")
    row = torch.tensor([[1.0 - 0.6 - 1.0 - 0.2, 0.6, 1.0, 0.2]], dtype=torch.float64)
    active = ActiveSets(box, row, settings)
    corners = active.sets[0]
    assert all(w > 0 for w in corners.values()) and sum(corners.values()) == pytest.approx(1.0)
    assert torch.allclose(active.row_of(corners), row[0])
    with pytest.raises(FWConfigError, match="inside constraint: box"):
        ActiveSets(box, torch.tensor([[0.0, 2.5, -1.5]], dtype=torch.float64), settings)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fw_steps": "away", "variant": "soft"}, "hard variant"),
        ({"fw_steps": "pairwise", "zero_vertex": True}, "zero_vertex"),
        ({"fw_steps": "away", "lora_mode": "factors"}, "lora_mode: factors"),
        ({"fw_steps": "sideways"}, "fw_steps"),
    ],
)
def test_away_steps_are_rejected_where_they_cannot_apply(options, message):
    with pytest.raises(FWConfigError, match=message):
        FWSettings.from_parameters({"calibration": "x", "iterations": 1, **options})
