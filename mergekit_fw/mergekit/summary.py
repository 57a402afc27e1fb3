"""What a frank_wolfe run says when it ends, and how its own messages look.

mergekit-yaml configures logging with `basicConfig` at WARNING, so the package's messages
came out as `WARNING:mergekit_fw:...` and its INFO lines (the end of the run) not at all.
During a frank_wolfe run `plain_messages` prints the package's records as plain lines on
stderr (`Warning: ...` for warnings) and keeps them out of the root handler; `summary` is the
few lines printed at the end: where the merge is, which start FW took, the calibration loss
before and after (with its unit), and the wall time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

LOGGER = "mergekit_fw"


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"Warning: {text}" if record.levelno >= logging.WARNING else text


class _NotOurs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(LOGGER)


@contextlib.contextmanager
def plain_messages(quiet: bool = False) -> Iterator[None]:
    """The package's log records as plain lines on stderr for the duration of a run: INFO
    and up (WARNING and up when quiet); the root logger's console handlers skip them.
    Records still propagate, so other handlers (files, test capture) see them as before."""
    logger = logging.getLogger(LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Plain())
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    consoles = [
        h for h in logging.getLogger().handlers
        if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout)
    ]  # fmt: skip
    skip = _NotOurs()
    level = logger.level
    if logger.getEffectiveLevel() > handler.level:
        logger.setLevel(handler.level)
    for console in consoles:
        console.addFilter(skip)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for console in consoles:
            console.removeFilter(skip)
        logger.setLevel(level)


def start_name(plan) -> str:
    """The start FW took: init: auto's chosen entry, or the recipe's `init`."""
    init = plan.settings.init
    chosen = [e for e in plan.init_table or [] if e.get("chosen")]
    if chosen:
        return f"{chosen[0]['start']} (init: auto, best of {len(plan.init_table)} starts)"
    if plan.start:
        return f"{plan.start.get('label') or plan.start.get('id')} (init: {init})"
    return f"init: {init}"


def summary(plan, out_path: str, seconds: float, saved_plan: str | None = None) -> list[str]:
    """The end-of-run lines: output, start, loss before -> after, time (`saved_plan`: the
    merge was written from that plan, no pre-pass ran)."""
    from mergekit_fw.plan import PLAN_FILE

    unit = f" {plan.loss_unit}" if plan.loss_unit else ""
    before = f"{plan.iterations[0].loss:.5f} -> " if plan.iterations else ""
    lines = [
        f"Frank-Wolfe merge written to {out_path} (plan: {os.path.join(out_path, PLAN_FILE)}, "
        f"model card: {os.path.join(out_path, 'README.md')})",
        f"  start: {start_name(plan)}",
        f"  calibration loss: {before}{plan.final_loss:.5f}{unit} "
        f"({len(plan.iterations)} iterations, stopped: {plan.stopped})",
    ]
    if plan.excluded:
        lines.append("  left out (foreign): " + ", ".join(e.label for e in plan.excluded))
    pre_pass = f", pre-pass {plan.seconds:.1f} s" if plan.seconds else ""
    if saved_plan:
        pre_pass = f", written from the saved plan {saved_plan} (no pre-pass)"
    lines.append(f"  time: {seconds:.1f} s in all{pre_pass}")
    return lines
