"""FW-soft: simplex projection, coefficient fitting, top-k and per-task selection."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mergekit_fw.fw.loop import Slot
from mergekit_fw.fw.objectives import Batch
from mergekit_fw.fw.soft import SoftFrankWolfe, argmin_excluding, project_simplex, topk_vertices
from mergekit_fw.settings import FWConfigError, FWSettings
from tests.helpers import Distance, Pool, Vector

vectors = st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=6)


@given(vectors)
@settings(max_examples=200, deadline=None)
def test_projection_lands_on_the_simplex(values):
    x = project_simplex(torch.tensor([values], dtype=torch.float64))
    assert float(x.min()) >= 0.0
    assert float(x.sum()) == pytest.approx(1.0, abs=1e-9)


@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_projection_is_the_identity_on_simplex_points(values):
    v = torch.tensor([values], dtype=torch.float64)
    v = v / v.sum()
    torch.testing.assert_close(project_simplex(v), v, atol=1e-12, rtol=0)


def brute_force(v: torch.Tensor) -> torch.Tensor:
    """Try every support: the projection is v_S - (sum v_S - 1)/|S| on the best feasible S."""
    best, best_d = None, float("inf")
    m = v.numel()
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            x = torch.zeros_like(v)
            idx = list(support)
            x[idx] = v[idx] - (v[idx].sum() - 1) / size
            if float(x.min()) >= -1e-12 and float((x - v).norm()) < best_d:
                best, best_d = x, float((x - v).norm())
    return best


@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_projection_matches_brute_force(values):
    v = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(project_simplex(v[None])[0], brute_force(v), atol=1e-9, rtol=0)


def test_topk_and_exclusion_are_stable():
    scores = torch.tensor([[0.5, -1.0, -1.0, 2.0], [3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    assert topk_vertices(scores, 2, per_tensor=True).tolist() == [[1, 2], [3, 2]]
    assert topk_vertices(scores, 2, per_tensor=False).tolist() == [
        [2, 1],
        [2, 1],
    ]  # sums 3.5, 1, 0, 2
    first = argmin_excluding(scores, None, per_tensor=True)
    second = argmin_excluding(scores, first[:, None], per_tensor=True)
    assert first.tolist() == [1, 3] and second.tolist() == [2, 2]


# -- a toy where the best combination is known: loss = ||theta - target||^2 ----------------
def run_soft(vertices, targets, **options):
    model = Vector(vertices[0])
    dummy = torch.zeros(1, 1, dtype=torch.long)
    batches = [Batch(i, dummy, dummy, dummy, 1.0 / len(targets), 1) for i in range(len(targets))]
    names = [f"task{i}" for i in range(len(targets))]
    settings = FWSettings(calibration="x", variant="soft", constraint="hull", **options)
    loop = SoftFrankWolfe(
        model,
        [Slot("w", model.w)],
        Pool(vertices),
        Distance(targets),
        batches,
        names,
        settings,
        quiet=True,
    )
    return loop.run()


def test_soft_fw_recovers_the_best_convex_combination():
    gen = torch.Generator().manual_seed(0)
    base, v1, v2, v3 = (
        torch.randn(6, generator=gen, dtype=torch.float64).float() for _ in range(4)
    )
    target = 0.3 * v1 + 0.7 * v2
    plan = run_soft(
        [base, v1, v2, v3], [target], iterations=6, topk=2, coefficients="simplex",
        inner_steps=400, inner_lr=0.05,
    )  # fmt: skip
    assert plan.coefficients["w"] == pytest.approx([0.0, 0.3, 0.7, 0.0], abs=1e-3)
    assert plan.final_loss < 1e-5
    losses = [r.loss for r in plan.iterations] + [plan.final_loss]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


def test_simplex_fit_is_scale_free():
    """A loss scaled by 1e-6 (a flat start, as at a classifier near log 2) still moves.

    With a raw-gradient step the weights would move by about 1e-7 in 8 fit steps."""
    from mergekit_fw.fw.soft import fit_coefficients

    target = torch.tensor([[0.25, 0.5]], dtype=torch.float64)

    def loss_of(w):
        value = 1e-6 * ((w - target) ** 2).sum()
        value.backward()
        return float(value.detach())

    w, loss = fit_coefficients(loss_of, 1, 2, simplex=True, steps=8, lr=1.0, init=0.0)
    assert float((w - target).abs().max()) < 0.05
    assert loss < 1e-6 * 0.25**2 * 0.05


def test_free_coefficients_are_unconstrained():
    gen = torch.Generator().manual_seed(1)
    base, v1, v2 = (torch.randn(6, generator=gen) for _ in range(3))
    target = base + 1.5 * (v1 - base)  # outside the hull: only free weights reach it
    plan = run_soft(
        [base, v1, v2], [target], iterations=1, topk=1, coefficients="free", inner_steps=600, inner_lr=0.05,
    )  # fmt: skip
    assert plan.coefficients["w"] == pytest.approx([-0.5, 1.5, 0.0], abs=2e-2)


def test_per_task_selection_picks_distinct_vertices():
    gen = torch.Generator().manual_seed(2)
    base, v1, v2, v3 = (torch.randn(6, generator=gen) for _ in range(4))
    # both tasks have (almost) the same target, so the same favourite vertex: the second
    # task must take its best *other* vertex
    plan = run_soft(
        [base, v1, v2, v3], [v1, v1 + 0.01], iterations=2, select="per_task", inner_steps=50
    )
    for record in plan.iterations:
        chosen = record.picks["w"].split("+")
        assert len(chosen) == 2 and len(set(chosen)) == 2
        (first,), (second,) = record.task_wins["task0"], record.task_wins["task1"]
        assert [first, second] == chosen


def test_soft_rejects_the_zero_vertex():
    with pytest.raises(FWConfigError, match="zero_vertex applies to the hard variant"):
        FWSettings.from_parameters(
            {"calibration": "x", "iterations": 1, "variant": "soft", "zero_vertex": True}
        )
