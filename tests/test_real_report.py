"""The real tier's page (benchmarks/real/report.py): relevance curve, FW-soft lines, commands."""

import pytest

from benchmarks.real import report
from benchmarks.real.report import make_commands, relevance_summary, soft_lines, table1_summary

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
    assert "0.860 / 0.850" in lines[0] and "900 s / 100 s (9.0x; both on 2" in lines[0]
    tab["rel2"]["fw_defaults@10:8"]["threads"] = 1  # no ratio across thread counts
    line = next(ln for ln in soft_lines(tab) if ln)
    assert "900 s / 100 s (on 2 / 1 torch threads: no time ratio)" in line and "9.0x" not in line


MAKEFILE = """\
REAL_PKG := $(CURDIR)/snap
REAL := PYTHONPATH=$(REAL_PKG) nice -n 10 $(BIN)/python -m benchmarks.real
REAL_GRID := --ta-weights 0.2,0.3 \\
\t--alphas iso_c:1.0,1.5,2.0 --test-best-only

.PHONY: bench-real
bench-real: install
\t$(BIN)/pip install -q gguf
\tgit archive HEAD mergekit_fw | tar -x -C $(REAL_PKG)
\t$(REAL).merges --pools rel2 --methods iso_c,iso_cts,tsv_m,task_arithmetic,ties $(REAL_GRID) \\
\t\t--alphas iso_cts:0.5,0.7,1.0,1.5,2.0 --alphas tsv_m:0.3,0.45,0.6,1.0,1.5
\t$(BIN)/python -m benchmarks.real.report

other:
\techo not this one
"""


def test_reproduce_block_is_the_makefile_target_as_a_user_types_it(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text(MAKEFILE)
    lines = make_commands("bench-real", makefile)
    assert lines[0] == "pip install -q gguf"
    assert not any("archive" in ln or "REAL_PKG" in ln or "echo" in ln for ln in lines)
    assert lines[-1] == "python -m benchmarks.real.report"
    merge = lines[1:-1]
    assert merge[0].startswith("python -m benchmarks.real.merges --pools rel2 ")
    # continuations joined, variables expanded, broken again before an option, within 100
    assert all(ln.endswith(" \\") for ln in merge[:-1]) and all(len(ln) <= 100 for ln in merge)
    assert all(ln.startswith("    --") for ln in merge[1:])
    words = " ".join(ln.removesuffix(" \\").strip() for ln in merge).split()
    assert words[3:] == [
        "--pools", "rel2", "--methods", "iso_c,iso_cts,tsv_m,task_arithmetic,ties",
        "--ta-weights", "0.2,0.3", "--alphas", "iso_c:1.0,1.5,2.0", "--test-best-only",
        "--alphas", "iso_cts:0.5,0.7,1.0,1.5,2.0", "--alphas", "tsv_m:0.3,0.45,0.6,1.0,1.5",
    ]  # fmt: skip


def _fw(iterations: int, samples: int, calib: float, test: float) -> dict:
    return {"setting": {"iterations": iterations, "calib_per_task": samples},
            "calib_mean": calib, "test_mean": test, "wall_s": 1.0, "peak_rss_mb": 1.0,
            "calib": {"add": calib}, "fw": {"losses": [3.0, 2.0], "final_loss": 2.0}}  # fmt: skip


def test_table1_budgets_with_equal_iterations_are_told_in_the_order_they_ran():
    tab = {"table1": {
        "fw_defaults@20:16": _fw(20, 16, 0.6, 0.58),
        "fw_defaults@10:8": _fw(10, 8, 0.45, 0.45),
        "fw_defaults@20:8": _fw(20, 8, 0.54, 0.52),
        "iso_c": {"setting": {"alpha": 1.5}, "calib_mean": 0.5, "test_mean": 0.48,
                  "wall_s": 1.0, "peak_rss_mb": 1.0, "calib": {"add": 0.5}},
    }}  # fmt: skip
    text = "\n".join(table1_summary(tab))
    budget = next(ln for ln in text.splitlines() if ln.startswith("- FW's budgets"))
    assert budget.index("(10 it., 8/task) came first") < budget.index("so (20 it., 8/task)")
    assert "Then (20 it., 16/task): more samples per task" in budget
    assert "- FW defaults (20 it., 16/task) - best baseline (Iso-C): +0.100." in text


def test_a_variable_that_names_another_is_expanded_and_an_unknown_one_is_an_error(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        MAKEFILE + "REAL_G := REAL_MODEL=gemma3 $(REAL)\n"
        "gemma:\n\t$(REAL_G).build --tasks targets\nbroken:\n\t$(NOWHERE)/python -m x\n"
    )
    assert make_commands("gemma", makefile) == [
        "REAL_MODEL=gemma3 python -m benchmarks.real.build --tasks targets"
    ]
    with pytest.raises(ValueError, match="unknown variable"):
        make_commands("broken", makefile)


def test_the_real_tier_page_is_its_rendering(tmp_path):
    """docs/benchmarks_real.md is what `python -m benchmarks.real.report` writes from the
    committed results and the Makefile: no figure or command on it is typed by hand."""
    out = tmp_path / "page.md"
    report.main(["--out", str(out)])
    assert out.read_text() == (report.DOCS / "benchmarks_real.md").read_text(), (
        "docs/benchmarks_real.md is stale: run python -m benchmarks.real.report"
    )


def test_the_second_model_section_compares_fw_with_its_best_baseline():
    assert report.second_model_section(None, None) == []

    def run(setting: dict, calib: float, test: float | None = None) -> dict:
        out = {"setting": setting, "calib_mean": calib, "calib": {"add": calib},
               "wall_s": 1.0, "peak_rss_mb": 1.0, "threads": 2, "package": "abc"}  # fmt: skip
        return out | ({"test_mean": test, "test": {"add": test}} if test is not None else {})

    fw = run({"iterations": 10, "calib_per_task": 16}, 0.8, 0.75)
    fw["fw"] = {"losses": [2.0, 1.0], "final_loss": 1.0, "iterations_run": 2}
    mg = {"targets": ["add"], "pools": {"targets4": ["add"]}, "runs": {
        "targets4/fw_defaults": [fw],
        "targets4/iso_c": [run({"alpha": 1.0}, 0.5, 0.52), run({"alpha": 2.0}, 0.4)],
    }}  # fmt: skip
    lines = report.second_model_section(None, mg)
    assert lines[0] == "## Second architecture: Gemma-3-270m"
    assert any("make bench-real-gemma" in ln for ln in lines)
    assert "REAL_MODEL=gemma3 python -m benchmarks.real.build --tasks targets --steps 60" in lines
    assert (
        "- `targets4`: FW defaults (10 it., 16/task) 0.750 against the best baseline, "
        "Iso-C 0.520: +0.230." in lines
    )
    assert "#### Pool `targets4` (1 adapters, scored on 1 tasks)" in lines
