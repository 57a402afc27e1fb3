"""The hard Frank-Wolfe loop (Algorithm 1 of arXiv 2503.12649), streamed per tensor.

`FrankWolfe.iteration` is one pass of Algorithm 1: gradient, LMO, gap, direction, step
size, merge. Memory: the model theta, one gradient-sized buffer, and one streamed vertex
tensor. The gradient's buffer holds g until the LMO has scored it, then d (fw/directions.py
says why), and the step rule walks theta in place along d (`LineWalk`), so peak memory does
not grow with the number of candidates.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from mergekit_fw.fw import state as loop_state
from mergekit_fw.fw.away import ActiveSets
from mergekit_fw.fw.constraints import Vertex, make_constraint
from mergekit_fw.fw.directions import make_directions
from mergekit_fw.fw.finite import check_loss, check_scores
from mergekit_fw.fw.objectives import Batch, LossReport, evaluate
from mergekit_fw.fw.offload import TensorStore, scratch_folder
from mergekit_fw.fw.oracles import SCORES, ZERO, ScoreTable
from mergekit_fw.fw.progress import message as progress_message
from mergekit_fw.fw.progress import progress
from mergekit_fw.fw.scores import Fold, VertexSource, score_tensor, score_tensor_many, vertex_ids
from mergekit_fw.fw.slots import Slot, build_slots  # noqa: F401 (importers of fw.loop)
from mergekit_fw.fw.start_grid import set_combination, ta_row
from mergekit_fw.fw.steps import fw_gap, make_step_rule
from mergekit_fw.plan import FWPlan, IterationRecord, loss_unit
from mergekit_fw.settings import FWConfigError, FWSettings

LOG = logging.getLogger("mergekit_fw")

# after every finished iteration: (the loop, the records so far, why it stops or None)
OnIteration = Callable[["FrankWolfe", list[IterationRecord], "str | None"], None]


class LineWalk:
    """theta along d for a step rule: calling it at gamma moves theta there in place and
    returns the calibration loss; `settle(gamma)` leaves theta at the chosen step. `moves`
    lists every in-place move, which the write phase replays (fw/replay.py) to reproduce
    theta's rounding under merge_fn ties / dare."""

    def __init__(self, loop: FrankWolfe):
        self.loop, self.position, self.moves = loop, 0.0, []

    def _go(self, gamma: float) -> None:
        delta = gamma - self.position
        if delta != 0.0:
            self.loop.move(delta)
            self.moves.append(delta)
        self.position = gamma

    def __call__(self, gamma: float) -> float:
        self._go(gamma)
        return self.loop.loss(grad=False, desc=f"line search g={gamma:.3f}").total

    def settle(self, gamma: float) -> None:
        self._go(gamma)


class TableFill:
    """Score tables (one per gradient) filled one tensor at a time from TensorScores; the
    vertex norms are taken from the first pass and cached by the loop (`norms`)."""

    def __init__(self, gradients: int, rows: int, n: int, norms: torch.Tensor | None):
        self.need_norms = norms is None
        self.norms = torch.zeros(rows, n, dtype=torch.float64) if norms is None else norms
        self.dots = torch.zeros(gradients, rows, n, dtype=torch.float64)
        self.grad_norms = torch.zeros(gradients, rows, dtype=torch.float64)
        self.current = torch.zeros(gradients, rows, dtype=torch.float64)

    def add(self, i: int, many: list, name: str, labels: list[str]) -> None:
        """Row i (tensor `name`) of every table, from that tensor's TensorScores."""
        for j, scores in enumerate(many):
            check_scores(scores, name, labels, self.need_norms)
            self.dots[j, i] = torch.tensor([float(d) for d in scores.dots], dtype=torch.float64)
            self.grad_norms[j, i], self.current[j, i] = scores.grad_norm, scores.current
        if self.need_norms:
            self.norms[i] = torch.tensor([float(x) for x in many[0].norms], dtype=torch.float64)

    def table(self, j: int = 0, rows: slice = slice(None)) -> ScoreTable:
        return ScoreTable(
            self.dots[j, rows], self.norms[rows], self.grad_norms[j, rows], self.current[j, rows]
        )


class FrankWolfe:
    """Gradient, LMO, step, merge: one object per pre-pass run."""

    def __init__(
        self,
        model: torch.nn.Module,
        slots: list[Slot],
        pool: VertexSource,
        objective,
        batches: list[Batch],
        task_names: list[str],
        settings: FWSettings,
        quiet: bool = False,
        *,
        start_row: list[float] | None = None,
        start_formed: bool = False,
        on_iteration: OnIteration | None = None,
        resume: loop_state.LoopState | None = None,
    ):
        """The loop is complete when built; `run()` starts from, in this order:

        - `resume`: a saved state (mergekit/resume.py), theta and coefficients restored;
        - `start_row`: the first iterate as coefficients over the pool (a mergekit start
          vertex: e_k; `init: auto`'s winner), formed from the pool at the start of `run()`,
          or, with `start_formed`, already held by theta (the start grid formed it while
          scoring it): then only the coefficients are set and no tensor is read. Under
          merge_fn ties / dare theta_0 is formed anyway, because the write phase's replay
          re-forms it by `set_combination` and must round it alike;
        - otherwise `settings.init`: the base (theta as given), or task arithmetic.

        `on_iteration(loop, records, stop)` is called after every finished iteration (the
        resume checkpoint saves there; the API reports progress there).
        """
        self.model, self.slots, self.pool = model, slots, pool
        self.objective, self.batches, self.task_names = objective, batches, task_names
        self.settings = settings
        self.score = SCORES[settings.lmo]
        self.constraint = make_constraint(settings)  # hull | box | simplex (fw/constraints.py)
        # vanilla | away | pairwise, through merge_fn (fw/directions.py)
        self.directions = make_directions(settings, self.constraint)
        self.step_rule = make_step_rule(
            settings.step, settings.step_size, settings.line_search_evals
        )
        self.quiet = quiet
        n = len(pool)
        self.coefficients = torch.zeros(len(slots), n, dtype=torch.float64)
        self.coefficients[:, 0] = 1.0
        self._norms: torch.Tensor | None = None  # vertex norms never change: cache them
        self.start_row = None if start_row is None else list(start_row)
        self.start_formed = start_formed
        self._previous_gamma: float | None = None  # the quadratic step's first trial
        # lmo_pass: the last s per tensor (the next pass's prediction); tensors whose d came
        # from the scoring read (folded), and of those, how many picked otherwise (corrected:
        # the changed vertices read again)
        self._last_rows: torch.Tensor | None = None
        self.folded = self.corrected = 0
        self.on_iteration = on_iteration
        self.resume_state = resume

    # -- where theta and its gradient live (fw/out_of_core.py keeps them on disk) ---------
    def theta_of(self, slot: Slot) -> torch.Tensor:
        """The iterate's tensor; changes to it count once `store_theta` is called."""
        return slot.param

    def store_theta(self, slot: Slot, x: torch.Tensor) -> None:
        """Make `x` the iterate's tensor (in memory it already is: updates are in place)."""

    def gradient_of(self, slot: Slot) -> torch.Tensor:
        """The gradient of the last `loss(grad=True)`, until the direction overwrites it."""
        return slot.param.grad

    def direction_buffer(self, slot: Slot) -> torch.Tensor:
        """Where d is formed: the gradient's own buffer, spent once the LMO has scored it
        (no third model copy; fw/directions.py)."""
        return slot.param.grad

    def store_direction(self, slot: Slot, d: torch.Tensor) -> None:
        """Keep d (in memory it already is: it was formed in the gradient's buffer)."""

    def zero_gradient(self) -> None:
        self.model.zero_grad(set_to_none=False)

    # -- helpers -------------------------------------------------------------------------
    def loss(self, grad: bool, desc: str, batches: list[Batch] | None = None) -> LossReport:
        return evaluate(
            self.model, self.objective, self.batches if batches is None else batches,
            self.task_names, grad=grad, desc=desc, quiet=self.quiet,
        )  # fmt: skip

    def _bar(self, items, desc: str):
        return progress(items, desc, quiet=self.quiet)

    # -- Algorithm 1 ---------------------------------------------------------------------
    @torch.no_grad()
    def init_task_arithmetic(self) -> None:
        """theta_0 = base + lambda * sum_k (theta_k - base), streamed tensor by tensor."""
        lam, n = self.settings.init_scale, len(self.pool) - 1
        problem = self.constraint.start_problem(lam, n)
        if problem:
            raise FWConfigError(problem)
        self.init_combination(ta_row(lam, n))

    @torch.no_grad()
    def init_combination(self, row: list[float], formed: bool = False) -> None:
        """theta_0 = sum_k row_k v_k (every tensor alike), streamed one vertex at a time;
        `formed`: theta already holds it, only the coefficients are set (no read)."""
        if not formed:
            for slot in self.slots:
                theta = self.theta_of(slot)
                set_combination(theta, self.pool, slot.name, row)
                self.store_theta(slot, theta)
        self.coefficients[:] = torch.tensor(row, dtype=torch.float64)

    @torch.no_grad()
    def score_pass(self) -> ScoreTable:
        """One streamed read of every vertex tensor: inner products with the gradient."""
        return self.lmo_pass(form_direction=False)[0]

    @torch.no_grad()
    def lmo_pass(self, form_direction: bool) -> tuple[ScoreTable, Vertex | None]:
        """The score table and, with `form_direction` (an LMO that decides each tensor
        alone), the LMO's vertex with d = s - theta for every tensor. d comes from the scoring
        read itself when the LMO picks what the last iteration picked for that tensor (a
        `Fold`: the pool is read once per iteration); otherwise it is formed right after the
        tensor's scores, while the vertex tensors just read are still in the page cache."""
        picked: list[Vertex] = []
        fill = TableFill(1, len(self.slots), len(self.pool), self._norms)
        for i, slot in enumerate(self._bar(self.slots, "LMO")):
            g, theta = self.gradient_of(slot), self.theta_of(slot)
            fold = self._fold(slot, i) if form_direction else None
            scores = score_tensor(self.pool, slot.name, g, theta, fill.need_norms, fold)
            del g, theta
            fill.add(i, [scores], slot.name, self.pool.labels)
            if form_direction:
                picked.append(self.constraint.lmo(fill.table(0, slice(i, i + 1))))
                if fold is not None and fold.done:
                    if fold.row != picked[-1].rows[0].tolist():  # the LMO changed its mind
                        self.constraint.correct_(self.pool, 0, slot.name, picked[-1], fold.row,
                                                 self.theta_of(slot), fold.out)  # fmt: skip
                        self.corrected += 1
                    self.store_direction(slot, fold.out)
                    self.folded += 1
                else:  # no prediction: s is read again (page-cache hot)
                    self.form_direction(slot, picked[-1], 0)
        self._norms = fill.norms
        table = fill.table()
        if not form_direction:
            return table, None
        rows = torch.cat([v.rows for v in picked])
        self._last_rows = rows
        return table, Vertex(rows, [m for v in picked for m in v.members])

    def _fold(self, slot: Slot, i: int) -> Fold | None:
        """The last iteration's s for this tensor as the prediction (None on the first, and
        where the strategy does not predict: under merge_fn ties / dare, whose write phase
        replays d bit for bit as `constraint.direction_` forms it: fw/replay.py)."""
        if self._last_rows is None or not self.directions.predicts:
            return None
        row = self._last_rows[i].tolist()
        return Fold(row, self.constraint.task_vector_form, self.direction_buffer(slot))

    @torch.no_grad()
    def direction_pass(self, vertex: Vertex) -> None:
        """d = s - theta per tensor, formed where the spent gradient was."""
        for i, slot in enumerate(self.slots):
            self.form_direction(slot, vertex, i)

    def form_direction(self, slot: Slot, vertex: Vertex, row: int) -> None:
        """d = s - theta for one tensor (`row` of the vertex), in the gradient's buffer."""
        d = self.direction_buffer(slot)
        self.constraint.direction_(self.pool, row, slot.name, vertex, self.theta_of(slot), d)
        self.store_direction(slot, d)

    @torch.no_grad()
    def move(self, delta: float) -> None:
        """theta += delta * d, in place (line search walks along d without copies)."""
        for slot in self.slots:
            theta = self.theta_of(slot).add_(self.direction_buffer(slot), alpha=delta)
            self.store_theta(slot, theta)

    def line_walk(self) -> LineWalk:
        """What the step rule evaluates the loss along d with (out of core: `StillWalk`)."""
        return LineWalk(self)

    def label(self, pick: int) -> str:
        return "zero" if pick == ZERO else self.pool.labels[pick]

    def member_labels(self, members: list[int]) -> list[str]:
        """Labels of the vertices that make up s in one tensor (none: s is the base)."""
        return [self.label(p) for p in members] or [self.pool.labels[0]]

    def wins(self, vertex: Vertex) -> dict[str, int]:
        """Vertex label -> tensors whose s it is part of."""
        return dict(Counter(x for m in vertex.members for x in self.member_labels(m)))

    def record(
        self, t: int, report: LossReport, table: ScoreTable, vertex: Vertex
    ) -> IterationRecord:
        """Loss, FW gap and wins of the LMO's vertex at the current merge."""
        gap = fw_gap(float(table.current_dots.sum()), float(vertex.dots(table).sum()))
        return IterationRecord(
            t=t, loss=report.total, task_losses=report.per_task, gap=gap, gamma=0.0,
            wins=self.wins(vertex),
            picks={
                slot.name: "+".join(self.member_labels(m))
                for slot, m in zip(self.slots, vertex.members)
            },
        )  # fmt: skip

    def iteration(self, t: int) -> tuple[IterationRecord, str | None]:
        """One pass of Algorithm 1; returns its record and why to stop (None: go on)."""
        # 1. gradient: g = grad f(theta_t), in the gradient's buffers
        report = self.gradient(t)
        # 2. LMO: s_t = argmin over the set of <g, s>, per tensor or for the whole model,
        #    from the score table of one read of the pool. Where each tensor is decided
        #    alone, that read also writes d = s_t - theta_t over g (`formed`)
        table, vertex = self.lmo_pass(form_direction=self.directions.in_lmo)
        formed = vertex is not None
        if vertex is None:
            vertex = self.constraint.lmo(table)
        # 3. FW gap <g, theta_t - s_t> (from the table); stop when it is small enough
        record = self.record(t, report, table, vertex)
        if record.gap <= self.settings.tolerance:
            return record, "tolerance"
        # 4. direction d_t over g's buffers: s - theta (vanilla), or theta - a / s - a
        #    (away / pairwise), masked by merge_fn; its slope <g, d> from the table
        direction = self.directions.form(self, t, table, vertex, formed)
        if direction.steps is not None:
            record.steps = ActiveSets.counts(direction.steps)
        # 5. step size gamma_t: the step rule walks theta_t + gamma d_t in place
        gamma, record.moves = self.step(t, report.total, direction.slope)
        if gamma == 0.0:  # no step lowers the loss: the next iteration would be identical
            return record, "no_descent"
        # 6. merge: theta_{t+1} = theta_t + gamma_t d_t (where the walk left theta); the
        #    coefficients alike, so the plan stays a combination of the vertices
        self.directions.update(self.coefficients, direction, gamma)
        record.gamma = self._previous_gamma = gamma
        return record, None

    def gradient(self, t: int) -> LossReport:
        """The calibration loss at theta_t; its gradient is left in the gradient's buffers."""
        self.zero_gradient()
        report = self.loss(grad=True, desc=f"gradient t={t}")
        check_loss(report, t)
        return report

    def step(self, t: int, f0: float, slope: float | None) -> tuple[float, list[float]]:
        """(gamma_t, theta's moves): the step rule's gamma along d from f(theta_t) = f0 and
        the slope; theta is left at theta_t + gamma_t d. The moves (every in-place change
        of theta, probes included) are what the write phase replays under ties / dare."""
        walk = self.line_walk()
        gamma = self.step_rule.choose(t, f0, walk, slope, self._previous_gamma)
        walk.settle(gamma)
        return gamma, walk.moves

    def task_gradient(self, index: int, desc: str) -> LossReport:
        """The gradient of task `index`'s own weighted loss (`gradient_of` gives it)."""
        self.zero_gradient()
        return self.loss(True, desc, [b for b in self.batches if b.task == index])

    def task_preferences(self) -> dict[str, dict[str, int]]:
        """Which vertex each task's own gradient prefers at the final merge (tensors won).
        Each task's gradient goes to a scratch store on disk (memory stays flat), then one
        read of the pool scores them all."""
        stores = []
        with scratch_folder(self.preference_scratch()) as folder:
            for index, name in enumerate(self.task_names):
                self.task_gradient(index, desc=f"task {name}")
                store = TensorStore(folder / f"task{index}", self.device_of_gradients())
                for slot in self.slots:
                    store.put(slot.name, self.gradient_of(slot))
                stores.append(store)
            tables = self.score_many(stores)
        return {
            name: self.wins(self.constraint.lmo(table, origin=False))
            for name, table in zip(self.task_names, tables)
        }

    def preference_scratch(self) -> Path | None:
        """Where task gradients wait for the one scoring read (None: a temporary folder)."""
        return None

    def device_of_gradients(self) -> torch.device:
        return self.slots[0].param.device if self.slots else torch.device("cpu")

    @torch.no_grad()
    def score_many(self, stores: list) -> list[ScoreTable]:
        """One ScoreTable per stored gradient, from one streamed read of every vertex."""
        fill = TableFill(len(stores), len(self.slots), len(self.pool), self._norms)
        for i, slot in enumerate(self._bar(self.slots, "task preferences")):
            theta = self.theta_of(slot)  # on the slot's own device (a placed model: its GPU)
            grads = [store.get(slot.name).to(theta.device) for store in stores]
            many = score_tensor_many(self.pool, slot.name, grads, theta, fill.need_norms)
            del grads, theta
            fill.add(i, many, slot.name, self.pool.labels)
        self._norms = fill.norms
        return [fill.table(j) for j in range(len(stores))]

    def run(self) -> FWPlan:
        started = time.perf_counter()
        s = self.settings
        torch.manual_seed(s.seed)
        self.model.eval()  # deterministic gradients: no dropout
        for slot in self.slots:
            slot.param.requires_grad_(True)
        history: list[IterationRecord] = []
        stopped, first, stop = "budget", 0, None
        if self.resume_state is not None:
            loop_state.restore(self, self.resume_state)
            history, stop = list(self.resume_state.history), self.resume_state.stopped
            first, stopped = self.resume_state.next_t, stop or stopped
            self._previous_gamma = history[-1].gamma if history and history[-1].gamma else None
        elif self.start_row is not None:
            formed = self.start_formed and s.merge_fn == "linear"  # see __init__
            self.init_combination(self.start_row, formed)
        elif s.init == "task_arithmetic":
            self.init_task_arithmetic()
        self.directions.begin(self.coefficients)
        for t in range(first, s.iterations if stop is None else first):
            record, stop = self.iteration(t)
            history.append(record)
            self._log(record)
            if self.on_iteration is not None:
                self.on_iteration(self, history, stop)
            if stop:
                stopped = stop
                break
        if self.folded:
            LOG.info(
                "LMO: d came from the scoring read in %d tensor steps; %d of them picked "
                "otherwise and read the changed vertices again", self.folded, self.corrected,
            )  # fmt: skip
        preferences = self.task_preferences() if len(self.task_names) > 1 else {}
        self.model.zero_grad(set_to_none=True)
        final = self.loss(grad=False, desc="final loss")
        check_loss(final, len(history), "final")
        if not self.quiet:
            LOG.info("final calibration loss %.5f %s", final.total, self.loss_unit)
        plan = self._plan(history, final, stopped, time.perf_counter() - started)
        start_row = list(self.start_row) if self.start_row is not None else None
        return plan.model_copy(update={"task_preferences": preferences, "start_row": start_row})

    @property
    def loss_unit(self) -> str:
        """plan.loss_unit: what the logged losses are (nats/sample, nats/token, ...)."""
        return loss_unit(self.settings, getattr(self.objective, "name", None))

    def _log(self, r: IterationRecord) -> None:
        wins = ", ".join(f"{k} {v}" for k, v in sorted(r.wins.items(), key=lambda kv: -kv[1]))
        message = (
            f"FW t={r.t}: loss {r.loss:.5f} {self.loss_unit}".rstrip()
            + f"  gap {r.gap:.4g}  gamma {r.gamma:.4g}  wins: {wins}"
        )
        progress_message(message, LOG.info if self.quiet else None)

    def _plan(self, history, final: LossReport, stopped: str, seconds: float) -> FWPlan:
        aliases = {alias: slot.name for slot in self.slots for alias in slot.aliases}
        return FWPlan(
            settings=self.settings.public_dict(),
            base_model=vertex_ids(self.pool)[0],
            models=vertex_ids(self.pool),
            labels=self.pool.labels,
            tensors=[slot.name for slot in self.slots],
            aliases=aliases,
            coefficients={
                slot.name: self.coefficients[i].tolist() for i, slot in enumerate(self.slots)
            },
            iterations=history,
            final_loss=final.total,
            final_task_losses=final.per_task,
            stopped=stopped,
            seconds=seconds,
        )
