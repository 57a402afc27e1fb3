"""The data-free starts `init: auto` compares that need no mergekit: the base, task
arithmetic over a small lambda grid and, with `screening`, each candidate alone and the
screened task-arithmetic lines (fw/screened_start.py); each a combination of the pool's
vertices.

The recipe path (mergekit/auto_start.py) adds mergekit's TIES to this table; the Python API
(mergekit_fw/api.py) uses it as it is. Each start is formed in the model itself, streamed
one vertex tensor at a time, and scored with one calibration pass (`loss()`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from mergekit_fw.fw.constraints import make_constraint
from mergekit_fw.fw.finite import check_vertex
from mergekit_fw.fw.screened_start import (
    ALONE,
    PROBE,
    alone_row,
    screened_lines,
    sum_task_vectors_,
    weighted_row,
    weighted_rows,
)

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


def line_position(row: list[float], weights: list[float] | None = None) -> float | None:
    """lam if the row is base + lam * sum_i tau_i (`ta_row`; the base: lam 0), or, with
    `weights`, base + lam * sum_i w_i tau_i (`weighted_row`); else None."""
    n = len(row) - 1
    if weights is None:
        lam = row[1] if n else 0.0
        return lam if row == ta_row(lam, n) else None
    lam = row[1 + weights.index(1.0)]
    return lam if row == weighted_row(lam, weights) else None


@dataclass
class LineScan:
    """`init: auto`'s starts where a host holds the base and one direction t, and can run
    the model with any weights: `base(name)` and `direction(name)` give their tensors,
    `set_direction(name, t)` replaces t, and `loss_with(weights)` is the calibration loss
    with each tensor's weights from `weights(name)` (formed block by block: no parameter
    moves, no copy of the model)."""

    base: Callable[[str], torch.Tensor]
    direction: Callable[[str], torch.Tensor]
    set_direction: Callable[[str, torch.Tensor], None]
    loss_with: Callable[[Callable[[str], torch.Tensor]], float]

    def form(self, slots, pool, weights: list[float] | None = None) -> None:
        """t = sum_i w_i tau_i (w: all 1), one read of the pool (of the w_i != 0)."""
        for slot in slots:
            base = self.base(slot.name)
            t = sum_task_vectors_(torch.empty_like(base), pool, slot.name, base, weights)
            self.set_direction(slot.name, t)
            del base, t

    def score(self, rows, weights=None) -> list[dict]:
        """The points named by `rows` of the line held (`weights`: a screened one)."""
        return [
            {"start": name, "loss": self.loss_at(line_position(row, weights)), "row": row,
             "weights": weights}
            for name, row in rows
        ]  # fmt: skip

    def loss_at(self, lam: float) -> float:
        return self.loss_with(lambda name: self.base(name).add(self.direction(name), alpha=lam))

    def screen(self, slots, pool, p: float) -> list[dict]:
        """Each candidate alone, base + p tau_k: tau_k is held as the direction in turn
        (one read of the pool for all of them)."""
        n, table = len(pool) - 1, []
        for k in range(1, n + 1):
            alone = alone_row(k, 1.0, n)[1:]
            self.form(slots, pool, alone)
            table += self.score([(ALONE.format(pool.labels[k], p), alone_row(k, p, n))], alone)
        return table

    def run(self, rows, slots, pool, settings=None) -> tuple[list[dict], float]:
        """(table, lam): the uniform line (`rows`); then, given the run's `settings`, each
        candidate alone and the screened lines (fw/screened_start.py). The table's best
        lies on one of these lines, base + lam t: its t is left as the direction (formed
        again, one read of its candidates, unless it is the last one formed)."""
        self.form(slots, pool)
        table, held = self.score(rows), None
        n = len(pool) - 1
        if screens(settings, n):
            alone = self.screen(slots, pool, PROBE)
            table += alone
            held = alone[-1]["weights"]
            base = next((e["loss"] for e in table if line_position(e["row"]) == 0.0), None)
            base = self.loss_at(0.0) if base is None else base
            for line, w in screened_lines([base - e["loss"] for e in alone]):
                screened = screened_rows(settings, line, w)
                if screened:
                    self.form(slots, pool, w)
                    table += self.score(screened, w)
                    held = w
        return table, self.hold(slots, pool, table[best_index(table)], held)

    def hold(self, slots, pool, best: dict, held: list[float] | None) -> float:
        """The best start's lam on its line, whose t is left as the direction."""
        lam = line_position(best["row"], best["weights"])
        if lam and best["weights"] != held:
            self.form(slots, pool, best["weights"])
        return lam


class RowScan(LineScan):
    """The same starts where the model cannot be run block by block with other weights:
    each is formed in the parameters from the pool (one read of its vertices) and scored
    there, and the best is formed again at the end unless it was the last one formed
    (`hold` returns 0: nothing to move)."""

    def __init__(self, slots, pool, loss: Callable[[], float]):
        self.slots, self.pool, self.loss = slots, pool, loss
        self.formed: list[float] | None = None  # the row the parameters hold

    def form(self, slots, pool, weights=None) -> None:
        """Nothing to hold: every start is formed where it is scored."""

    def score(self, rows, weights=None) -> list[dict]:
        table = []
        for name, row in rows:
            set_combinations(self.slots, self.pool, row)
            self.formed = row
            table.append({"start": name, "loss": self.loss(), "row": row, "weights": weights})
        return table

    def loss_at(self, lam: float) -> float:  # only the base's loss is asked for (lam 0)
        return self.score([("base", [1.0] + [0.0] * (len(self.pool) - 1))])[0]["loss"]

    def hold(self, slots, pool, best: dict, held) -> float:
        if best["row"] != self.formed:
            set_combinations(slots, pool, best["row"])
        return 0.0


def screens(settings, n: int) -> bool:
    """Whether `init: auto` screens: asked to (`screening`), more than one candidate, and
    each candidate alone at PROBE inside the set."""
    if settings is None or not settings.screening or n < 2:
        return False
    return inside(settings, [PROBE] + [0.0] * (n - 1))


def screened_rows(settings, line: str, weights: list[float]) -> list[tuple[str, list[float]]]:
    """A screened line's grid points inside the run's constraint set."""
    return weighted_rows(TA_GRID, lambda lam: inside(settings, lam), line, weights)


def score_rows(
    rows, slots, pool, loss: Callable[[], float], model=None, settings=None
) -> tuple[list[dict], list[float] | None]:
    """(table, held): the table entries {start, loss, row, ...} of the given starts, and
    the row the parameters hold afterwards, so that the loop can start there without
    forming it again (`FrankWolfe(start_formed=True)`).

    When every row is a point of the task-arithmetic line and `model` splits into blocks
    (fw/offload.py), the pool is read once per line: the parameters hold the base, their
    gradient buffers the line's summed task vector t, and each start's weights base + lam t
    are formed block by block as it runs. Given the run's `settings`, each candidate alone
    and the screened lines (fw/screened_start.py) follow: one read for the candidates
    alone, one for each screened line's t. The parameters are then moved to the best
    point, formed as it was scored (its line's t formed again if another took its place).
    Otherwise each start is formed in the model from the pool and scored there, and the
    best is formed again (`RowScan`)."""
    on_line = model is not None and None not in [line_position(row) for _, row in rows]
    with held_line(model, slots, loss) if on_line else contextlib.nullcontext() as scan:
        if scan is None:
            table, _ = RowScan(slots, pool, loss).run(rows, slots, pool, settings)
            return table, table[best_index(table)]["row"]
        set_combinations(slots, pool, [1.0] + [0.0] * (len(pool) - 1))
        table, lam = scan.run(rows, slots, pool, settings)
        if lam:
            with torch.no_grad():
                for slot in slots:  # the same op as `loss_at`: theta_0 is the start scored
                    slot.param.add_(slot.param.grad, alpha=lam)
        return table, table[best_index(table)]["row"]


@contextlib.contextmanager
def held_line(model, slots, loss: Callable[[], float]) -> Iterator[LineScan | None]:
    """A `LineScan` over an in-memory model: the base in the parameters, the line's
    direction in their gradient buffers, each pass through an `Offloaded` view of the
    model (None where its blocks cannot be found). On exit the blocks get their own
    forwards back and the buffers are emptied."""
    engine = _line_engine(model, slots)
    if engine is None:
        yield None
        return
    by_name = {slot.name: slot for slot in slots}

    def loss_with(weights) -> float:
        with engine.use(weights):
            return loss()

    def set_direction(name: str, t: torch.Tensor) -> None:
        by_name[name].param.grad = t

    try:
        yield LineScan(
            base=lambda name: by_name[name].param.detach(),
            direction=lambda name: by_name[name].param.grad,
            set_direction=set_direction, loss_with=loss_with,
        )  # fmt: skip
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
    return [{k: v for k, v in entry.items() if k not in ("row", "weights")} for entry in table]
