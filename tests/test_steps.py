"""Step rules: the quadratic fit's cost and safeguards (fw/steps.py)."""

import math

import pytest

from mergekit_fw.fw.steps import LineSearch, QuadraticStep


def counted(loss):
    calls = []

    def loss_at(gamma):
        calls.append(gamma)
        return loss(gamma)

    return loss_at, calls


def test_quadratic_finds_a_parabola_minimum_in_two_passes():
    loss_at, calls = counted(lambda g: (g - 0.3) ** 2 + 1.0)
    gamma = QuadraticStep(10).choose(0, 1.09, loss_at, slope=-0.6, previous=None)
    assert gamma == pytest.approx(0.3)
    assert len(calls) == 2 and calls[0] == 1.0  # first trial: a full step


def test_quadratic_trial_is_twice_the_previous_step():
    loss_at, calls = counted(lambda g: (g - 0.05) ** 2)
    gamma = QuadraticStep(10).choose(3, 0.0025, loss_at, slope=-0.1, previous=0.04)
    assert calls[0] == pytest.approx(0.08)
    assert gamma == pytest.approx(0.05)
    assert len(calls) == 2


def test_quadratic_falls_back_when_no_point_lowers_the_loss():
    # a narrow well near 0, a wall elsewhere: the fit's minimiser overshoots
    def loss(g):
        return 1.0 - 0.5 * g if g < 0.01 else 1.0 + 100.0 * g

    loss_at, calls = counted(loss)
    gamma = QuadraticStep(12).choose(0, 1.0, loss_at, slope=-0.5, previous=None)
    assert 0.0 < gamma < 0.01
    assert loss(gamma) < 1.0
    assert len(calls) <= 12


def test_quadratic_never_raises_the_loss():
    loss_at, _ = counted(lambda g: 1.0 + g)  # slope claimed negative, loss rises: a bad slope
    gamma = QuadraticStep(6).choose(0, 1.0, loss_at, slope=-1.0, previous=None)
    assert gamma == 0.0


@pytest.mark.parametrize("slope", [None, 0.0, math.nan])
def test_quadratic_without_a_descent_slope_is_the_line_search(slope):
    def loss(g):
        return (g - 0.2) ** 2 + math.sin(7 * g) * 0.01

    a, calls_a = counted(loss)
    b, calls_b = counted(loss)
    assert QuadraticStep(10).choose(0, loss(0.0), a, slope=slope) == LineSearch(10).choose(
        0, loss(0.0), b
    )
    assert calls_a == calls_b


def test_quadratic_goes_to_the_end_when_the_loss_falls_faster_than_linear():
    loss_at, calls = counted(lambda g: 1.0 - g * g)  # concave: the best step is 1
    gamma = QuadraticStep(10).choose(2, 1.0, loss_at, slope=-0.01, previous=0.1)
    assert gamma == 1.0
    assert calls == [0.2, 1.0]


@pytest.mark.parametrize(
    "options",
    [
        {"constraint": "hull"},
        {"constraint": "box"},
        {"constraint": "simplex", "scale": 1.0},
        {"constraint": "box", "fw_steps": "away"},
        {"constraint": "hull", "fw_steps": "pairwise"},
    ],
)
def test_loop_slope_is_the_directional_derivative(options, monkeypatch):
    """The slope handed to the step rule (from the score table, no extra pass) equals the
    finite difference of the calibration loss along the direction the loop steps along."""
    import torch

    from mergekit_fw.api import frank_wolfe_merge

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    model = model.double()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    candidates = [{k: v + 0.3 * torch.randn_like(v) for k, v in base.items()} for _ in range(3)]
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    seen = []
    original = QuadraticStep.choose

    def spy(self, t, f0, loss_at, slope=None, previous=None):
        h = 1e-6
        seen.append((slope, (loss_at(h) - f0) / h))
        return original(self, t, f0, loss_at, slope, previous)

    monkeypatch.setattr(QuadraticStep, "choose", spy)
    frank_wolfe_merge(
        model, candidates, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), [(x, y)],
        iterations=4, step="quadratic", init="base", **options,
    )  # fmt: skip
    assert seen
    for slope, difference in seen:
        assert slope == pytest.approx(difference, rel=1e-3, abs=1e-6)
