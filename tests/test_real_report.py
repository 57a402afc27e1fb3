"""The real tier's page (benchmarks/real/report.py): the relevance curve's rows."""

import pytest

from benchmarks.real.report import relevance_summary

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
