"""PNG plots of a Frank-Wolfe plan, for the model card and for a quick look at a merge.

matplotlib is an optional extra and is imported lazily. The figures are drawn on the Agg
canvas directly (no pyplot), so making plots never switches the backend of a caller's
interactive session and works on headless machines.
"""

from __future__ import annotations

import re
from pathlib import Path

from mergekit_fw.plan import FWPlan

LOSS_PNG = "fw_loss.png"
COEFFICIENTS_PNG = "fw_coefficients.png"
WINS_PNG = "fw_wins.png"
PLOT_FILES = (LOSS_PNG, COEFFICIENTS_PNG, WINS_PNG)
DPI = 100
LINE_FIGSIZE = (8.0, 4.5)  # loss/gap and wins plots: 800 x 450 px
_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def heatmap_figsize(n_tensors: int, n_models: int) -> tuple[float, float]:
    """Inches of the coefficient heatmap: grows with the model, capped for 7B-size plans."""
    width = min(4.0 + 1.1 * n_models, 16.0)
    height = min(max(3.0, 1.5 + 0.16 * n_tensors), 24.0)
    return width, height


def layer_group(name: str) -> tuple[int, str]:
    """Sort key and label: embeddings first, then transformer layers in order, then the rest."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)), f"layer {match.group(1)}"
    if "embed" in name or name.startswith(("wte", "transformer.wte")):
        return -1, "embeddings"
    return 1 << 30, "head / final norm"


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _colors(labels: list[str]) -> dict[str, tuple]:
    """One colour per model label, the same in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    colors = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    colors.setdefault("zero", (0.6, 0.6, 0.6, 1.0))
    return colors


def plot_loss_gap(plan: FWPlan, path: Path) -> Path:
    """Calibration loss (total and per task) and FW gap per iteration."""
    fig = _figure(LINE_FIGSIZE)
    ax_loss, ax_gap = fig.subplots(1, 2)
    steps = [r.t for r in plan.iterations]
    final_t = steps[-1] + 1 if steps else 0
    losses = [r.loss for r in plan.iterations]
    if plan.stopped == "budget":  # the loss after the last step was measured separately
        steps_loss, losses = [*steps, final_t], [*losses, plan.final_loss]
    else:
        steps_loss = steps
    ax_loss.plot(steps_loss, losses, marker="o", color="black", label="total")
    tasks = sorted(plan.final_task_losses)
    if len(tasks) > 1:
        for task in tasks:
            values = [r.task_losses.get(task, float("nan")) for r in plan.iterations]
            if plan.stopped == "budget":
                values.append(plan.final_task_losses[task])
            ax_loss.plot(steps_loss, values, marker=".", linestyle="--", label=task)
    ax_loss.set_title(
        f"calibration loss ({plan.loss_unit})" if plan.loss_unit else "calibration loss"
    )
    ax_loss.set_xlabel("iteration")
    ax_loss.legend(fontsize="small")
    ax_loss.grid(alpha=0.3)
    gaps = [r.gap for r in plan.iterations]
    ax_gap.plot(steps, gaps, marker="o", color="tab:red")
    if gaps and min(gaps) > 0 and max(gaps) / min(gaps) > 20:
        ax_gap.set_yscale("log")
    ax_gap.set_title("Frank-Wolfe gap <-grad, s - theta>")
    ax_gap.set_xlabel("iteration")
    ax_gap.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


_ATTENTION = re.compile(r"^(?:self_attn|attention|attn|self_attention)\.")
MIN_ROW_FONT = 5.0  # points (7 px at 100 dpi); below this rows get no labels of their own


def tensor_label(name: str) -> str:
    """Which tensor a heatmap row is, inside its layer group: `q_proj`, `mlp.up_proj`,
    `input_layernorm`, `embed_tokens`, `lm_head` (a bias keeps its `.bias`)."""
    match = _LAYER.search(name)
    rest = name[match.end() :] if match else name
    if not match:
        rest = re.sub(r"^(?:model|transformer|bert|roberta)\.", "", rest)
    rest = _ATTENTION.sub("", rest)
    return rest[: -len(".weight")] if rest.endswith(".weight") else rest


def heatmap_rows(names: list[str]) -> tuple[list[str], list[bool]]:
    """Row labels of the heatmap and whether each row opens a layer group: the first row of
    a group reads `layer 3  q_proj`, the others just the tensor."""
    labels, firsts, previous = [], [], None
    for name in names:
        group = layer_group(name)[1]
        first = group != previous
        labels.append(f"{group}  {tensor_label(name)}" if first else tensor_label(name))
        firsts.append(first)
        previous = group
    return labels, firsts


def coefficients_figure(plan: FWPlan):
    """The heatmap's figure: final coefficients, tensors (grouped by layer) x vertices."""
    import numpy as np

    order: dict[str, int] = {}
    for name in [*plan.tensors, *plan.coefficients]:
        order.setdefault(name, len(order))
    names = sorted(plan.coefficients, key=lambda n: (layer_group(n)[0], order[n]))
    matrix = np.array([plan.coefficients[n] for n in names], dtype=float).reshape(
        len(names), len(plan.models)
    )
    figsize = heatmap_figsize(len(names), len(plan.models))
    fig = _figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    low, high = (float(matrix.min()), float(matrix.max())) if matrix.size else (0.0, 1.0)
    if low < 0:  # task-arithmetic starts can give negative base weights
        bound = max(-low, high, 1e-9)
        image = ax.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(high, 1.0))
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="coefficient")
    ax.set_xticks(range(len(plan.labels)))
    ax.set_xticklabels(plan.labels, rotation=30, ha="right")
    labels, firsts = heatmap_rows(names)
    row_points = 72 * (figsize[1] - 1.5) / max(len(names), 1)  # height of one row
    font = min(8.0, 0.8 * row_points)
    if font >= MIN_ROW_FONT:  # every row named; a group's first row also names the layer
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(labels, fontsize=font)
        for tick, first in zip(ax.get_yticklabels(), firsts):
            if first:
                tick.set_fontweight("bold")
    else:  # too many rows to name each: one label per layer group
        starts = [row for row, first in enumerate(firsts) if first] + [len(names)]
        ax.set_yticks([(a + b - 1) / 2 for a, b in zip(starts, starts[1:])])
        ax.set_yticklabels([layer_group(names[a])[1] for a in starts[:-1]], fontsize="small")
    for row, first in enumerate(firsts):  # a rule between layer groups
        if first and row:
            ax.axhline(row - 0.5, color="white", linewidth=0.8)
    ax.set_title(f"Final coefficients ({len(names)} tensors)")
    fig.tight_layout()
    return fig


def plot_coefficients(plan: FWPlan, path: Path) -> Path:
    """Heatmap of the final coefficients: tensors (grouped by layer) x [base, candidates]."""
    coefficients_figure(plan).savefig(path, dpi=DPI)
    return path


def plot_wins(plan: FWPlan, path: Path) -> Path:
    """Stacked bars: share of tensors whose LMO picked each vertex, per iteration."""
    fig = _figure(LINE_FIGSIZE)
    ax = fig.add_subplot(1, 1, 1)
    steps = [r.t for r in plan.iterations]
    seen = {label for r in plan.iterations for label in r.wins}
    labels = [label for label in plan.labels if label in seen] + sorted(seen - set(plan.labels))
    colors = _colors(plan.labels)
    bottom = [0.0] * len(steps)
    for label in labels:
        shares = []
        for r in plan.iterations:
            total = sum(r.wins.values()) or 1
            shares.append(r.wins.get(label, 0) / total)
        ax.bar(steps, shares, bottom=bottom, color=colors.get(label), label=label, width=0.8)
        bottom = [b + s for b, s in zip(bottom, shares)]
    ax.set_ylim(0, 1)
    ax.set_xticks(steps)
    ax.set_xlabel("iteration")
    ax.set_ylabel("share of tensors won")
    ax.set_title("Linear minimisation oracle: which vertex each tensor stepped toward")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def make_plots(plan: FWPlan, out_dir: str | Path) -> list[Path]:
    """Write the three PNGs into out_dir; raises ImportError without matplotlib."""
    import matplotlib  # noqa: F401  (fail early, before touching any file)

    out = Path(out_dir)
    paths = [plot_loss_gap(plan, out / LOSS_PNG)]
    if plan.coefficients:
        paths.append(plot_coefficients(plan, out / COEFFICIENTS_PNG))
    if plan.iterations:
        paths.append(plot_wins(plan, out / WINS_PNG))
    return paths
