"""The Frank-Wolfe section of the model card that mergekit writes."""

from __future__ import annotations

from pathlib import Path

from mergekit_fw.plan import PLAN_FILE, FWPlan

SECTION_TITLE = "## Frank-Wolfe merging"


def card_section(plan: FWPlan) -> str:
    s = plan.settings
    last = plan.iterations[-1] if plan.iterations else None
    lines = [
        SECTION_TITLE,
        "",
        "The merge coefficients were chosen by [Frank-Wolfe Merging](https://arxiv.org/abs/2503.12649) "
        "([mergekit-fw](https://pypi.org/project/mergekit-fw/)): each iteration takes the gradient "
        "of the calibration loss at the current merge, asks a linear minimisation oracle which "
        "candidate best follows the negative gradient, and steps toward it. Every tensor of this "
        "model is a linear combination of the base and the candidates; the coefficients and the "
        f"whole trajectory are in `{PLAN_FILE}`, and `fw_linear.yaml` reproduces the weights with "
        "stock mergekit `linear`.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| calibration | `{s.get('calibration')}` |",
        f"| iterations run / budget | {len(plan.iterations)} / {s.get('iterations')} (stopped: {plan.stopped}) |",
        f"| LMO | {s.get('lmo')}, granularity {s.get('granularity')}, zero vertex {s.get('zero_vertex')} |",
        f"| start | {s.get('init')} | ",
        f"| step rule | {s.get('step')} |",
        f"| calibration loss, start -> final | {plan.iterations[0].loss:.4f} -> {plan.final_loss:.4f} |"
        if plan.iterations
        else f"| final calibration loss | {plan.final_loss:.4f} |",
        f"| last FW gap | {last.gap:.4g} |" if last else "",
        "",
        "| iteration | loss | FW gap | gamma | tensors won |",
        "|---|---|---|---|---|",
    ]
    for r in plan.iterations:
        wins = ", ".join(f"{k} {v}" for k, v in sorted(r.wins.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r.t} | {r.loss:.4f} | {r.gap:.4g} | {r.gamma:.4g} | {wins} |")
    lines += ["", "Total coefficient per model, summed over tensors:", ""]
    totals = sorted(plan.total_coefficients().items(), key=lambda kv: -kv[1])
    lines += [f"- {label}: {value:.3f}" for label, value in totals]
    return "\n".join(line for line in lines if line is not None) + "\n"


def append_card_section(card: Path, plan: FWPlan) -> None:
    text = card.read_text(encoding="utf-8")
    if SECTION_TITLE in text:
        text = text[: text.index(SECTION_TITLE)].rstrip() + "\n"
    card.write_text(text.rstrip() + "\n\n" + card_section(plan), encoding="utf-8")
