"""The authors' LMO and step test vectors (shared/research/fw_reference.md, section 9)."""

from __future__ import annotations

import pytest
import torch

from mergekit_fw.fw.oracles import (
    ZERO,
    ScoreTable,
    cosine_scores,
    inner_scores,
    model_oracle,
    tensor_oracle,
)
from mergekit_fw.fw.steps import ConstantStep, LineSearch, ScheduleStep, fw_gap


def table(g: torch.Tensor, vertices: list[torch.Tensor], theta: torch.Tensor) -> ScoreTable:
    """Score table for one tensor, as the streaming pass would build it."""
    g64 = g.double()
    dots = torch.tensor([[float(g64 @ v.double()) for v in vertices]], dtype=torch.float64)
    norms = torch.tensor([[float(v.double().norm()) for v in vertices]], dtype=torch.float64)
    return ScoreTable(dots, norms, g64.norm().reshape(1), (g64 @ theta.double()).reshape(1))


G = torch.tensor([1.0, 0.0])
THETA_1, THETA_2, THETA_0 = (
    torch.tensor([-1.0, 1.0]),
    torch.tensor([0.0, 1.0]),
    torch.tensor([0.5, 0.5]),
)


def test_cosine_with_zero_vertex_picks_theta_1_and_steps_like_d_hard():
    t = table(G, [THETA_1, THETA_2, THETA_0], THETA_0)
    scores = cosine_scores(t)[0]
    assert scores.tolist() == pytest.approx([-0.70711, 0.0, 0.70711], abs=1e-5)
    (pick,) = tensor_oracle(cosine_scores(t), zero_vertex=True)
    assert pick == 0
    gamma = ScheduleStep(0.029).choose(0, 0.0, lambda _: 0.0)
    assert gamma == pytest.approx(0.029)
    updated = THETA_0 + gamma * ([THETA_1, THETA_2, THETA_0][pick] - THETA_0)
    assert updated.tolist() == pytest.approx([0.4565, 0.5145], abs=1e-6)


def test_zero_vertex_wins_when_every_cosine_is_non_negative():
    t = table(G, [THETA_2, THETA_0], THETA_0)
    (pick,) = tensor_oracle(cosine_scores(t), zero_vertex=True)
    assert pick == ZERO
    gamma = 0.029
    updated = THETA_0 + gamma * (torch.zeros(2) - THETA_0)
    assert updated.tolist() == pytest.approx((0.971 * THETA_0).tolist())


def test_v_hard_without_zero_vertex_takes_the_smallest_positive_cosine():
    t = table(G, [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0])], THETA_0)
    (pick,) = tensor_oracle(cosine_scores(t), zero_vertex=False)
    assert pick == 1  # cos 0.316 < 0.707


@pytest.mark.parametrize(
    "step_size, t, expected",
    [
        (0.029, 0, 0.029),  # D-hard: 0.29 * 0.1 * 2/(t+2) = 0.058/(t+2)
        (0.029, 9, 0.058 / 11),
        (0.03, 0, 0.03),  # G-hard: 0.06/(t+2)
        (0.03, 9, 0.06 / 11),
        (0.003, 0, 0.003),  # V-hard README: 0.006/(t+2)
        (0.003, 2, 0.0015),
    ],
)
def test_authors_schedules(step_size, t, expected):
    assert ScheduleStep(step_size).choose(t, 0.0, lambda _: 0.0) == pytest.approx(
        expected, rel=1e-6
    )


def test_d_hard_effective_steps_match_the_reference_table():
    gammas = [ScheduleStep(0.029).choose(t, 0.0, lambda _: 0.0) for t in range(10)]
    assert sum(gammas) == pytest.approx(0.117, abs=5e-4)
    left = 1.0
    for gamma in gammas:
        left *= 1 - gamma
    assert left == pytest.approx(0.889, abs=5e-4)


def test_ties_go_to_the_first_candidate():
    t = table(G, [THETA_1, THETA_1.clone(), THETA_2], THETA_0)
    assert tensor_oracle(cosine_scores(t), zero_vertex=False) == [0]
    assert tensor_oracle(inner_scores(t), zero_vertex=False) == [0]


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e4])
def test_cosine_selection_is_invariant_to_loss_scale(scale):
    gen = torch.Generator().manual_seed(0)
    vertices = [torch.randn(16, generator=gen) for _ in range(5)]
    g = torch.randn(16, generator=gen)
    theta = torch.randn(16, generator=gen)
    base = tensor_oracle(cosine_scores(table(g, vertices, theta)), zero_vertex=True)
    assert tensor_oracle(cosine_scores(table(g * scale, vertices, theta)), zero_vertex=True) == base
    assert tensor_oracle(
        inner_scores(table(g * scale, vertices, theta)), zero_vertex=False
    ) == tensor_oracle(inner_scores(table(g, vertices, theta)), zero_vertex=False)


def test_inner_and_cosine_rank_differently_when_norms_differ():
    # paper (inner) prefers the long vertex, the authors' cosine the well-aligned short one
    t = table(G, [torch.tensor([-10.0, 10.0]), torch.tensor([-1.0, 0.0])], THETA_0)
    assert tensor_oracle(inner_scores(t), zero_vertex=False) == [0]
    assert tensor_oracle(cosine_scores(t), zero_vertex=False) == [1]


def test_task_wise_oracle_sums_per_tensor_cosines():
    rows = torch.tensor([[-0.9, -0.1], [0.5, -0.2]], dtype=torch.float64)  # 2 tensors x 2 vertices
    assert model_oracle(rows, zero_vertex=False) == [0, 0]  # sums: -0.4 vs -0.3
    assert tensor_oracle(rows, zero_vertex=False) == [0, 1]


def test_fw_gap_and_step_rules():
    assert fw_gap(current_dot=0.5, picked_dot=-1.0) == pytest.approx(1.5)
    assert ConstantStep(0.25).choose(5, 1.0, lambda _: 0.0) == 0.25
    quadratic = lambda gamma: (gamma - 0.3) ** 2  # noqa: E731
    gamma = LineSearch(evals=16).choose(0, quadratic(0.0), quadratic)
    assert gamma == pytest.approx(0.3, abs=5e-3)
    rising = lambda gamma: 1.0 + gamma  # noqa: E731
    assert LineSearch(evals=8).choose(0, 1.0, rising) == 0.0


@pytest.mark.parametrize("best", [0.7, 0.05, 0.004])
def test_line_search_finds_small_steps(best):
    """A loss that only allows small steps (benchmarks: every golden-section step was 0)."""
    loss = lambda gamma: (gamma - best) ** 2  # noqa: E731
    gamma = LineSearch(evals=12).choose(0, loss(0.0), loss)
    assert 0.0 < gamma and loss(gamma) < loss(0.0)
    assert gamma == pytest.approx(best, rel=0.15)
