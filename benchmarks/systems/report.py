"""Sections 4-6 of docs/benchmarks.md (memory, LMO speed, wall time) and docs/bench_memory.png,
from benchmarks/results/memory.json, lmo.json and walltime.json (written by memory.py,
lmo_speed.py and walltime.py)."""

from __future__ import annotations

from benchmarks.common import DOCS, load_result

CMD = "python -m benchmarks.run --only"
LABELS = {"fw": "FW-hard (mergekit-fw)", "fw_soft": "FW-soft, k=2 (mergekit-fw)",
          "ties": "TIES (mergekit)", "allmem": "all in memory"}  # fmt: skip


def memory(plots: bool = True) -> list[str]:
    mem = load_result("memory.json")
    if not mem:
        return []
    out = ["## 4. Memory", "",
           f"`{CMD} memory`: random LLaMA-style model, {mem['params']:,} parameters, "
           "candidates = base + 1% noise, stored bf16, merged in float32. Each cell is one "
           "fresh process; peak RSS = VmHWM (anonymous + file-backed pages). FW: 2 "
           "iterations, constant step, 4 calibration samples, then mergekit's write; "
           "the pre-pass and write columns are the sampled (10 ms) peaks of anonymous + "
           "file pages in each phase. FW-soft: `variant: soft, topk: 2`, one iteration "
           "of 3 fit steps (memory: the model plus the k = 2 selected directions). "
           "'all in memory': every candidate held as a float32 state dict, as the "
           "authors' code does.", "",
           "| candidates | FW peak MiB | (anon / file) | FW pre-pass / write MiB | "
           "FW-soft peak MiB | TIES peak MiB | all in memory MiB |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    by = {(r["mode"], r["n"]): r for r in mem["rows"]}
    sizes = sorted({r["n"] for r in mem["rows"]})

    def mib(row, key="peak_rss"):
        return "not run" if row is None else f"{row[key] / 2**20:.0f}"

    for n in sizes:
        fw, soft = by.get(("fw", n)), by.get(("fw_soft", n))
        phases = (fw or {}).get("phase_peaks", {})
        split = (f"{phases['prepass'] / 2**20:.0f} / {phases['write'] / 2**20:.0f}"
                 if "prepass" in phases and "write" in phases else "")  # fmt: skip
        out.append(f"| {n} | {mib(fw)} | {mib(fw, 'peak_anon')} / {mib(fw, 'peak_file')} | "
                   f"{split} | {mib(soft)} | {mib(by.get(('ties', n)))} | "
                   f"{mib(by.get(('allmem', n)))} |")  # fmt: skip
    lo, hi = min(sizes), max(sizes)
    ratios = {m: by[(m, hi)]["peak_rss"] / by[(m, lo)]["peak_rss"]
              if (m, hi) in by and (m, lo) in by else float("nan") for m in LABELS}  # fmt: skip
    anon = by[("fw", hi)]["peak_anon"] / by[("fw", lo)]["peak_anon"]
    out += ["", f"peak({hi})/peak({lo}): FW **{ratios['fw']:.2f}** (anonymous memory only: "
            f"{anon:.2f}), FW-soft {ratios['fw_soft']:.2f}, TIES {ratios['ties']:.2f}, all in "
            f"memory {ratios['allmem']:.2f}.", ""]  # fmt: skip
    if plots:
        plot_memory(mem)
    return out + ["![memory](bench_memory.png)", ""]


def plot_memory(mem: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for mode, label in LABELS.items():
        rows = sorted((r for r in mem["rows"] if r["mode"] == mode), key=lambda r: r["n"])
        if rows:
            ax.plot([r["n"] for r in rows], [r["peak_rss"] / 2**20 for r in rows], marker="o",
                    label=label)  # fmt: skip
    ax.set_xlabel("candidates")
    ax.set_ylabel("peak RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "bench_memory.png", dpi=110)
    plt.close(fig)


def lmo() -> list[str]:
    res = load_result("lmo.json")
    if not res:
        return []
    out = ["## 5. LMO speed", "",
           f"`{CMD} lmo`: one `FrankWolfe.score_pass` (the package's LMO pass: for each "
           "tensor, blocks of 2^18 elements; per block, every vertex's bytes are pread, "
           "converted bf16 -> float32 and dotted with the gradient block, which stays in "
           "cache) against reading the same safetensors files into a buffer, warm "
           f"page cache, interleaved in one process (best of 3); model {res['params']:,} "
           "parameters, 2 threads.", "",
           "| candidates | bytes read | LMO pass / raw read | first pass (computes norms) "
           "/ raw read |", "|---|---|---|---|"]  # fmt: skip
    for r in res["rows"]:
        out.append(f"| {r['n']} | {r['bytes'] / 2**20:.0f} MiB | **{r['ratio']:.2f}** | "
                   f"{r['ratio_first']:.2f} |")  # fmt: skip
    for r in res["rows"]:
        if "breakdown_blocked_reads" in r:
            out += ["", f"Breakdown at {r['n']} candidates, in units of the raw read: the same "
                    f"blocked preads alone `{r['breakdown_blocked_reads']:.2f}`; the "
                    "whole-tensor path this replaced (read a tensor, bf16 -> float32, one "
                    f"`torch.dot`) `{r['breakdown_whole_tensor_path']:.2f}`."]  # fmt: skip
    return out + [""]


def walltime() -> list[str]:
    res = load_result("walltime.json")
    if not res:
        return []
    out = ["## 6. Wall time", "", f"`{CMD} walltime`: full FW merge (pre-pass + mergekit "
           "write) against stock mergekit task_arithmetic of the same pool, same process, "
           "TA best of 2 runs around the FW run. (Its zoo case timed the retired version-5 "
           "zoo: [benchmarks_history.md](benchmarks_history.md).)", "",
           "| case | FW / task arithmetic |", "|---|---|"]  # fmt: skip
    out += [f"| {r['case']} | **{r['ratio']:.1f}x** |" for r in res["rows"]]
    return out + [""]


def sections(plots: bool = True) -> list[str]:
    return memory(plots) + lmo() + walltime()
