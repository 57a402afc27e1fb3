"""`init: auto`: start from the data-free merge with the lowest calibration loss.

Candidates: the base, task arithmetic over a small lambda grid, and mergekit's TIES over a
small density grid. Each is formed in the model itself, streamed (task arithmetic one
vertex tensor at a time, TIES through mergekit's executor one output tensor at a time), and
scored with one calibration pass. Only the best TIES so far is kept, as the start vertex
(one model copy in memory); a task-arithmetic or base winner needs no extra vertex. FW with
line search then never rises above the chosen start, so the result is never worse on the
calibration data than the best of these merges.
"""

from __future__ import annotations

import logging

import torch

from mergekit_fw.fw.objectives import evaluate
from mergekit_fw.mergekit.start import compute_start_vertex, describe, method_config, snapshot

LOG = logging.getLogger("mergekit_fw")

TA_GRID = (0.1, 0.2, 0.3, 0.5)  # lambda per task vector
TIES_GRID = (0.2, 0.5, 0.8)  # density (weight 1.0, mergekit's defaults otherwise)


def inside(settings, lam: list[float]) -> bool:
    """Whether task-vector weights lam lie in the run's constraint set (the hull keeps the
    authors' task-arithmetic starts even where n * lambda > 1)."""
    constraint = getattr(settings, "constraint", "hull")
    scale = getattr(settings, "scale", 1.0)
    if constraint == "box":
        return all(0.0 <= x <= scale for x in lam)
    if constraint == "simplex":
        return all(x >= 0.0 for x in lam) and sum(lam) <= scale
    return True


def ta_row(lam: float, n: int) -> list[float]:
    """Coefficients over [base, candidates] of base + lam * sum_i (theta_i - base)."""
    return [1.0 - n * lam] + [lam] * n


@torch.no_grad()
def set_combination(slots, pool, row: list[float]) -> None:
    for slot in slots:
        slot.param.zero_()
        for k, c in enumerate(row):
            if c != 0.0:
                slot.param.add_(pool.tensor(k, slot.name), alpha=c)


def choose_start(recipe, options, model, slots, pool, objective, batches, task_names, device):
    """Evaluate the grid; returns (start vertex or None, start row, table).

    The start row is over the pool's vertices plus, when TIES wins, the start vertex
    (appended last by the caller). The table lists every candidate and its loss.
    """
    n = len(pool) - 1
    dtype = pool.dtype

    def loss() -> float:
        report = evaluate(model, objective, batches, task_names, grad=False, quiet=True)
        return report.total

    table: list[dict] = []
    best_ties, best_ties_loss = None, float("inf")
    settings = recipe.settings
    rows = [("base", [1.0] + [0.0] * n)] + [
        (f"task_arithmetic lambda={lam}", ta_row(lam, n))
        for lam in TA_GRID
        if inside(settings, [lam] * n)
    ]
    for name, row in rows:
        set_combination(slots, pool, row)
        table.append({"start": name, "loss": loss(), "row": row})
    ties_grid = TIES_GRID if inside(settings, [1.0]) else ()  # TIES: a task vector at 1
    for density in ties_grid:
        config = method_config(
            "ties", {"density": density, "weight": 1.0}, recipe.base, recipe.candidates,
            _dtype_name(dtype),
        )  # fmt: skip
        vertex_id = f"init:ties(density={density},weight=1.0)"
        compute_start_vertex(config, options, slots, vertex_id, "", device, dtype, keep=False)
        value = loss()
        table.append({"start": f"ties density={density}", "loss": value, "row": None})
        if value < best_ties_loss:  # keep only the best TIES so far: one model copy
            best_ties = None
            best_ties = snapshot(slots, vertex_id, "init_ties", describe(config))
            best_ties_loss = value
    best = min(range(len(table)), key=lambda i: table[i]["loss"])
    for i, entry in enumerate(table):
        entry["chosen"] = i == best
    chosen = table[best]
    LOG.info("init: auto, calibration loss of each data-free start:")
    for entry in table:
        LOG.info(
            "  %-32s %.5f%s", entry["start"], entry["loss"], "  <- start" if entry["chosen"] else ""
        )
    if chosen["row"] is not None:
        start, row = None, chosen["row"]
    else:
        start, row = best_ties, [0.0] * (n + 1) + [1.0]
    clean = [{k: v for k, v in entry.items() if k != "row"} for entry in table]
    return start, row, clean


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
