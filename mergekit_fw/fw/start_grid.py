"""The data-free starts `init: auto` compares that need no mergekit: the base and task
arithmetic over a small lambda grid, each a combination of the pool's vertices.

The recipe path (mergekit/auto_start.py) adds mergekit's TIES to this table; the Python API
(mergekit_fw/api.py) uses it as it is. Each start is formed in the model itself, streamed
one vertex tensor at a time, and scored with one calibration pass (`loss()`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from mergekit_fw.fw.constraints import add_task_vector_, make_constraint
from mergekit_fw.fw.finite import check_vertex

LOG = logging.getLogger("mergekit_fw")

TA_GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # lambda per task vector (outside the set: skipped)


def inside(settings, lam: list[float]) -> bool:
    """Whether task-vector weights lam lie in the run's constraint set (`init: auto` only
    compares starts inside it; the authors' task-arithmetic start with n * lambda > 1 on the
    hull stays available as `init: task_arithmetic`)."""
    return make_constraint(settings).contains(torch.tensor([lam], dtype=torch.float64))


def ta_row(lam: float, n: int) -> list[float]:
    """Coefficients over [base, candidates] of base + lam * sum_i (theta_i - base)."""
    return [1.0 - n * lam] + [lam] * n


def builtin_rows(settings, n: int) -> list[tuple[str, list[float]]]:
    """(name, coefficient row) of the base and of every task-arithmetic start in the set."""
    rows = [("base", [1.0] + [0.0] * n)]
    rows += [(f"task_arithmetic lambda={lam}", ta_row(lam, n)) for lam in TA_GRID
             if inside(settings, [lam] * n)]  # fmt: skip
    return rows


@torch.no_grad()
def set_combination(out: torch.Tensor, pool, name: str, row: list[float]) -> torch.Tensor:
    """out = sum_k row_k v_k for one tensor, one vertex tensor in memory at a time: the one
    place an iterate is built from the pool and its coefficients."""
    out.zero_()
    for k, c in enumerate(row):
        if c != 0.0:
            vertex = pool.tensor(k, name)
            check_vertex(vertex, pool.labels[k], name)
            out.add_(vertex, alpha=c)
            del vertex  # one vertex tensor alive at a time
    return out


@torch.no_grad()
def set_combinations(slots, pool, row: list[float]) -> None:
    """Every slot's parameter set to sum_k row_k v_k (the same row for every tensor)."""
    for slot in slots:
        set_combination(slot.param, pool, slot.name, row)


def line_position(row: list[float]) -> float | None:
    """lam if the row is base + lam * sum_i tau_i (`ta_row`; the base: lam 0), else None."""
    n, lam = len(row) - 1, row[1] if len(row) > 1 else 0.0
    return lam if row == ta_row(lam, n) else None


@torch.no_grad()
def sum_task_vectors_(t: torch.Tensor, pool, name: str, base: torch.Tensor) -> torch.Tensor:
    """t = sum_i (theta_i - base) for one tensor, one vertex read each: every
    task-arithmetic start base + lam t is then a point of one line."""
    t.zero_()
    for k in range(1, len(pool)):
        add_task_vector_(pool, k, name, t, 1.0, base)
    if not bool(torch.isfinite(t).all()):  # name the candidate (rare: its tensors read again)
        for k in range(1, len(pool)):
            check_vertex(pool.tensor(k, name), pool.labels[k], name)
    return t


def score_rows(
    rows, slots, pool, loss: Callable[[], float], model=None
) -> tuple[list[dict], list[float] | None]:
    """(table, held): the table entries {start, loss, row} of the given starts, and the row
    the parameters hold afterwards, so that the loop can start there without forming it
    again (`FrankWolfe(start_formed=True)`).

    When every row is a point of the task-arithmetic line and `model` splits into blocks
    (fw/offload.py), the pool is read once: the parameters hold the base, their gradient
    buffers the summed task vector t, and each start's weights base + lam t are formed block
    by block as it runs; the parameters are then moved to the lowest-loss point of the line,
    formed as it was scored (no read). Otherwise each start is formed in the model from the
    pool, and the parameters hold the last one."""
    positions = [line_position(row) for _, row in rows]
    engine = _line_engine(model, slots) if None not in positions else None
    if engine is None:
        table = []
        for name, row in rows:
            set_combinations(slots, pool, row)
            table.append({"start": name, "loss": loss(), "row": row})
        return table, (rows[-1][1] if rows else None)
    by_name = {slot.name: slot for slot in slots}
    try:
        for slot in slots:
            base = set_combination(
                slot.param.data, pool, slot.name, [1.0] + [0.0] * (len(pool) - 1)
            )
            slot.param.grad = sum_task_vectors_(torch.empty_like(base), pool, slot.name, base)
        table = []
        for (name, row), lam in zip(rows, positions):

            def weights(tensor: str, lam=lam) -> torch.Tensor:
                param = by_name[tensor].param
                return param.detach().add(param.grad, alpha=lam)

            with engine.use(weights):
                table.append({"start": name, "loss": loss(), "row": row})
        best = best_index(table)
        with torch.no_grad():
            for slot in slots:  # the same op as `weights`: theta_0 is the start scored
                slot.param.add_(slot.param.grad, alpha=positions[best])
        return table, table[best]["row"]
    finally:
        engine.release()
        for slot in slots:
            slot.param.grad = None


def _line_engine(model, slots):
    """An `Offloaded` view of the in-memory model (None where its blocks cannot be found)."""
    from mergekit_fw.fw.offload import Offloaded

    if model is None:
        return None
    device = slots[0].param.device if slots else torch.device("cpu")
    try:
        return Offloaded(model, {id(s.param): s.name for s in slots}, device)
    except (ValueError, KeyError):
        return None


def choose(table: list[dict], unit: str = "") -> tuple[dict, list[dict]]:
    """(chosen entry, table as the plan records it): the lowest loss wins; the table is logged
    (`unit`: plan.loss_unit of the run)."""
    chosen = mark_best(table)
    log_table(table, unit)
    return chosen, public(table)


def best_index(table: list[dict]) -> int:
    """The lowest-loss entry's index (the first of ties)."""
    return min(range(len(table)), key=lambda i: table[i]["loss"])


def mark_best(table: list[dict]) -> dict:
    """Flag the lowest-loss entry (the first of ties) as chosen; return it."""
    best = best_index(table)
    for i, entry in enumerate(table):
        entry["chosen"] = i == best
    return table[best]


def log_table(table: list[dict], unit: str = "") -> None:
    LOG.info("init: auto, calibration loss%s of each data-free start:", f" ({unit})" * bool(unit))
    for entry in table:
        mark = "  <- start" if entry.get("chosen") else ""
        LOG.info("  %-32s %.5f%s", entry["start"], entry["loss"], mark)


def public(table: list[dict]) -> list[dict]:
    """The table as fw_plan.json records it (no coefficient rows)."""
    return [{k: v for k, v in entry.items() if k != "row"} for entry in table]
