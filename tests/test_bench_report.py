"""docs/benchmarks.md is exactly what `python -m benchmarks.report` renders from
benchmarks/results/: no number on the page is typed by hand."""

from __future__ import annotations

from benchmarks import report


def test_the_benchmarks_page_is_its_rendering():
    page = report.PAGE.read_text()
    rendered = report.keep_unrendered(report.render(plots=False), page)
    assert rendered == page, "docs/benchmarks.md is stale: run python -m benchmarks.report"


def test_a_section_no_tier_renders_is_kept_not_lost():
    old = "# t\n\n## 1. A\n\na\n\n## 9. Hand-written\n\nkeep me\n"
    new = report.keep_unrendered("# t\n\n## 1. A\n\nb\n", old)
    assert new == "# t\n\n## 1. A\n\nb\n\n## 9. Hand-written\n\nkeep me\n"
