"""The real tier's page (benchmarks/real/report.py): the relevance curve and FW-soft lines."""

import pytest

from benchmarks.real.report import relevance_summary, soft_lines

pytestmark = pytest.mark.unit


def _run(calib: float, test: float | None = None) -> dict:
    return {"calib_mean": calib, **({} if test is None else {"test_mean": test})}


def test_relevance_curve_compares_fw_with_the_baseline_chosen_on_calibration():
    tab = {
        "rel2": {
            "fw_defaults@20:8": _run(0.9, 0.85),
            # the best test mean, but not the best calibration mean: not the one a user picks
            "ties": _run(0.5, 0.80),
            "iso_c": _run(0.7, 0.60),
        },
        "targets4": {"fw_defaults@10:16": _run(0.8, 0.8), "iso_c": _run(0.6, 0.55)},
        "all8": {"fw_defaults@20:8": _run(0.1, 0.1)},  # not a point of the curve
    }
    lines = relevance_summary(tab)
    rows = [ln for ln in lines if ln.startswith("| 2 ") or ln.startswith("| 4 ")]
    assert len(rows) == 2
    assert "0.850" in rows[0] and "0.600 (Iso-C, calib. 0.700)" in rows[0]
    assert rows[0].endswith("| +0.250 |")
    assert "8 x 2 = 16" in rows[0]  # 8 per task, 2 tasks
    # targets4 has no run at the curve's budget: said, not filled in from another budget
    assert "not run" in rows[1] and rows[1].endswith("| - |")
    assert not any("all8" in ln for ln in lines if ln.startswith("|"))


def test_no_relevance_section_without_its_own_pools():
    tab = {"targets4": {"fw_defaults@20:8": _run(0.8, 0.8)}, "table1": {}}
    assert relevance_summary(tab) == []


def test_fw_soft_is_compared_with_fw_defaults_at_its_own_budget_only():
    def fw(test, loss, wall):
        return {**_run(0.9, test), "fw": {"final_loss": loss}, "wall_s": wall, "threads": 2}

    tab = {
        "rel2": {
            "fw_soft@10:8": fw(0.86, 0.5, 900.0),
            "fw_defaults@10:8": fw(0.85, 0.6, 100.0),
            "fw_defaults@20:8": fw(0.87, 0.4, 160.0),
        },
        "targets4": {"fw_soft@10:16": fw(0.8, 0.4, 1.0)},  # no FW defaults at 10:16 there
    }
    lines = [ln for ln in soft_lines(tab) if ln]
    assert len(lines) == 1
    assert "0.860 / 0.850" in lines[0] and "900 s / 100 s (9.0x" in lines[0]
