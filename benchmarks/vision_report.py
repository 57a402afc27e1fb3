"""The vision tier's section of docs/benchmarks.md, between markers, plus its plot.

The rest of docs/benchmarks.md is written by benchmarks/report.py, which keeps this block
(`preserved`), so either step can be re-run alone.
"""

from __future__ import annotations

import json

from benchmarks.common import DOCS

START = "<!-- vision-tier:start (python -m benchmarks.run --only vision) -->"
END = "<!-- vision-tier:end -->"
METHODS = ["task arithmetic", "TIES", "AdaMerging", "FW-hard", "FW-box", "FW-soft"]
ANALYSIS = DOCS.parent / "benchmarks" / "VISION_ANALYSIS.md"


def preserved() -> str:
    """The current vision block of docs/benchmarks.md (with a leading newline), or ''."""
    path = DOCS / "benchmarks.md"
    text = path.read_text() if path.exists() else ""
    if START not in text:
        return ""
    return "\n" + text[text.index(START) : text.index(END) + len(END)] + "\n"


def _chosen(entry: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in entry["chosen"].items())


def section(r: dict) -> str:
    t2 = r["table2"]
    n_tasks = len(r["experts"])
    indiv = sum(r["experts"].values()) / n_tasks
    heads = sum(r["base_heads"].values()) / n_tasks
    out = [
        START,
        "## Vision tier: a tiny ViT, 20 experts with per-task heads (paper Tables 2 and 3)",
        "",
        f"`python -m benchmarks.run --only vision` (results: `benchmarks/.cache/results/"
        f"vision.json`, copy in `docs/bench_vision.json`; {r['seconds'] / 60:.1f} min on 2 "
        f"threads with the zoo cached, zoo built in {r['zoo_seconds'] / 60:.1f} min).",
        "",
        f"Setting (`mergekit_fw/cli/toy_vit.py`, `benchmarks/vision_zoo.py`): a ViT of "
        f"{r['params']:,} parameters (4x4 patches of scikit-learn's 8x8 `load_digits`, width "
        "96, 3 blocks) pretrained on the digit classes of 1000 train images; 20 experts, each "
        "a linear probe on the base's features (then frozen, as CLIP's text heads are) and the "
        "encoder fine-tuned under it on the train images of one task: digits under rotation, "
        "flips, transpose, inversion, noise, crop, blur; relabellings (parity, >=5, prime, mod "
        "3, closed loops) and combinations. Calibration: 64 of 300 disjoint images per task; "
        "test: the 497 remaining images. A merge changes the encoder only and is scored with "
        "each task's own head. FW runs through `mergekit_fw.frank_wolfe_merge` with a loss "
        "that takes the task name (`loss(model, batch, task)`: cross-entropy of that task's "
        "head); FW-hard: the paper's hull, 8 iterations, layer-wise LMO, line search; FW-box: "
        "the same with `constraint: box` (0 <= lambda_i <= kappa over task vectors, kappa = "
        "the lambda task arithmetic picked on calibration); FW-soft: hull, 2 iterations, "
        "per-task selection, 15 simplex-fit steps. Hyper-parameters of task arithmetic "
        "(lambda), TIES (top-k, lambda) and AdaMerging (learning rate) are chosen by "
        "calibration accuracy; FW's options are fixed a priori. AdaMerging (layer-wise, "
        "coefficients in [0, 1] from 0.3, Adam, 100 steps of 16 images per task) minimises "
        "prediction entropy on the **unlabelled test inputs**, as its paper does; no method "
        "sees a test label.",
        "",
        "### Table 2 analogue: 20 tasks, 20 experts (mean test accuracy)",
        "",
        f"Reference points: each expert on its own task {indiv:.3f}; the base encoder with each "
        f"task's head {heads:.3f}.",
        "",
        "| method | mean test acc | calib acc | chosen | seconds |",
        "|---|---|---|---|---|",
    ]
    for m in METHODS:
        e = t2[m]
        out.append(
            f"| {m} | **{e['mean']:.3f}** | {e['calib']:.3f} | {_chosen(e)} | {e['seconds']:.0f} |"
        )
    out += ["", "Per task (test accuracy):", ""]
    tasks = list(t2[METHODS[0]]["tasks"])
    out.append("| task | expert | base+head | " + " | ".join(METHODS) + " |")
    out.append("|---" * (3 + len(METHODS)) + "|")
    for t in tasks:
        cells = [f"{t2[m]['tasks'][t]:.3f}" for m in METHODS]
        out.append(
            f"| {t} | {r['experts'][t]:.3f} | {r['base_heads'][t]:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    t3 = r["table3"]
    sizes = list(t3)
    targets = list(t3[sizes[0]][METHODS[0]]["tasks"])
    out += [
        "",
        f"### Table 3 analogue: 4 targets ({', '.join(targets)}), irrelevant experts added",
        "",
        "Calibration data and AdaMerging's test inputs come from the 4 target tasks only; the "
        "pool grows from their 4 experts to 16 with experts of other tasks. Mean test accuracy "
        "on the 4 targets:",
        "",
        "| method | "
        + " | ".join(f"{s} experts" for s in sizes)
        + f" | change {sizes[0]} -> {sizes[-1]} |",
        "|---" * (2 + len(sizes)) + "|",
    ]
    for m in METHODS:
        values = [t3[s][m]["mean"] for s in sizes]
        out.append(
            f"| {m} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {values[-1] - values[0]:+.3f} |"
        )
    out += ["", "![vision tier](bench_vision.png)", ""]
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().strip(), ""]
    out.append(END)
    return "\n".join(out) + "\n"


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t3 = r["table3"]
    sizes = [int(s) for s in t3]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    values = [r["table2"][m]["mean"] for m in METHODS]
    left.bar(range(len(METHODS)), values, color="C0")
    left.set_xticks(range(len(METHODS)), METHODS, rotation=25, ha="right")
    left.set_ylabel("mean test accuracy")
    left.set_title("20 tasks, 20 experts")
    left.set_ylim(min(values) - 0.05, 1.0)
    for m in METHODS:
        right.plot(sizes, [t3[str(s)][m]["mean"] for s in sizes], marker="o", label=m)
    right.set_xlabel("experts in the pool (4 relevant)")
    right.set_title("4 targets, irrelevant experts added")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "bench_vision.png", dpi=110)
    plt.close(fig)


def write(r: dict | None = None) -> None:
    """Replace the vision block of docs/benchmarks.md (append it the first time)."""
    if r is None:
        r = json.loads((DOCS / "bench_vision.json").read_text())
    path = DOCS / "benchmarks.md"
    text = path.read_text() if path.exists() else ""
    block = section(r)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
    try:
        plot(r)
    except ImportError:
        print("matplotlib missing: no docs/bench_vision.png")
    print(f"wrote the vision section of {path}")
