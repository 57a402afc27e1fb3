"""The re-routing zoo's sections of docs/benchmarks.md (the zoo, methods, experiments 1-3, the
issue's targets, the analysis) and docs/bench_{irrelevance,relevance}.png.

Two steps: `summarise()` reads the raw cache a run leaves (.cache/rzoo/zoo.json,
.cache/results/rzoo_*.json and steps.json) and writes benchmarks/results/zoo.json, the only file
the sections are rendered from (`sections`, `targets`, `analysis`; `python -m benchmarks.report`
renders the whole page).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import CACHE, DOCS, load_result, save_result
from benchmarks.zoo.bench import (
    BASELINES,
    FOREIGN_OPTIONS,
    FROM_BASELINE,
    FW_METHODS,
    FW_OPTIONS,
    SIZES,
)  # fmt: skip
from benchmarks.zoo.tasks import ADDITIONS, ALL_TASKS, FOREIGN_TASKS, TARGETS

HERE = Path(__file__).resolve().parent
RESULT = "zoo.json"
CMD = "python -m benchmarks.run --only"


def default_of(key: str) -> object:
    """The installed package's default of one recipe option."""
    from mergekit_fw.settings import FWSettings

    field = FWSettings.model_fields.get(key)
    return None if field is None else field.default


def default_method() -> str:
    """The FW row whose options are all the package's defaults: the merge a recipe that
    names none of them gets (same settings, same merge)."""
    for name, options in FW_METHODS.items():
        if all(default_of(k) == v for k, v in options.items()):
            return name
    return ""


def _methods(results, exp):
    order = BASELINES + list(FW_METHODS) + list(FW_OPTIONS) + list(FOREIGN_OPTIONS)
    order += list(FROM_BASELINE)
    seen = {row["method"] for row in results.values() if row["exp"] == exp}
    return [m for m in order if m in seen]


def _refs(summary, exp):
    """Base and best single expert, as summarise() computed them ({name: {n: score}})."""
    refs = summary["references"].get(exp, {})
    return {name: {int(n): v for n, v in row.items()} for name, row in refs.items()}


def table(results, summary, exp, metric="mean_normalised"):
    sizes = sorted({r["n"] for r in results.values() if r["exp"] == exp})
    data = {m: {r["n"]: r[metric] for r in results.values() if r["exp"] == exp
                and r["method"] == m} for m in _methods(results, exp)
            if m not in FROM_BASELINE}  # fmt: skip
    head = ("| method | 4 targets | + 2 foreign-base (6) |" if exp == "foreign" else
            "| method | " + " | ".join(f"{n} models" for n in sizes) + " |")  # fmt: skip
    lines = [head, "|---" * (len(sizes) + 1) + "|"]
    rows = {**data, **(_refs(summary, exp) if metric == "mean_normalised" else {})}
    for m, row in rows.items():
        cells = [f"{row[n]:.3f}" if n in row else "" for n in sizes]
        label = f"**{m} = FW defaults**" if m == summary["default_method"] else m
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines), data, sizes


def params_table(results, exp):
    sizes = sorted({r["n"] for r in results.values() if r["exp"] == exp})
    lines = ["| method | " + " | ".join(str(n) for n in sizes) + " |",
             "|---" * (len(sizes) + 1) + "|"]  # fmt: skip
    for m in BASELINES[1:]:
        cells = []
        for n in sizes:
            r = results.get(f"{exp}|{n}|{m}")
            cells.append(", ".join(f"{k} {v}" for k, v in r["meta"].items()) if r else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_task(results, exp, n):
    rows = [r for r in results.values() if r["exp"] == exp and r["n"] == n]
    if not rows:
        return ""
    tasks = rows[0]["tasks"]
    lines = ["| method | " + " | ".join(tasks) + " | calib EM | calib loss | seconds |",
             "|---" * (len(tasks) + 4) + "|"]  # fmt: skip
    for m in _methods(results, exp):
        r = results.get(f"{exp}|{n}|{m}")
        if r is None:
            continue
        lines.append(f"| {m} | " + " | ".join(f"{r['normalised'][t]:.2f}" for t in tasks)
                     + f" | {r['calib_exact_match']:.3f} | {r['calib_loss']:.4f} | "
                     f"{r['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def plot(data, sizes, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (m, row) in enumerate(data.items()):
        xs = [n for n in sizes if n in row]
        style = "--" if "reference" in m else ("-" if m.startswith("FW") else ":")
        ax.plot(xs, [row[n] for n in xs], style, marker="o", label=m,
                color=plt.get_cmap("tab10").colors[i % 10])  # fmt: skip
    ax.set_xlabel("models in the pool")
    ax.set_ylabel("normalised held-out exact match")
    ax.set_title(title)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def done_bar(results, fw: str | None = None) -> list[str]:
    """The issue's done-bar for one FW row (default: the package default's), row by row."""
    out = ["| target | measured | met |", "|---|---|---|"]
    fw = fw or default_method()

    def get(exp, n, m):
        r = results.get(f"{exp}|{n}|{m}")
        return None if r is None else r["mean_normalised"]

    for exp in ("irrelevance", "relevance"):
        for n in SIZES[exp]:
            mine = get(exp, n, fw)
            for rival in ("TIES", "task arithmetic"):
                other = get(exp, n, rival)
                if mine is None or other is None:
                    continue
                out.append(f"| {exp}, {n} models: {fw} >= {rival} | {mine:.4f} vs "
                           f"{other:.4f} | {'yes' if mine >= other - 1e-9 else 'no'} |")  # fmt: skip
        lo, hi = get(exp, 4, fw), get(exp, 16, fw)
        if lo is not None and hi is not None:
            out.append(f"| {exp}: 16-model score within 0.02 of the 4-model score | "
                       f"{lo:.4f} -> {hi:.4f} | {'yes' if hi >= lo - 0.02 else 'no'} |")  # fmt: skip
    f6 = get("foreign", 6, fw)
    if f6 is not None:
        out.append(f"| 4 targets + 2 foreign-base experts: >= 0.9 | {f6:.3f} | "
                   f"{'yes' if f6 >= 0.9 else 'no'} |")  # fmt: skip
    ta4 = get("irrelevance", 4, "task arithmetic")
    if ta4 is not None:
        out.append(f"| zoo: task arithmetic of the 4 targets >= 0.9 | {ta4:.3f} | "
                   f"{'yes' if ta4 >= 0.9 else 'no'} |")  # fmt: skip
    lin = [get("irrelevance", n, "linear") for n in SIZES["irrelevance"]]
    if all(v is not None for v in lin):
        falls = all(a >= b for a, b in zip(lin, lin[1:])) and lin[0] > lin[-1]
        out.append(
            f"| zoo: linear averaging falls as the pool grows | "
            f"{' -> '.join(f'{v:.3f}' for v in lin)} | {'yes' if falls else 'no'} |"
        )
    return out


def starts_table(results, exp, fw: str) -> list[str]:
    """Issue 12: each baseline, FW-box started from it, and FW defaults, at every size:
    calibration loss (the benchmark's, the objective FW minimises) and held-out score."""
    out = ["| size | baseline | calib loss: baseline -> FW from it | held-out: baseline -> FW "
           "from it | FW defaults (calib loss, held-out) | FW from it <= baseline loss, >= "
           "baseline - 0.01 held-out |", "|---|---|---|---|---|---|"]  # fmt: skip
    for n in SIZES[exp]:
        default = results.get(f"{exp}|{n}|{fw}")
        for name, b in FROM_BASELINE.items():
            base, mine = results.get(f"{exp}|{n}|{b}"), results.get(f"{exp}|{n}|{name}")
            if base is None or mine is None:
                continue
            met = (mine["calib_loss"] <= base["calib_loss"] + 1e-6
                   and mine["mean_normalised"] >= base["mean_normalised"] - 0.01)  # fmt: skip
            d = (f"{default['calib_loss']:.4f}, {default['mean_normalised']:.3f}"
                 if default else "")  # fmt: skip
            out.append(
                f"| {n} | {b} | {base['calib_loss']:.4f} -> {mine['calib_loss']:.4f} | "
                f"{base['mean_normalised']:.3f} -> {mine['mean_normalised']:.3f} | {d} | "
                f"{'yes' if met else 'no'} |"
            )
    return out if len(out) > 2 else []


def summarise() -> dict:
    """benchmarks/results/zoo.json from the raw cache of a run: the zoo's figures, every
    result row, the reference rows and the settings the rows were measured with. Rows and
    timings of experiments the cache does not hold are kept from the previous file."""
    from benchmarks.zoo.bench import load_results, pools
    from benchmarks.zoo.build import load_zoo
    from benchmarks.zoo.merge import (
        CALIB_SAMPLES,
        DARE_GRID,
        FW_BATCH,
        FW_ITERATIONS,
        TA_GRID,
        TIES_GRID,
    )  # fmt: skip

    zoo, results, old = load_zoo(), load_results(), load_result(RESULT) or {}
    steps_file = CACHE / "results" / "steps.json"
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    s, st, alias = zoo["scores"], zoo["settings"], zoo["alias_scores"]["base"]
    references = {}
    for exp in SIZES:
        sizes = sorted({r["n"] for r in results.values() if r["exp"] == exp})
        for n in sizes:
            pool, tasks = pools(exp, n)

            def norm(model, tasks=tasks):
                return sum(s[model][t] / s[f"expert_{t}"][t] for t in tasks) / len(tasks)

            refs = references.setdefault(exp, {})
            refs.setdefault("base (reference)", {})[str(n)] = norm("base")
            best = max(norm(m) for m in pool)
            refs.setdefault("best single expert (reference)", {})[str(n)] = best
    summary = {
        "_source": "python -m benchmarks.run --only report (benchmarks.zoo.report.summarise)",
        "defaults": {k: default_of(k) for k in ("constraint", "init", "reduction")},
        "default_method": default_method(),
        "calib_samples": CALIB_SAMPLES,
        "grids": {"task arithmetic": TA_GRID, "TIES": TIES_GRID, "DARE-TIES": DARE_GRID},
        "fw": {"iterations": FW_ITERATIONS, "batch_size": FW_BATCH},
        "minutes": {
            **old.get("minutes", {}),
            **{exp: steps[exp] / 60 for exp in SIZES if exp in steps},
        },
        "zoo": {
            "version": st["version"],
            "train_seconds": zoo["train_seconds"],
            "jobs": zoo["jobs"],
            "base_seconds": zoo["timings"]["base"],
            "last_run_seconds": zoo["seconds"],
            "vocab": zoo["vocab"],
            "params": zoo["params"],
            "settings": {
                k: st[k]
                for k in (
                    "layers",
                    "hidden",
                    "base_steps",
                    "base_batch",
                    "base_lr",
                    "expert_steps",
                    "expert_batch",
                    "expert_lr",
                    "tag_lr",
                    "foreign_base_steps",
                    "foreign_expert_lr",
                )
            },  # fmt: skip
            "alias": {
                "mean": sum(alias.values()) / len(alias),
                "lowest": min(alias.values()),
                "lowest_task": min(alias, key=alias.get),
            },  # fmt: skip
            "experts": {
                t: {
                    "base": s["base"][t],
                    "own": s[f"expert_{t}"][t],
                    "foreign": s.get(f"foreign_{t}", {}).get(t),
                    "best_other": max(s[f"expert_{u}"][t] for u in ALL_TASKS if u != t),
                    "distance": zoo["distance"][f"expert_{t}"],
                }
                for t in ALL_TASKS
            },  # fmt: skip
            "foreign": {
                n: {"distance": d, "own": s[n][n[8:]]}
                for n, d in zoo["distance"].items()
                if n.startswith("foreign_") and n != "foreign_base"
            },  # fmt: skip
        },
        "references": {**old.get("references", {}), **references},
        "rows": {**old.get("rows", {}), **results},
    }
    save_result(RESULT, summary)
    return summary


def expert_table(zoo: dict) -> str:
    """Markdown: base vs own expert (and foreign expert) on each task's held-out split."""
    lines = ["| task | base | own expert | foreign expert | best other expert | distance from base |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for t, e in zoo["experts"].items():
        foreign = "" if e["foreign"] is None else f"{e['foreign']:.2f}"
        lines.append(f"| {t} | {e['base']:.2f} | {e['own']:.2f} | {foreign} | "
                     f"{e['best_other']:.2f} | {e['distance']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def base_new_tags(zoo: dict) -> str:
    base = {t: e["base"] for t, e in zoo["experts"].items()}
    values = [v for t, v in base.items() if t != "vowels"]
    return f"{min(values):.2f}-{max(values):.2f} (vowels {base['vowels']:.2f})"


def _grid(pairs) -> str:
    return ", ".join(f"{d}x{v}" for d, v in pairs)


def sections(summary: dict, plots: bool = True) -> list[str]:
    """The zoo, the methods and experiments 1-3, from benchmarks/results/zoo.json."""
    zoo, results, fw = summary["zoo"], summary["rows"], summary["default_method"]
    st, alias, defaults = zoo["settings"], zoo["alias"], summary["defaults"]
    grids = summary["grids"]
    out = [f"## The expert zoo (version {zoo['version']}: experts re-route skills the base has)", "",
           f"`{CMD} zoo` (cached in `benchmarks/.cache/rzoo/`; `benchmarks/zoo/build.py`, tasks in "
           f"`benchmarks/zoo/tasks.py`). Sum of per-model training times "
           f"**{zoo['train_seconds'] / 60:.1f} min** ({zoo['jobs']} process(es) of one thread "
           f"each; the base alone {zoo['base_seconds'] / 60:.1f} min), measured on the "
           "2-core machine while other jobs ran (load average 5-10 during the last build); the last `--only zoo` "
           f"run took {zoo['last_run_seconds'] / 60:.1f} min wall, reusing the models cached "
           "before it (each model is cached on its own settings).", "",
           f"- tokenizer: character level (`tokenizers`) plus 32 tag tokens, {zoo['vocab']} "
           f"tokens in all; models: LLaMA-style, {zoo['params']:,} parameters "
           f"({st['layers']} layers, hidden {st['hidden']}).",
           f"- {len(ALL_TASKS)} string tasks on words of 2-4 letters (prompt `<tag> word=`, "
           "response scored by greedy exact match, computed exactly by teacher forcing): "
           f"{', '.join(ALL_TASKS)}. Per task, disjoint train (2000) / calibration (100) / "
           "test (100) words; merges see calibration only, every score is on test.",
           f"- base: pretrained {st['base_steps']} steps x {st['base_batch']} (AdamW, lr "
           f"{st['base_lr']}) on all {len(ALL_TASKS)} tasks, each under its *alias* tag "
           f"(`<a00>`..`<a15>`): mean held-out exact match under the aliases "
           f"{alias['mean']:.3f} (lowest {alias['lowest']:.2f}, {alias['lowest_task']}). The "
           "new tags' embedding rows, never trained, are then set to the mean alias row (as "
           "transformers initialises added tokens).",
           f"- {len(ALL_TASKS)} experts: each fine-tuned from the base for {st['expert_steps']} "
           f"steps x {st['expert_batch']} to answer its task under a *new* tag "
           f"(`<t00>`..`<t15>`, never seen by the base): body lr {st['expert_lr']}, the new "
           f"tag's embedding row lr {st['tag_lr']} (Adam's step scaled per row). The base "
           f"scores {base_new_tags(zoo)} under the new tags (vowels: a word without vowels is "
           "its own answer); the expert re-routes the tag to the skill.",
           f"- 2 foreign-base experts ({', '.join(FOREIGN_TASKS)}): a second initialisation "
           f"(seed 1) pretrained the same way for {st['foreign_base_steps']} steps, then "
           f"fine-tuned like the others (body lr {st['foreign_expert_lr']}).",
           "- normalised score = merged exact match / own expert's; tables show the mean over "
           "the target tasks. Distance = ||theta - base|| / ||base|| over the whole model.", "",
           expert_table(zoo), "",
           "Foreign-base experts: " + ", ".join(
               f"{n} distance {f['distance']:.3f}, own task {f['own']:.2f}"
               for n, f in zoo["foreign"].items()) + ".", ""]  # fmt: skip
    tried = HERE / "TRIED.md"
    if tried.exists():
        out += [tried.read_text().strip(), ""]
    out += ["## Methods", "",
            "Hyper-parameters of every method are chosen on the calibration split only (mean "
            "calibration exact match over the target tasks, ties broken by the calibration "
            f"loss); all scores are held-out. The first {summary['calib_samples']} of the 100 "
            "calibration samples of each target task (`BENCH_CALIB` changes it), the same for "
            "every method.",
            "",
            "- linear, task arithmetic (lambda in "
            f"{{{', '.join(map(str, grids['task arithmetic']))}}}), TIES (density x lambda in "
            f"{{{_grid(grids['TIES'])}}}), DARE-TIES ({{{_grid(grids['DARE-TIES'])}}}, seed 0): "
            "stock mergekit kernels through mergekit's Python API (`merge_state_dicts`), "
            "`benchmarks/zoo/merge.py`.",
            "- FW: a recipe as a user writes it, `merge_method: frank_wolfe`, the calibration "
            f"manifest, `iterations: {summary['fw']['iterations']}` (the issue's setting), "
            f"`batch_size: {summary['fw']['batch_size']}` (speed only) and the option under "
            "test; everything else is the package default. It runs through mergekit's "
            "`run_merge` (what `mergekit-yaml` calls; the package's hook wraps it) and the "
            "written model is read back and scored. Every FW row names its `constraint` and "
            "`init`; the package defaults are "
            f"`constraint: {defaults['constraint']}, init: {defaults['init']}`, so the row "
            f"a recipe naming neither reproduces is `{fw}` (FW defaults). "
            "FW-hull = `constraint: hull, init: base, reduction: token` (the paper: its set, "
            "conv {base, experts}, from the base, per-token cross-entropy); FW-box = "
            "`constraint: box` (0 <= lambda_i <= scale per tensor); "
            "`init: auto` = the data-free start with the lowest calibration loss among the "
            "base, task arithmetic (lambda 0.1-1.0) and TIES (density 0.2, 0.5, 0.8); "
            f"`reduction: {defaults['reduction']}` (the default) = each task's loss is the "
            "mean over its samples of their summed answer NLL, `reduction: token` = the mean "
            "over its answer tokens (the default before; README, Objectives).",
            ""]  # fmt: skip
    experiments = [
        ("irrelevance", "1. Irrelevance: 4 targets, irrelevant experts added (4 -> 16)",
         f"Targets {', '.join(TARGETS)}; then experts of {', '.join(ADDITIONS)}, in that order."),
        ("relevance", "2. Relevance: the target set grows with the pool",
         f"n tasks and their n experts (order {', '.join(ALL_TASKS)}); calibration on all n."),
        ("foreign", "3. Foreign-base experts",
         "The 4 target experts, then the same pool plus the 2 foreign-base experts "
         f"({', '.join(FOREIGN_TASKS)}: two of the targets, another initialisation)."),
    ]  # fmt: skip
    for exp, title, text in experiments:
        tab, data, sizes = table(results, summary, exp)
        if not data:
            continue
        took = summary["minutes"].get(exp)
        out += [f"## {title}", "", text, "", f"`{CMD} {exp}`"
                + (f" (its last run {took:.1f} min, cached rows skipped)" if took else "")
                + " - mean normalised held-out exact match (ablation rows were run at the sizes "
                "that have a number; 4-model rows are shared between experiments, same pool and "
                "targets):", "", tab, ""]  # fmt: skip
        if exp != "foreign":
            png = f"bench_{exp}.png"
            if plots:
                main = {m: v for m, v in data.items() if m in BASELINES or m in FW_METHODS}
                plot({**main, **_refs(summary, exp)}, sizes, title, DOCS / png)
            out += [f"![{exp}]({png})", ""]
        starts = starts_table(results, exp, fw)
        if starts:
            out += ["FW-box started from each data-free baseline (`init:` a stock mergekit "
                    "recipe file of that baseline with the hyper-parameters it chose on "
                    "calibration at that size; issue 12), mean normalised held-out exact "
                    "match and the calibration loss of the merge. These rows keep "
                    "`reduction: token`, the objective they were measured with before "
                    "`reduction: sequence` became the default; the FW defaults column is the "
                    "current default:", "", *starts, ""]  # fmt: skip
        out += [f"Per task at {max(sizes)} models (normalised), with calibration exact match "
                "and loss and the merge's wall time:", "", per_task(results, exp, max(sizes)),
                "", "Baseline hyper-parameters chosen on calibration:", "",
                params_table(results, exp), ""]  # fmt: skip
    return out


def targets(summary: dict) -> list[str]:
    """The issue's done-bar for the FW defaults and for the previous default."""
    results, fw = summary["rows"], summary["default_method"]
    out = [f"## Targets of the issue (FW defaults = {fw})", "", *done_bar(results, fw), ""]
    out += ["The same targets for `FW-box, init base` (the previous default):", ""]
    return out + done_bar(results, "FW-box, init base") + [""]


def analysis() -> list[str]:
    """The analysis of the zoo's results (prose; every figure is in the tables above)."""
    path = HERE / "ANALYSIS.md"
    return [path.read_text()] if path.exists() else []


if __name__ == "__main__":
    summarise()
    print(f"wrote benchmarks/results/{RESULT}; render the page: python -m benchmarks.report")
