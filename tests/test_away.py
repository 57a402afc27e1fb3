"""Away and pairwise steps (fw/away.py) on toys where the answer is known by hand.

Vertices v0 = (0, 1), v1 = (-1, 0), v2 = (1, 0); loss ||theta - target||^2.
"""

from __future__ import annotations

import pytest
import torch

from mergekit_fw.fw.away import choose_steps
from mergekit_fw.fw.loop import FrankWolfe, Slot
from mergekit_fw.settings import FWConfigError, FWSettings
from tests.test_soft import Distance, Pool, Vector

V = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])]


def run(target, start_row, iterations=1, vertices=V, **options):
    from mergekit_fw.fw.objectives import Batch

    model = Vector(vertices[0])
    dummy = torch.zeros(1, 1, dtype=torch.long)
    settings = FWSettings(calibration="x", iterations=iterations, **options)
    loop = FrankWolfe(
        model, [Slot("w", model.w)], Pool(vertices), Distance([torch.tensor(target)]),
        [Batch(0, dummy, dummy, dummy, 1.0, 1)], ["t"], settings, quiet=True,
    )  # fmt: skip
    loop.start_row = start_row
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


def test_coefficients_stay_on_the_simplex_and_match_theta():
    gen = torch.Generator().manual_seed(3)
    target = (torch.rand(2, generator=gen) - 0.5).tolist()
    for mode in ("away", "pairwise"):
        plan, theta = run(target, [0.2, 0.3, 0.5], iterations=6, fw_steps=mode)
        c = torch.tensor(plan.coefficients["w"])
        assert float(c.min()) >= -1e-12 and float(c.sum()) == pytest.approx(1.0)
        assert torch.allclose(theta, sum(ci * v for ci, v in zip(c, V)).float(), atol=1e-5)
        losses = [r.loss for r in plan.iterations] + [plan.final_loss]
        assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


def test_model_granularity_uses_one_away_vertex_for_all_rows():
    scores = torch.tensor([[0.5, -1.0, 0.2], [0.5, -1.0, 0.3]])
    coefficients = torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.4, 0.4]], dtype=torch.float64)
    current = (coefficients.float() * scores).sum(dim=1)
    steps = choose_steps("pairwise", scores, scores, current, coefficients, [1, 1], "model")
    assert [(st.kind, st.toward, st.away) for st in steps] == [("pairwise", 1, 0)] * 2
    assert steps[0].scale == pytest.approx(0.2)  # the block's smallest weight on v0


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
