"""`init: auto`: start from the data-free merge with the lowest calibration loss.

Candidates: fw/start_grid.py's table (the base, task arithmetic over a small lambda grid,
each candidate alone and the screened lines) and mergekit's TIES over a small density
grid. Each is formed in the model itself, streamed (the table's starts one vertex tensor
at a time, TIES through mergekit's executor one output tensor at a time), and scored with
one calibration pass. Only the best TIES so far is kept, as the start vertex (one model
copy in memory); any other winner needs no extra vertex. FW's
step rules never rise above the chosen start, so the result is never worse on the
calibration data than the best of these merges.
"""

from __future__ import annotations

import logging

import torch

from mergekit_fw.fw.start_grid import builtin_rows, choose, inside, score_rows
from mergekit_fw.mergekit.start import (
    compute_start_vertex,
    describe,
    dtype_name,
    method_config,
    snapshot,
)
from mergekit_fw.plan import loss_unit

LOG = logging.getLogger("mergekit_fw")

TIES_GRID = (0.2, 0.5, 0.8)  # density (weight 1.0, mergekit's defaults otherwise)


def choose_start(recipe, options, *, model, slots, pool, problem, device):
    """Evaluate the grid; returns (start vertex or None, start row, table, formed).

    The start row is over the pool's vertices plus, when TIES wins, the start vertex
    (appended last by the caller). The table lists every candidate and its loss. `formed`:
    the parameters hold the start already. TIES runs first (mergekit writes each merge into
    the parameters), then the table's lines (one read each), which leave their best point
    in the parameters; a TIES winner is copied back from its snapshot in memory. So the
    loop forms nothing again.
    """
    n = len(pool) - 1
    dtype = pool.dtype

    loss = problem.loss_of(model)
    best_ties, best_ties_loss = None, float("inf")
    settings = recipe.settings
    ties_table = []
    # TIES: one more vertex, a task vector at lambda 1; mergekit merges the dense candidates
    # only, so a pool with LoRA adapter vertices compares the builtin starts alone
    ties_grid = TIES_GRID if inside(settings, [1.0]) and not recipe.adapters else ()
    if recipe.adapters:
        LOG.info("init: auto: the pool has LoRA adapters; TIES starts are not compared")
    for density in ties_grid:
        config = method_config(
            "ties", {"density": density, "weight": 1.0}, recipe.base, recipe.candidates,
            dtype_name(dtype),
        )  # fmt: skip
        vertex_id = f"init:ties(density={density},weight=1.0)"
        compute_start_vertex(config, options, slots, vertex_id, "", device, dtype, keep=False)
        value = loss()
        ties_table.append({"start": f"ties density={density}", "loss": value, "row": None})
        if value < best_ties_loss:  # keep only the best TIES so far: one model copy
            best_ties = None
            best_ties = snapshot(slots, vertex_id, "init_ties", describe(config))
            best_ties_loss = value
    rows = builtin_rows(settings, n)
    line_table, held = score_rows(rows, slots, pool, loss, model, settings)
    chosen, table = choose(line_table + ties_table, loss_unit(settings))
    if chosen["row"] is not None:
        return None, chosen["row"], table, chosen["row"] == held
    with torch.no_grad():
        for slot in slots:
            slot.param.copy_(best_ties.get(slot.name))
    return best_ties, [0.0] * (n + 1) + [1.0], table, True
