"""The Frank-Wolfe section of the model card that mergekit writes, plus its plots.

The card is the one place a reader of a merged model looks, so it says what FW did in a
few numbers (iterations, loss, gap, who contributed), shows the plots from plots.py and,
when `mergekit-fw eval` has been run on this exact plan, the evaluation table.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from mergekit_fw.plan import PLAN_FILE, FWPlan

LOG = logging.getLogger("mergekit_fw")
SECTION_TITLE = "## Frank-Wolfe merging"
EVAL_FILE = "fw_eval.json"
CARD_FILE = "README.md"
PLOT_CAPTIONS = {
    "fw_loss.png": "Calibration loss and Frank-Wolfe gap per iteration",
    "fw_coefficients.png": "Final coefficient of each model in each tensor, grouped by layer",
    "fw_wins.png": "Share of tensors that stepped toward each model, per iteration",
}


def plan_fingerprint(plan: FWPlan) -> str:
    """Identifies one plan, so evaluation results are only shown next to the merge they measured."""
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:16]


def top_candidates(plan: FWPlan, n: int = 3) -> list[tuple[str, float]]:
    """Candidates (not the base) by total coefficient over tensors, largest first."""
    totals = plan.total_coefficients()
    candidates = [(label, totals[label]) for label in plan.labels[1:]]
    return sorted(candidates, key=lambda kv: -kv[1])[:n]


def _unit(plan: FWPlan) -> str:
    """` (nats/sample)`: the unit of the plan's losses, for a column header."""
    unit = plan.loss_unit
    return f" ({unit})" if unit else ""


def summary_table(plan: FWPlan) -> list[str]:
    n_tensors = max(len(plan.coefficients), 1)
    last = plan.iterations[-1] if plan.iterations else None
    start = f"{plan.iterations[0].loss:.4f} -> " if plan.iterations else ""
    base_total = plan.total_coefficients().get(plan.labels[0], 0.0)
    top = ", ".join(
        f"{label} {total:.2f} (mean {total / n_tensors:.2f})"
        for label, total in top_candidates(plan)
    )
    return [
        "| summary | |",
        "|---|---|",
        f"| iterations run / budget | {len(plan.iterations)} / {plan.settings.iterations} "
        f"(stopped: {plan.stopped}) |",
        f"| calibration loss{_unit(plan)} | {start}{plan.final_loss:.4f} |",
        f"| final FW gap | {last.gap:.4g} |" if last else "| final FW gap | - |",
        f"| top candidates by total coefficient over {len(plan.coefficients)} tensors | "
        f"{top or '-'} |",
        f"| base model `{plan.labels[0]}`: total coefficient | {base_total:.2f} "
        f"(mean {base_total / n_tensors:.2f}) |",
    ]


def task_preference_lines(plan: FWPlan) -> list[str]:
    """Which candidate each calibration task's own gradient prefers at the final merge."""
    if not plan.task_preferences:
        return []
    lines = [
        "",
        "Which vertex each calibration task's gradient prefers at the final merge "
        "(tensors won, per-task LMO):",
        "",
        "| task | " + " | ".join(plan.labels) + " |",
        "|---|" + "---|" * len(plan.labels),
    ]
    for task, wins in plan.task_preferences.items():
        lines.append(
            f"| {task} | " + " | ".join(str(wins.get(label, 0)) for label in plan.labels) + " |"
        )
    return lines


def excluded_lines(plan: FWPlan) -> list[str]:
    """Candidates the foreign screen left out of the pool, and why."""
    excluded = getattr(plan, "excluded", None) or []
    if not excluded:
        return []
    lines = [
        "",
        "### Left out of the pool",
        "",
        "| candidate | ‖θ − base‖ / ‖base‖ | max_distance | why |",
        "|---|---|---|---|",
    ]
    for e in excluded:
        lines.append(
            f"| {e.label} (`{e.model}`) | {e.distance:.4f} | {e.max_distance:g} | {e.reason} |"
        )
    return lines


def evaluation_lines(evaluation: dict | None) -> list[str]:
    if not evaluation or not evaluation.get("table"):
        return []
    return [
        "",
        "### Evaluation",
        "",
        f"Measured with `mergekit-fw eval` (lm-eval-harness); full results in `{EVAL_FILE}`.",
        "",
        evaluation["table"].rstrip(),
    ]


def init_table_lines(plan: FWPlan) -> list[str]:
    """init: auto: every data-free start it tried and its calibration loss."""
    table = getattr(plan, "init_table", None)
    if not table:
        return []
    lines = [
        "",
        "### Start (init: auto)",
        "",
        f"| start | calibration loss{_unit(plan)} | chosen |",
        "|---|---|---|",
    ]
    for entry in table:
        lines.append(
            f"| {entry['start']} | {entry['loss']:.4f} | {'yes' if entry['chosen'] else ''} |"
        )
    return lines


def _what_it_is(plan: FWPlan) -> str:
    """Dense merges have a linear-recipe twin; adapter vertices and factor merges do not."""
    where = f"the coefficients and the whole trajectory are in the plan, `{PLAN_FILE}`"
    if plan.settings.lora_mode == "factors":
        return (
            "This folder is a PEFT LoRA adapter: each of its LoRA factors is a linear "
            f"combination of the candidate adapters' factors; {where}."
        )
    if plan.settings.merge_fn != "linear":
        return (
            f"Each step applied a `{plan.settings.merge_fn}` merge function to the direction, "
            f"which is not linear in the candidates; {where}, and the writer replays it per "
            "tensor. There is no `fw_linear.yaml`: no `linear` recipe gives this merge."
        )
    if getattr(plan, "start", None):
        return (
            "Every tensor of this model is a combination of the base, the candidates and the "
            f"mergekit start `{plan.start['id']}` (computed by mergekit, kept in memory); {where}. "
            "There is no `fw_linear.yaml`: a mergekit `linear` recipe cannot name the start."
        )
    if getattr(plan, "adapters", None):
        return (
            "Every tensor of this model is a linear combination of the base and the candidates "
            f"(some of them LoRA adapters); {where}. There is no `fw_linear.yaml`: a mergekit "
            "`linear` recipe cannot express adapter candidates."
        )
    return (
        "Every tensor of this model is a linear combination of the base and the candidates; "
        f"{where}, and `fw_linear.yaml` reproduces the weights with stock mergekit `linear`."
    )


def card_section(plan: FWPlan, plots: Sequence[str] = (), evaluation: dict | None = None) -> str:
    """Markdown for the card; `plots` are file names next to the card, `evaluation` fw_eval.json."""
    s = plan.settings
    lines = [
        SECTION_TITLE,
        "",
        "The merge coefficients were chosen by [Frank-Wolfe Merging](https://arxiv.org/abs/2503.12649) "
        "([mergekit-fw](https://pypi.org/project/mergekit-fw/)): each iteration takes the gradient "
        "of the calibration loss at the current merge, asks a linear minimisation oracle which "
        "candidate best follows the negative gradient, and steps toward it. " + _what_it_is(plan),
        "",
        *summary_table(plan),
        *excluded_lines(plan),
    ]
    if plots:
        lines += ["", "### Plots", ""]
        for name in plots:
            lines += [f"![{PLOT_CAPTIONS.get(name, name)}]({name})", ""]
        lines.pop()
    lines += [
        "",
        "### Settings",
        "",
        "| setting | value |",
        "|---|---|",
        f"| calibration | `{s.calibration}` |",
        f"| LMO | {s.lmo}, granularity {s.granularity}, zero vertex {s.zero_vertex} |",
        f"| constraint | {s.constraint}"
        + (f", scale {s.scale}" if s.constraint != "hull" else "")
        + " |",
        f"| start | {s.init} |",
        f"| step rule | {s.step} |",
        "",
        "### Trajectory",
        "",
        f"| iteration | loss{_unit(plan)} | FW gap | gamma | tensors won |",
        "|---|---|---|---|---|",
    ]
    for r in plan.iterations:
        wins = ", ".join(f"{k} {v}" for k, v in sorted(r.wins.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r.t} | {r.loss:.4f} | {r.gap:.4g} | {r.gamma:.4g} | {wins} |")
    lines += ["", "Total coefficient per model, summed over tensors:", ""]
    totals = sorted(plan.total_coefficients().items(), key=lambda kv: -kv[1])
    lines += [f"- {label}: {value:.3f}" for label, value in totals]
    lines += task_preference_lines(plan)
    lines += init_table_lines(plan)
    lines += evaluation_lines(evaluation)
    return "\n".join(lines) + "\n"


def existing_plots(out_dir: Path) -> list[str]:
    from mergekit_fw.report.plots import PLOT_FILES  # no matplotlib import: only names

    return [name for name in PLOT_FILES if (out_dir / name).exists()]


def load_evaluation(out_dir: Path, plan: FWPlan) -> dict | None:
    """fw_eval.json if it was measured on this plan's merge; a re-merge makes it stale."""
    path = out_dir / EVAL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if data.get("plan_fingerprint") == plan_fingerprint(plan) else None


def append_card_section(
    card: Path,
    plan: FWPlan,
    plots: Sequence[str] | None = None,
    evaluation: dict | None = None,
) -> None:
    """Replace (or add) the FW section; plots=None embeds the plot files found next to the card."""
    card = Path(card)
    if plots is None:
        plots = existing_plots(card.parent)
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    if SECTION_TITLE in text:
        text = text[: text.index(SECTION_TITLE)].rstrip() + "\n"
    prefix = text.rstrip() + "\n\n" if text.strip() else ""
    card.write_text(prefix + card_section(plan, plots, evaluation), encoding="utf-8")


def write_report(
    out_dir: str | Path, plan: FWPlan | None = None, create_card: bool = True
) -> list[Path]:
    """Plots plus the card section for a finished merge; returns the files written.

    Raises ImportError without matplotlib (after removing stale plots, so the card never
    shows pictures of an older merge). create_card=False leaves a missing README.md missing
    (mergekit was told not to write one).
    """
    from mergekit_fw.report.plots import PLOT_FILES, make_plots

    out = Path(out_dir)
    if plan is None:
        plan = FWPlan.load(out / PLAN_FILE)
    for name in PLOT_FILES:
        (out / name).unlink(missing_ok=True)
    card = out / CARD_FILE
    try:
        paths = make_plots(plan, out)
    finally:
        if create_card or card.exists():
            append_card_section(card, plan, evaluation=load_evaluation(out, plan))
    return [*paths, card] if card.exists() else paths


def report_after_merge(out_dir: str | Path, plan: FWPlan) -> None:
    """write_report for the end of a merge: a plotting problem must not fail a finished merge."""
    try:
        write_report(out_dir, plan, create_card=False)
    except ImportError as error:
        LOG.warning(
            "No plots in the model card (%s); install matplotlib (`pip install "
            "mergekit-fw[plots]`) and run `mergekit-fw report %s`.",
            error,
            out_dir,
        )
    except Exception as error:  # the merge itself is already written
        LOG.warning("Could not write the Frank-Wolfe plots for %s: %r", out_dir, error)
