"""init: auto's screening: each candidate alone, then the screened task-arithmetic line
(fw/screened_start.py)."""

import pytest
import torch

from mergekit_fw.fw.screened_start import (
    PROBE,
    alone_row,
    screened_lines,
    weighted_row,
    weighted_rows,
)
from mergekit_fw.fw.start_grid import TA_GRID, line_position, ta_row
from tests.test_reads import _counting_reads


def test_the_lines_keep_the_candidates_that_gain_alone():
    assert screened_lines([2.0, 1.0, -3.0]) == [
        ("helpful", [1.0, 1.0, 0.0]), ("gain-weighted", [1.0, 0.5, 0.0])
    ]  # fmt: skip
    assert screened_lines([2.0, 2.0, -1.0]) == [("helpful", [1.0, 1.0, 0.0])]  # one line
    assert screened_lines([2.0, 1.0]) == [("gain-weighted", [1.0, 0.5])]  # helpful: uniform
    assert screened_lines([3.0, 3.0]) == []  # all alike: the uniform line already
    assert screened_lines([0.0, -1.0]) == []  # nothing gains
    assert screened_lines([1.0, float("nan")]) == []
    assert screened_lines([]) == []


def test_a_weighted_row_is_found_on_its_line_and_nowhere_else():
    w = [1.0, 0.25, 0.0]
    row = weighted_row(0.3, w)
    assert row == pytest.approx([1 - 0.3 * 1.25, 0.3, 0.075, 0.0])
    assert line_position(row, w) == 0.3
    assert line_position(row) is None  # not on the uniform line
    assert line_position(ta_row(0.2, 3), w) is None
    assert line_position([1.0, 0.0, 0.0, 0.0], w) == 0.0  # the base lies on every line
    assert alone_row(2, 0.3, 3) == [0.7, 0.0, 0.3, 0.0]


def test_only_the_grid_points_inside_the_set_are_rows():
    w = [1.0, 1.0, 0.5]
    hull = weighted_rows(TA_GRID, lambda lam: sum(lam) <= 1.0, "helpful", w)
    assert [line_position(row, w) for _, row in hull] == [0.1, 0.2, 0.3]
    assert hull[0][0] == "helpful task_arithmetic lambda=0.1"
    box = weighted_rows(TA_GRID, lambda lam: max(lam) <= 1.0, "helpful", w)
    assert len(box) == len(TA_GRID)


@pytest.fixture
def start_problem(zoo, noisy):
    """The zoo's base, two experts of the calibration tasks and a noise candidate."""
    from tests.helpers import start_problem as problem

    return problem(zoo, [zoo["base"], zoo["reverse"], zoo["add"], noisy])


@pytest.mark.e2e
def test_screening_drops_the_noise_and_reads_only_what_it_needs(start_problem, monkeypatch):
    """Each candidate alone is scored at PROBE; the screened lines carry the weights of
    those gains (the noise candidate only hurts: weight 0, and is not read for them); the
    parameters hold the table's best, formed as scored; every start's loss is the loss of
    forming it from the pool."""
    from mergekit_fw.fw.start_grid import builtin_rows, score_rows, set_combinations
    from mergekit_fw.settings import FWSettings

    model, slots, pool, problem = start_problem
    settings = FWSettings(calibration="x", iterations=1)
    loss = problem.loss_of(model)
    read = _counting_reads(monkeypatch)
    table, held = score_rows(builtin_rows(settings, 3), slots, pool, loss, model, settings)
    pool_bytes = sum(
        r.entry(s.name).numel * r.entry(s.name).dtype.itemsize for s in slots for r in pool.readers
    )
    names = [e["start"] for e in table]
    alone = [e for e in table if " alone " in e["start"]]
    assert [e["row"] for e in alone] == [alone_row(k, PROBE, 3) for k in (1, 2, 3)]
    base = table[names.index("base")]["loss"]
    gains = [base - e["loss"] for e in alone]
    assert gains[2] < 0 < min(gains[:2])  # the noise candidate alone is worse than the base
    lines = screened_lines(gains)
    assert [line for line, _ in lines] == ["helpful", "gain-weighted"]
    for line, w in lines:
        rows = [e["row"] for e in table if e["start"].startswith(line)]
        assert rows == [weighted_row(lam, w) for lam in TA_GRID]
    best = min(table, key=lambda e: e["loss"])
    # the noise hurts every line that keeps it; here the helpful line (the two experts,
    # equal weights) beats the gain-weighted one (docs/starts.md: neither wins everywhere)
    assert best["start"].startswith("helpful")
    assert held == best["row"] and loss() == pytest.approx(best["loss"], rel=1e-6)
    # the base, then every candidate for the uniform line and for the candidates alone, then
    # the two helpful ones for each screened line: 11 vertex reads, not 1 + 3 x 4; and the
    # winning helpful line's 2 once more (the gain-weighted line's t took its place)
    assert read["bytes"] == pool_bytes // 4 * (1 + 3 + 3 + 2 + 2 + 2)
    assert all(slot.param.grad is None for slot in slots)
    held_weights = {slot.name: slot.param.detach().clone() for slot in slots}
    formed, _ = score_rows([(e["start"], e["row"]) for e in table], slots, pool, loss)
    assert [e["loss"] for e in table] == pytest.approx([e["loss"] for e in formed], rel=1e-5)
    set_combinations(slots, pool, best["row"])  # the parameters held it, as formed from the pool
    for slot in slots:
        assert torch.allclose(held_weights[slot.name], slot.param, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_a_winner_off_the_last_line_is_formed_again(start_problem):
    """When the uniform line wins, its direction is gone from the buffers (a screened
    line's took its place): it is formed again, and the parameters hold the winner."""
    from mergekit_fw.fw import start_grid
    from mergekit_fw.settings import FWSettings

    model, slots, pool, problem = start_problem
    settings = FWSettings(calibration="x", iterations=1)
    alone = iter([94.0, 96.0, 101.0])  # two gain alone (base: 99), unequally
    calls: list = []

    def rigged() -> float:  # the uniform line (7 rows) descends; the others are worse
        calls.append(1)
        if len(calls) <= 7:
            return 100.0 - len(calls)
        return next(alone) if len(calls) <= 10 else 95.0

    rows = start_grid.builtin_rows(settings, 3)
    table, held = start_grid.score_rows(rows, slots, pool, rigged, model, settings)
    assert len(table) == 7 + 3 + 2 * len(start_grid.TA_GRID)
    assert table[start_grid.best_index(table)]["start"] == "task_arithmetic lambda=1.0"
    assert held == start_grid.ta_row(1.0, 3)
    held_weights = {slot.name: slot.param.detach().clone() for slot in slots}
    start_grid.set_combinations(slots, pool, held)
    for slot in slots:
        assert torch.allclose(held_weights[slot.name], slot.param, rtol=1e-5, atol=1e-6)


def test_screening_is_skipped_where_its_probe_is_outside_the_set(start_problem):
    """A box smaller than the probe: only the base and the task-arithmetic points inside."""
    from mergekit_fw.fw import start_grid
    from mergekit_fw.settings import FWSettings

    model, slots, pool, problem = start_problem
    settings = FWSettings(calibration="x", iterations=1, scale=0.2)
    rows = start_grid.builtin_rows(settings, 3)
    table, _ = start_grid.score_rows(rows, slots, pool, problem.loss_of(model), model, settings)
    assert [e["start"] for e in table] == [
        "base",
        "task_arithmetic lambda=0.1",
        "task_arithmetic lambda=0.2",
    ]


@pytest.mark.e2e
def test_screening_false_keeps_the_grid_to_one_read(start_problem, monkeypatch):
    """`screening: false`: the base and the task-arithmetic line only, from one read."""
    from mergekit_fw.fw import start_grid
    from mergekit_fw.settings import FWSettings

    model, slots, pool, problem = start_problem
    settings = FWSettings(calibration="x", iterations=1, screening=False)
    read = _counting_reads(monkeypatch)
    rows = start_grid.builtin_rows(settings, 3)
    table, held = start_grid.score_rows(rows, slots, pool, problem.loss_of(model), model, settings)
    assert [e["start"] for e in table] == [name for name, _ in rows]
    pool_bytes = sum(
        r.entry(s.name).numel * r.entry(s.name).dtype.itemsize for s in slots for r in pool.readers
    )
    assert read["bytes"] == pool_bytes and held == min(table, key=lambda e: e["loss"])["row"]


def test_screening_is_an_init_auto_option():
    from mergekit_fw.settings import FWSettings

    assert FWSettings(calibration="x", iterations=1, init="base", screening=False).unused() == [
        "screening only applies with init: auto, so it is ignored here"
    ]


@pytest.mark.e2e
def test_forming_each_start_screens_alike(start_problem):
    """Where the model cannot run block by block (`RowScan`: no model here), the same table
    and losses come from forming each start in the parameters, which end at the best."""
    from mergekit_fw.fw.start_grid import builtin_rows, score_rows, set_combinations
    from mergekit_fw.settings import FWSettings

    model, slots, pool, problem = start_problem
    settings = FWSettings(calibration="x", iterations=1)
    loss, rows = problem.loss_of(model), builtin_rows(settings, 3)
    lines, _ = score_rows(rows, slots, pool, loss, model, settings)
    formed, held = score_rows(rows, slots, pool, loss, None, settings)
    assert [e["start"] for e in formed] == [e["start"] for e in lines]
    assert [e["loss"] for e in formed] == pytest.approx([e["loss"] for e in lines], rel=1e-5)
    assert held == min(formed, key=lambda e: e["loss"])["row"]
    held_weights = {slot.name: slot.param.detach().clone() for slot in slots}
    set_combinations(slots, pool, held)
    for slot in slots:
        assert torch.equal(held_weights[slot.name], slot.param)
