"""`python -m benchmarks.report`: render docs/benchmarks.md from benchmarks/results/.

Every section of the page comes from results files, through its tier's renderer; nothing on
the page is edited by hand (prose that is not a result lives next to the renderer, e.g.
benchmarks/zoo/TRIED.md and ANALYSIS.md):

| section | renderer | results |
|---|---|---|
| header | this module | - |
| the zoo, methods, 1-3 (irrelevance, relevance, foreign) | zoo/report.py `sections` | zoo.json |
| 4-6 (memory, LMO speed, wall time) | systems/report.py | memory.json, lmo.json, walltime.json |
| 7 (MiniLM) | minilm/report.py | minilm_*.txt, docs/benchmarks_minilm.md's generated block |
| targets of the issue, analysis | zoo/report.py `targets`, `analysis` | zoo.json |
| vision tier | vision/report.py | vision.json, vision_heads.json |
| further tiers (TIERS: scale, real) | `benchmarks/<tier>/report.py` `section()` | their own |

A tier joins the page by being listed in TIERS and having a `benchmarks/<tier>/report.py` whose
`section() -> list[str]` returns its markdown lines ([] while its results file is absent).

    python -m benchmarks.report              # rewrite docs/benchmarks.md and its plots
    python -m benchmarks.report --check      # exit 1 if the page differs from its rendering
    python -m benchmarks.report --no-plots   # the page only

A section on the page that no renderer produces is kept (at the end, with a warning) rather
than lost; `--check` fails until a renderer owns it.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys

from benchmarks.common import DOCS, load_result

PAGE = DOCS / "benchmarks.md"
TIERS = ["scale", "real"]  # optional tiers: benchmarks/<tier>/report.py, section()
HEADER = [
    "# Benchmarks: FW-Merging on an offline expert zoo", "",
    "All numbers below are produced by `make bench` (= `python -m benchmarks.run`) on a 2-core "
    "CPU; each table names the sub-command that reproduces it. Every section is rendered by "
    "`python -m benchmarks.report` from the results files in `benchmarks/results/` (one or more "
    "per tier); the models and raw rows the runs cache live in `benchmarks/.cache/` (not "
    "committed). Memory, LMO speed and wall time were measured with `init: base` and their "
    "commands pin it; the package default is now `init: auto`, whose cost is measured apart "
    "(docs/starts.md, `benchmarks/demo/start_cost.py`). Figures of the retired version-5 zoo: "
    "[benchmarks_history.md](benchmarks_history.md).", "",
]  # fmt: skip


def tier_section(tier: str) -> list[str]:
    """An optional tier's lines, or [] if it has no renderer yet."""
    try:
        module = importlib.import_module(f"benchmarks.{tier}.report")
    except ModuleNotFoundError as error:
        if error.name in (f"benchmarks.{tier}", f"benchmarks.{tier}.report"):
            return []
        raise
    if not hasattr(module, "section"):
        print(
            f"note: benchmarks/{tier}/report.py has no section(); not on the page", file=sys.stderr
        )
        return []
    return list(module.section() or [])


def render(plots: bool = True) -> str:
    from benchmarks.minilm import report as minilm
    from benchmarks.systems import report as systems
    from benchmarks.vision import report as vision
    from benchmarks.zoo import report as zoo

    summary = load_result(zoo.RESULT)
    out = list(HEADER)
    if summary:
        out += zoo.sections(summary, plots)
    out += systems.sections(plots) + minilm.section()
    if summary:
        out += zoo.targets(summary) + zoo.analysis()
    out += vision.sections(plots)
    for tier in TIERS:
        out += tier_section(tier)
    return "\n".join(out).rstrip() + "\n"


def _blocks(text: str) -> dict[str, str]:
    """`## ` heading -> its block (up to the next `## ` heading or marker comment)."""
    parts = re.split(r"(?m)^(?=## |<!-- )", text)
    return {p.splitlines()[0]: p.rstrip() + "\n" for p in parts if p.startswith("## ")}


def keep_unrendered(page: str, old: str) -> str:
    """Append the sections of the old page that no renderer produced."""
    ours = _blocks(page)
    lost = [(head, block) for head, block in _blocks(old).items() if head not in ours]
    for head, _ in lost:
        print(f"warning: '{head}' is rendered by no tier; kept as it was", file=sys.stderr)
    return page + "".join("\n" + block for _, block in lost)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="diff against the page, write nothing")
    parser.add_argument("--no-plots", action="store_true", help="leave docs/bench_*.png alone")
    args = parser.parse_args(argv)
    old = PAGE.read_text() if PAGE.exists() else ""
    page = keep_unrendered(render(plots=not (args.no_plots or args.check)), old)
    if args.check:
        diff = list(difflib.unified_diff(old.splitlines(True), page.splitlines(True),
                                         str(PAGE), "rendered"))  # fmt: skip
        sys.stdout.writelines(diff)
        print(f"{PAGE}: {'differs from' if diff else 'equals'} its rendering")
        return 1 if diff else 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
