"""docs/benchmarks_scale.md from the scale tier's results files (nothing is re-run).

    PYTHONPATH=. python -m benchmarks.scale.report      # writes docs/benchmarks_scale.md

Inputs: benchmarks/results/scale.json (benchmarks/scale/bench.py), step_rules.json
(benchmarks/scale/step_rules.py), projection.json (benchmarks/scale/projection.py).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path("benchmarks/results")
DOC = Path("docs/benchmarks_scale.md")
MIB, GIB = 2**20, 2**30


def _load(name: str) -> dict:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else {}


def _peak(entry: dict, run: str) -> int | None:
    return entry.get(run, {}).get("peak_rss")


def _mib(x) -> str:
    return "—" if x is None else f"{x / MIB:,.0f}"


def _ratio(a, b, digits: int = 2) -> str:
    return "—" if a is None or b is None or not b else f"{a / b:.{digits}f}"


def _row(*cells) -> str:
    """One markdown table line."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*columns: str) -> list[str]:
    """A markdown table's header line and rule."""
    return [_row(*columns), "|" + "---|" * len(columns)]


def _depths(scale: dict) -> list[str]:
    """The measured depths (the results' numeric keys), shallowest first."""
    return sorted((k for k in scale if k.isdigit()), key=int)


def _targets(scale: dict) -> list[str]:
    """The depths, then the real SmolLM2 pool when it was measured (`--smollm2`)."""
    return _depths(scale) + (["smollm2"] if "smollm2" in scale else [])


def _name(target: str) -> str:
    return "SmolLM2-135M (real; 30 layers, width 576)" if target == "smollm2" else target


def memory_table(scale: dict) -> list[str]:
    rows = _header(
        "layers", "parameters", "one checkpoint", "bf16 forward + backward",
        "FW out of core, pre-pass", "FW out of core, merge", "same, 200 MB shards",
        "mergekit TIES", "same, 200 MB shards", "FW in memory, merge",
    )  # fmt: skip
    for depth in _targets(scale):
        e = scale[depth]
        cells = [
            _mib(_peak(e, run))
            for run in ("fwdbwd", "prepass_out_of_core", "fw_out_of_core",
                        "fw_out_of_core_shards", "ties", "ties_shards", "fw_in_memory")
        ]  # fmt: skip
        rows.append(
            _row(
                _name(depth),
                f"{e['params'] / 1e6:.0f} M",
                f"{e['checkpoint_bytes'] / MIB:,.0f}",
                *cells,
            )  # fmt: skip
        )
    return rows


def ratio_lines(scale: dict) -> list[str]:
    """The issue's memory ratios, from the table above."""
    e8, e32 = scale.get("8", {}), scale.get("32", {})
    pairs = (
        ("FW out of core, pre-pass: 32 layers / 8 layers",
         _peak(e32, "prepass_out_of_core"), _peak(e8, "prepass_out_of_core")),
        ("FW out of core, merge: 32 layers / 8 layers",
         _peak(e32, "fw_out_of_core"), _peak(e8, "fw_out_of_core")),
        ("FW out of core, merge with 200 MB shards: 32 layers / 8 layers",
         _peak(e32, "fw_out_of_core_shards"), _peak(e8, "fw_out_of_core_shards")),
        ("FW out of core, merge / mergekit TIES, 32 layers",
         _peak(e32, "fw_out_of_core"), _peak(e32, "ties")),
        ("the same with 200 MB shards for both",
         _peak(e32, "fw_out_of_core_shards"), _peak(e32, "ties_shards")),
    )  # fmt: skip
    return [f"- {label}: {_ratio(a, b)}" for label, a, b in pairs]


def reads_table(scale: dict) -> list[str]:
    e = scale.get("8", {})
    pool = e.get("checkpoint_bytes", 0) * 5
    rows = _header(
        "what (8 layers, pool = base + 4 candidates)", "all reads (rchar, GiB)", "/ pool",
        "of the pool (GiB)", "/ pool", "of the scratch (GiB)",
    )  # fmt: skip

    def diff(a: str, b: str, key: str):
        if a in e and b in e and key in e[a] and key in e[b]:
            return e[a][key] - e[b][key]
        return None

    def gib(value) -> str:
        return "not measured" if value is None else f"{value / GIB:.2f}"

    cold = e.get("prepass_in_memory", {})
    if cold.get("cold_cache") and "storage_read_bytes" in cold:
        rows.append(
            _row(
                "whole in-memory pre-pass, 2 iterations, from storage (page cache emptied first)",
                gib(cold["storage_read_bytes"]),
                _ratio(cold["storage_read_bytes"], pool),
                "",
                "",
                "",
            )  # fmt: skip
        )
    for label, a, b in (
        ("one FW iteration, in memory", "prepass_in_memory", "plan_in_memory_1"),
        ("one FW iteration, out of core", "prepass_out_of_core", "plan_out_of_core_1"),
        ("each iteration after the first, in memory (mean over a run of up to 4)",
         "plan_in_memory_4", "plan_in_memory_1"),
        ("init: auto's start grid (auto minus base), in memory",
         "plan_in_memory_auto_1", "plan_in_memory_1"),
        ("init: auto's start grid (auto minus base), out of core",
         "plan_out_of_core_auto_1", "plan_out_of_core_1"),
        ("the same with `screening: false`, in memory",
         "plan_in_memory_auto_noscreen_1", "plan_in_memory_1"),
        ("the same with `screening: false`, out of core",
         "plan_out_of_core_auto_noscreen_1", "plan_out_of_core_1"),
    ):  # fmt: skip
        every, own, scratch = (diff(a, b, k) for k in
                               ("read_bytes", "pool_read_bytes", "scratch_read_bytes"))  # fmt: skip
        if a == "plan_in_memory_4" and a in e and b in e:  # per iteration after the first
            runs = len(e[a].get("gammas", [])) - len(e[b].get("gammas", []))
            every, own, scratch = (
                None if x is None or runs <= 0 else x / runs for x in (every, own, scratch)
            )
        rows.append(_row(label, gib(every), _ratio(every, pool), gib(own), _ratio(own, pool),
                         gib(scratch)))  # fmt: skip
    return rows


def time_table(scale: dict) -> list[str]:
    runs = ("ties", "fw_in_memory", "fw_out_of_core", "ties_shards", "fw_out_of_core_shards")
    rows = _header(
        "layers", "TIES (s)", "FW in memory (s)", "FW out of core (s)", "in memory / TIES",
        "out of core / TIES", "the same, 200 MB shards: out of core / TIES",
    )  # fmt: skip
    for depth in _targets(scale):
        t = {k: scale[depth].get(k, {}).get("seconds") for k in runs}
        cells = ["—" if t[k] is None else f"{t[k]:.0f}" for k in runs[:3]]
        rows.append(
            _row(
                _name(depth),
                *cells,
                _ratio(t["fw_in_memory"], t["ties"], 1),
                _ratio(t["fw_out_of_core"], t["ties"], 1),
                _ratio(t["fw_out_of_core_shards"], t["ties_shards"], 1),
            )  # fmt: skip
        )
    return rows


def estimate_table(scale: dict) -> list[str]:
    rows = _header(
        "layers", "run", "estimated peak (MiB)", "measured peak (MiB)", "estimate / measured"
    )
    pairs = (("out_of_core_peak", "prepass_out_of_core", "FW out of core, pre-pass"),
             ("in_memory_peak", "prepass_in_memory", "FW in memory, pre-pass"),
             ("ties_peak", "ties", "mergekit TIES"))  # fmt: skip
    for depth in _targets(scale):
        e = scale[depth]
        est = e.get("estimate", {})
        for key, run, label in pairs:
            measured = _peak(e, run)
            if measured is None or key not in est:
                continue
            rows.append(
                _row(
                    _name(depth), label, _mib(est[key]), _mib(measured), _ratio(est[key], measured)
                )  # fmt: skip
            )
    return rows


def step_table(steps: dict) -> list[str]:
    rows = _header(
        "setting", "rule", "gradient passes", "forward passes",
        "gradient-equivalents per iteration", "final calibration loss", "held-out loss (mean)",
    )  # fmt: skip
    for name, runs in steps.get("settings", {}).items():
        for rule in ("line_search", "quadratic"):
            r = runs[rule]
            rows.append(
                _row(
                    name,
                    rule,
                    r["gradient_passes"],
                    r["forward_passes"],
                    f"{r['gradient_equivalents_per_iteration']:.2f}",
                    f"{r['final_calibration_loss']:.4f}",
                    f"{r['held_out_mean']:.4f}",
                )  # fmt: skip
            )
    return rows


def projection_table(projection: dict) -> list[str]:
    rows = _header(
        "model, bf16, base + 16 candidates", "one model", "pool on disk", "FW in memory (peak)",
        "FW out of core (peak)", "mergekit TIES (needed)",
        "reads per FW iteration, out of core", "reads, TIES (whole merge)",
    )  # fmt: skip
    for name, e in projection.items():
        cells = [e[k] / GIB for k in ("model_bytes", "pool_bytes", "in_memory_peak",
                                      "out_of_core_peak", "ties_needed", "reads_out_of_core",
                                      "ties_reads")]  # fmt: skip
        rows.append(_row(name, *(f"{c:,.1f} GiB" for c in cells)))
    return rows


def render() -> str:
    scale, steps, projection = (_load(n) for n in
                                ("scale.json", "step_rules.json", "projection.json"))  # fmt: skip
    threads = scale.get("threads", "?")
    parts = [
        "# Scale tier: memory, reads and time as the model grows",
        "",
        "Rendered by `PYTHONPATH=. python -m benchmarks.scale.report` from",
        "benchmarks/results/scale.json, step_rules.json and projection.json; the runs:",
        "`make bench-scale` (benchmarks/scale/bench.py), `python -m benchmarks.scale.step_rules`,",
        "`python -m benchmarks.scale.projection`. Every figure of a table was measured in one",
        f"run of its script, each measurement in a fresh process ({threads} torch thread(s)), on",
        "the shared 2-core CPU box this project is built on (load from other jobs: wall times",
        "are comparable only as ratios within one table).",
        "",
        "Pools: random LLaMA-shaped models of width 1024 (MLP 2816, vocabulary 32000, untied",
        "head), bf16 safetensors, base + 4 candidates (base + 1% noise), 8 calibration texts;",
        "FW runs: 2 iterations, `init: base`, `step: quadratic`, recipe defaults otherwise.",
        "The SmolLM2 row is the same pool built on a real pretrained model, SmolLM2-135M-",
        "Instruct (tied embeddings, vocabulary 49,152), from the real tier's converted base",
        "(`make bench-real`), stored in bf16.",
        "Peak = the process's VmHWM; reads = bytes through read syscalls (`rchar`: served from",
        "disk or page cache; mergekit's own memory-mapped reads are not counted).",
        "",
        "## Peak memory (MiB)",
        "",
        *memory_table(scale),
        "",
        *ratio_lines(scale),
        "",
        '"merge" is the whole `mergekit-yaml` run: the pre-pass, then mergekit\'s write, which',
        "holds the output until a shard is full (`--out-shard-size`, 5 GB by default) and maps",
        'its inputs, for TIES and FW alike. "pre-pass" is `mergekit-fw plan`: the FW work',
        "alone.",
        "",
        "## Reads",
        "",
        *reads_table(scale),
        "",
        "Per-iteration figures are differences between pre-pass runs of 2 (or 4) and 1",
        'iterations. "Of the pool" counts the bytes the pool\'s reader returns',
        '(pool/reader.py), "of the scratch" those of the out-of-core stores of theta and',
        "the gradient / direction (fw/offload.py); the rest of rchar is Python, libraries and",
        "configuration files. The LMO's scoring read forms d = s - theta for the s the last",
        "iteration picked (fw/scores.py `Fold`); a tensor whose pick changed reads the",
        "changed vertices (and the base, for box and simplex) once more, page-cache hot.",
        "The first iteration has no prediction and reads s again for every tensor.",
        "Out of core, theta is read for the forward and again for backward's recomputation,",
        "theta and d for each line-search pass and for the move: a fixed number of model",
        "reads per iteration, whatever the pool's size. init: auto (fw/start_grid.py",
        "`LineScan`) reads the candidates once for the task-arithmetic line, once for the",
        "candidates alone (each tau_i held as the direction in turn) and once per screened",
        "line, of the candidates it keeps (docs/starts.md); it scores every start from the",
        "base and the line's direction, then leaves the best in the parameters (out of",
        "core: in theta's store), so the loop does not form its start again (a winner on",
        "an earlier line reads its line once more). Its TIES starts (in memory only) are",
        "three mergekit merges of the pool, memory-mapped by mergekit and not in these",
        "counts (about 3 more pool reads, from the page cache).",
        *(
            [
                "From storage, with the page cache emptied first, the whole pre-pass read the",
                "pool about once: this pool fits in RAM, so the iterations were served from",
                "the cache.",
            ]
            if scale.get("8", {}).get("prepass_in_memory", {}).get("cold_cache")
            else [
                "These runs did not empty the page cache (`--cold`, root only), so storage",
                "reads were not measured: the pool fits in RAM and was served from the cache.",
            ]
        ),
        "",
        "## Wall time, FW / TIES",
        "",
        *time_table(scale),
        "",
        "## The estimate against the measurement",
        "",
        "`mergekit-fw check --estimate RECIPE` (mergekit/estimate.py), from the headers only:",
        "",
        *estimate_table(scale),
        "",
        "## Step rules: calibration passes per iteration",
        "",
        "Demo zoo (tiny char-level LLaMA, 4 experts), 8 iterations, side by side in one run:",
        "",
        *step_table(steps),
        "",
        "A forward pass counts 1/3 of a gradient pass. `quadratic` fits the loss along d from",
        "f(0), its slope (-FW gap, free with the gradient) and one more pass, then evaluates the",
        "fit's minimiser (docs/architecture.md, Step rules).",
        "",
        "## What a 7B and a 70B merge need (estimate)",
        "",
        *projection_table(projection),
        "",
        "From benchmarks/scale/projection.py: LLaMA-2 shapes (no weights), 8 calibration rows of",
        "512 tokens. These are the estimate's figures, not measurements: no model above 0.5B",
        "parameters has been run here, and no GPU.",
        "",
    ]
    return "\n".join(parts)


def section() -> list[str]:
    """The scale tier's lines on docs/benchmarks.md (benchmarks/report.py): headline ratios
    and a link to its own page."""
    scale = _load("scale.json")
    if not scale:
        return []
    e8, e32 = scale.get("8", {}), scale.get("32", {})
    pre8, pre32 = _peak(e8, "prepass_out_of_core"), _peak(e32, "prepass_out_of_core")
    lines = [
        "## Scale tier (out-of-core pre-pass)",
        "",
        "Random LLaMA-shaped pools of width 1024, bf16, base + 4 candidates; tables, commands",
        "and the 7B / 70B estimate in [benchmarks_scale.md](benchmarks_scale.md).",
        "",
        f"- Out-of-core pre-pass peak RSS: {_mib(pre8)} MiB at 8 layers, {_mib(pre32)} MiB at "
        f"32 layers ({_ratio(pre32, pre8)}x).",
        f"- Whole out-of-core merge against mergekit TIES at 32 layers: "
        f"{_ratio(_peak(e32, 'fw_out_of_core'), _peak(e32, 'ties'))}x the peak RSS.",
        "",
    ]
    return lines


def main() -> None:
    DOC.write_text(render())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
