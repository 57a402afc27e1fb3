"""Constraint sets over task vectors (fw/constraints.py): LMOs against brute force, streamed
directions, and the box on the tiny zoo."""

from __future__ import annotations

import itertools

import pytest
import torch
from mergekit.options import MergeOptions

from mergekit_fw.fw.constraints import Box, Hull, Simplex
from mergekit_fw.fw.oracles import ScoreTable
from mergekit_fw.fw.projections import project_capped_simplex
from mergekit_fw.mergekit.runner import prepare
from mergekit_fw.settings import FWConfigError, FWSettings
from tests.helpers import config


def random_table(seed: int, tensors: int, vertices: int) -> ScoreTable:
    gen = torch.Generator().manual_seed(seed)
    dots = torch.randn(tensors, vertices, generator=gen, dtype=torch.float64)
    return ScoreTable(
        dots=dots,
        norms=torch.rand(tensors, vertices, generator=gen, dtype=torch.float64) + 0.1,
        grad_norms=torch.rand(tensors, generator=gen, dtype=torch.float64) + 0.1,
        current_dots=torch.randn(tensors, generator=gen, dtype=torch.float64),
    )


def box_vertices(n: int, kappa: float) -> list[torch.Tensor]:
    return [
        torch.tensor(v, dtype=torch.float64) * kappa for v in itertools.product([0, 1], repeat=n)
    ]


def simplex_vertices(n: int, kappa: float) -> list[torch.Tensor]:
    return [torch.zeros(n, dtype=torch.float64)] + [
        torch.eye(n, dtype=torch.float64)[i] * kappa for i in range(n)
    ]


def value(dots_row: torch.Tensor, lam: torch.Tensor) -> float:
    """<g, base + sum lambda_i tau_i> = <g, base> + sum lambda_i (<g, v_i> - <g, base>)."""
    return float(dots_row[0] + (lam * (dots_row[1:] - dots_row[0])).sum())


@pytest.mark.parametrize("kind", ["box", "simplex"])
@pytest.mark.parametrize("granularity", ["tensor", "model"])
@pytest.mark.parametrize("seed", range(6))
def test_task_vector_lmos_match_brute_force(kind, granularity, seed):
    kappa = [1.0, 0.5, 2.0][seed % 3]
    n = 2 + seed % 4  # candidates
    table = random_table(seed, tensors=5, vertices=n + 1)
    cls, enumerate_ = (Box, box_vertices) if kind == "box" else (Simplex, simplex_vertices)
    vertex = cls(kappa, granularity).lmo(table)
    assert vertex.rows.sum(dim=1) == pytest.approx([1.0] * 5)  # affine: base gets 1 - sum
    got = vertex.dots(table)
    if granularity == "tensor":
        for i in range(5):
            best = min(value(table.dots[i], lam) for lam in enumerate_(n, kappa))
            assert float(got[i]) == pytest.approx(best, abs=1e-12)
    else:  # one lambda for every tensor
        best = min(sum(value(table.dots[i], lam) for i in range(5)) for lam in enumerate_(n, kappa))
        assert float(got.sum()) == pytest.approx(best, abs=1e-12)
        assert torch.equal(vertex.rows, vertex.rows[:1].expand_as(vertex.rows))
    # the vertex is one of the enumerated ones
    for row in vertex.rows[:, 1:]:
        assert any(torch.allclose(row, lam) for lam in enumerate_(n, kappa))


def test_box_takes_every_descending_task_vector_and_base_may_go_negative():
    dots = torch.tensor([[1.0, 0.5, 2.0, -1.0, 0.9]], dtype=torch.float64)  # tau: -.5 1 -2 -.1
    table = ScoreTable(dots, torch.ones_like(dots), torch.ones(1), torch.zeros(1))
    vertex = Box(1.0, "tensor").lmo(table)
    assert vertex.rows.tolist() == [[-2.0, 1.0, 0.0, 1.0, 1.0]]
    assert vertex.members == [[1, 3, 4]]
    simplex = Simplex(1.5, "tensor").lmo(table)
    assert simplex.rows.tolist() == [[-0.5, 0.0, 0.0, 1.5, 0.0]]
    ascent = ScoreTable(-dots + 3.0, torch.ones_like(dots), torch.ones(1), torch.zeros(1))
    ascent.dots[0, 0] = -5.0  # every task vector points uphill: s is the base
    for cls in (Box, Simplex):
        picked = cls(1.0, "tensor").lmo(ascent)
        assert picked.rows.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]] and picked.members == [[]]


class ListPool:
    """A VertexSource over in-memory tensors, which counts reads."""

    def __init__(self, vertices: list[dict[str, torch.Tensor]]):
        self.vertices = vertices
        self.labels = [f"v{k}" for k in range(len(vertices))]
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.vertices)

    def tensor(self, k: int, name: str) -> torch.Tensor:
        self.reads.append(k)
        return self.vertices[k][name].clone()


@pytest.mark.parametrize("cls", [Box, Simplex])
def test_directions_are_s_minus_theta_reading_only_the_selected(cls):
    gen = torch.Generator().manual_seed(3)
    pool = ListPool([{"w": torch.randn(4, 3, generator=gen)} for _ in range(5)])
    theta = torch.randn(4, 3, generator=gen)
    table = random_table(11, tensors=1, vertices=5)
    vertex = cls(0.7, "tensor").lmo(table)
    out = torch.empty_like(theta)
    cls(0.7, "tensor").direction_(pool, 0, "w", vertex, theta, out)
    expected = sum(float(c) * pool.vertices[k]["w"] for k, c in enumerate(vertex.rows[0])) - theta
    assert torch.allclose(out, expected, atol=1e-5)
    assert sorted(set(pool.reads)) == sorted({0, *vertex.members[0]})


def test_hull_is_the_old_one_hot_oracle():
    table = random_table(5, tensors=4, vertices=3)
    vertex = Hull("inner", "tensor", zero_vertex=False).lmo(table)
    assert vertex.rows.tolist() == [
        [1.0 if k == int(torch.argmin(row)) else 0.0 for k in range(3)] for row in table.dots
    ]


def test_capped_simplex_projection_is_the_nearest_feasible_point():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(50, 4, generator=gen, dtype=torch.float64) * 2
    budget = torch.rand(50, generator=gen, dtype=torch.float64) * 2
    budget[0] = 0.0
    p = project_capped_simplex(v, budget)
    assert (p >= 0).all() and (p.sum(dim=1) <= budget + 1e-12).all()
    assert p[0].abs().max() == 0.0
    # optimality against random feasible points
    for _ in range(200):
        q = torch.rand(50, 4, generator=gen, dtype=torch.float64)
        q = q / q.sum(dim=1, keepdim=True) * budget[:, None] * torch.rand(50, 1, generator=gen)
        assert ((v - p).norm(dim=1) <= (v - q).norm(dim=1) + 1e-12).all()


@pytest.mark.parametrize(
    "options, fix",
    [
        ({"constraint": "box", "zero_vertex": True}, "Remove zero_vertex"),
        ({"constraint": "simplex", "lmo": "cosine"}, "lmo: inner"),
        ({"constraint": "box", "variant": "soft", "coefficients": "free"}, "coefficients: simplex"),
        ({"constraint": "box", "init": "task_arithmetic", "init_scale": 1.5}, "init_scale"),
        ({"constraint": "box", "lora_mode": "factors"}, "lora_mode: weights"),
        ({"constraint": "box", "scale": 0.0}, "scale"),
        ({"constraint": "cube"}, "constraint"),
    ],
)
def test_combinations_that_make_no_sense_are_rejected(options, fix):
    with pytest.raises(FWConfigError) as error:
        FWSettings.from_parameters({"calibration": "c.jsonl", "iterations": 1, **options})
    assert fix in str(error.value)


@pytest.fixture(scope="module")
def box_plan(zoo):
    cfg = config(
        zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=3, constraint="box",
    )  # fmt: skip
    return prepare(cfg, MergeOptions(quiet=True))


def test_box_plan_is_a_descending_linear_combination_outside_the_hull(box_plan):
    losses = [r.loss for r in box_plan.iterations] + [box_plan.final_loss]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert box_plan.final_loss < box_plan.iterations[0].loss - 0.05
    for row in box_plan.coefficients.values():
        assert sum(row) == pytest.approx(1.0, abs=1e-9)  # base + sum lambda tau
        assert all(-1e-12 <= c <= 1.0 + 1e-12 for c in row[1:])  # 0 <= lambda <= kappa
    # the box adds several task vectors at once: some tensor's lambdas sum above 1
    assert max(sum(row[1:]) for row in box_plan.coefficients.values()) > 1.0 + 1e-6
    first = box_plan.iterations[0]
    assert any("+" in pick for pick in first.picks.values())


def test_simplex_start_outside_the_set_is_rejected_before_any_gradient(zoo, monkeypatch):
    from mergekit_fw.fw import loop

    def no_gradient(*args, **kwargs):
        raise AssertionError("a gradient was computed")

    monkeypatch.setattr(loop.FrankWolfe, "iteration", no_gradient)
    cfg = config(
        zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]],
        calibration=f"{zoo['calib']}/reverse.jsonl", iterations=1, constraint="simplex",
        init="task_arithmetic", init_scale=0.5,
    )  # fmt: skip
    with pytest.raises(FWConfigError, match="init_scale"):
        prepare(cfg, MergeOptions(quiet=True))


def test_projected_fit_recovers_the_clamped_optimum():
    from mergekit_fw.fw.projections import project_box
    from mergekit_fw.fw.soft import fit_coefficients

    target = torch.tensor([[1.5, -0.3, 0.4]], dtype=torch.float64)

    def loss_of(w):
        value = ((w - target) ** 2).sum()
        value.backward()
        return float(value.detach())

    zeros, ones = torch.zeros_like(target), torch.ones_like(target)
    w, _ = fit_coefficients(
        loss_of, 1, 3, simplex=True, steps=200, lr=1.0, init=0.0,
        project=lambda d: project_box(d, zeros, ones),
    )  # fmt: skip
    assert w[0].tolist() == pytest.approx([1.0, 0.0, 0.4], abs=1e-3)
    capped, _ = fit_coefficients(
        loss_of, 1, 3, simplex=True, steps=200, lr=1.0, init=0.0,
        project=lambda d: project_capped_simplex(d, torch.tensor([1.2], dtype=torch.float64)),
    )  # fmt: skip
    # the nearest point of {w >= 0, sum <= 1.2} to (1.5, -0.3, 0.4): (1.15, 0, 0.05)
    assert capped[0].tolist() == pytest.approx([1.15, 0.0, 0.05], abs=1e-3)


@pytest.mark.parametrize(
    "kind, granularity", [("box", "tensor"), ("box", "model"), ("simplex", "tensor")]
)
def test_soft_over_task_vectors_stays_in_the_set_and_descends(zoo, kind, granularity):
    kappa = 1.0 if kind == "box" else 1.5
    cfg = config(
        zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=2, constraint=kind,
        scale=kappa, variant="soft", topk=2, inner_steps=4, granularity=granularity,
        fit_granularity=granularity, init="base",  # the fit's own descent, from the base
    )  # fmt: skip
    plan = prepare(cfg, MergeOptions(quiet=True))
    losses = [r.loss for r in plan.iterations] + [plan.final_loss]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert plan.final_loss < plan.iterations[0].loss - 0.05
    for row in plan.coefficients.values():
        lam = row[1:]
        assert sum(row) == pytest.approx(1.0, abs=1e-9)
        assert min(lam) >= -1e-9
        if kind == "box":
            assert max(lam) <= kappa + 1e-9
        else:
            assert sum(lam) <= kappa + 1e-9
    if granularity == "model":  # one lambda per candidate for the whole model
        rows = list(plan.coefficients.values())
        assert all(r == pytest.approx(rows[0], abs=1e-9) for r in rows)
    assert "+" in next(iter(plan.iterations[0].picks.values()))
