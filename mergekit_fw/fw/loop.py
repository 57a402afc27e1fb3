"""The hard Frank-Wolfe loop (Algorithm 1 of arXiv 2503.12649), streamed per tensor.

Memory: the model theta, one gradient-sized buffer, and one streamed vertex tensor. The
gradient buffer is reused for the direction d = s - theta once the LMO has scored it, and
line search moves theta in place along d, so peak memory does not grow with the number
of candidates.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from mergekit_fw.fw.constraints import Vertex, make_constraint
from mergekit_fw.fw.objectives import Batch, LossReport, evaluate
from mergekit_fw.fw.oracles import ORACLES, SCORES, ZERO, ScoreTable
from mergekit_fw.fw.scores import VertexSource, score_tensor, vertex_ids
from mergekit_fw.fw.steps import fw_gap, make_step_rule
from mergekit_fw.plan import FWPlan, IterationRecord
from mergekit_fw.settings import FWConfigError, FWSettings

LOG = logging.getLogger("mergekit_fw")


@dataclass
class Slot:
    """One mergeable tensor: a model parameter and the checkpoint names it is stored under."""

    name: str
    param: torch.nn.Parameter
    aliases: list[str] = field(default_factory=list)


def build_slots(model: torch.nn.Module, stored: set[str]) -> list[Slot]:
    """Map parameters to checkpoint names; tied parameters become one slot with aliases."""
    groups: dict[int, tuple[torch.nn.Parameter, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), (param, []))[1].append(name)
    slots = []
    for param, names in groups.values():
        present = [n for n in names if n in stored]
        if not present:
            raise ValueError(
                f"Model parameter {names[0]} is not stored in the base checkpoint under that "
                "name; mergekit-fw needs checkpoint names that match the transformers model."
            )
        slots.append(Slot(present[0], param, [n for n in names if n != present[0]]))
    return slots


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
    ):
        self.model, self.slots, self.pool = model, slots, pool
        self.objective, self.batches, self.task_names = objective, batches, task_names
        self.settings = settings
        self.score = SCORES[settings.lmo]
        self.oracle = ORACLES[settings.granularity]
        self.constraint = make_constraint(settings)  # hull | box | simplex (fw/constraints.py)
        self.step_rule = make_step_rule(
            settings.step, settings.step_size, settings.line_search_evals
        )
        self.quiet = quiet
        n = len(pool)
        self.coefficients = torch.zeros(len(slots), n, dtype=torch.float64)
        self.coefficients[:, 0] = 1.0
        self._norms: torch.Tensor | None = None  # vertex norms never change: cache them

    # -- helpers -------------------------------------------------------------------------
    def loss(self, grad: bool, desc: str) -> LossReport:
        return evaluate(
            self.model, self.objective, self.batches, self.task_names,
            grad=grad, desc=desc, quiet=self.quiet,
        )  # fmt: skip

    def _bar(self, items, desc: str):
        return tqdm(items, desc=desc, leave=False, disable=self.quiet)

    # -- Algorithm 1 ---------------------------------------------------------------------
    @torch.no_grad()
    def init_task_arithmetic(self) -> None:
        """theta_0 = base + lambda * sum_k (theta_k - base), streamed tensor by tensor."""
        lam, n = self.settings.init_scale, len(self.pool) - 1
        problem = self.constraint.start_problem(lam, n)
        if problem:
            raise FWConfigError(problem)
        for slot in self._bar(self.slots, "task-arithmetic start"):
            slot.param.mul_(1.0 - n * lam)
            for k in range(1, len(self.pool)):
                slot.param.add_(self.pool.tensor(k, slot.name), alpha=lam)
        self.coefficients[:, 0] = 1.0 - n * lam
        self.coefficients[:, 1:] = lam

    @torch.no_grad()
    def score_pass(self) -> ScoreTable:
        """One streamed read of every vertex tensor: inner products with the gradient."""
        n, rows = len(self.pool), len(self.slots)
        dots = torch.zeros(rows, n, dtype=torch.float64)
        need_norms = self._norms is None
        norms = torch.zeros(rows, n, dtype=torch.float64) if need_norms else self._norms
        grad_norms = torch.zeros(rows, dtype=torch.float64)
        current = torch.zeros(rows, dtype=torch.float64)
        for i, slot in enumerate(self._bar(self.slots, "LMO")):
            scores = score_tensor(self.pool, slot.name, slot.param.grad, slot.param, need_norms)
            dots[i] = torch.tensor([float(d) for d in scores.dots], dtype=torch.float64)
            if need_norms:
                norms[i] = torch.tensor([float(x) for x in scores.norms], dtype=torch.float64)
            grad_norms[i], current[i] = scores.grad_norm, scores.current
        self._norms = norms
        return ScoreTable(dots, norms, grad_norms, current)

    @torch.no_grad()
    def direction_pass(self, vertex: Vertex) -> None:
        """Overwrite each gradient buffer with d = s - theta (the gradient is spent)."""
        for i, slot in enumerate(self.slots):
            self.constraint.direction_(self.pool, i, slot.name, vertex, slot.param, slot.param.grad)

    @torch.no_grad()
    def move(self, delta: float) -> None:
        """theta += delta * d, in place (line search walks along d without copies)."""
        if delta != 0.0:
            for slot in self.slots:
                slot.param.add_(slot.param.grad, alpha=delta)

    def line_loss(self, position: list[float]):
        def loss_at(gamma: float) -> float:
            self.move(gamma - position[0])
            position[0] = gamma
            return self.loss(grad=False, desc=f"line search g={gamma:.3f}").total

        return loss_at

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
        """One pass of Algorithm 1; returns its record and why to stop, if the run should."""
        # 1. gradient at the current merge
        self.model.zero_grad(set_to_none=False)
        report = self.loss(grad=True, desc=f"gradient t={t}")
        # 2. LMO: which vertex best follows -g (per tensor or for the whole model)
        table = self.score_pass()
        vertex = self.constraint.lmo(table)
        # 3. FW gap, and stop when it is small enough
        record = self.record(t, report, table, vertex)
        if record.gap <= self.settings.tolerance:
            return record, "tolerance"
        # 4. step size, then 5. merge: theta <- theta + gamma (s - theta)
        self.direction_pass(vertex)
        position = [0.0]
        gamma = self.step_rule.choose(t, report.total, self.line_loss(position))
        self.move(gamma - position[0])
        if gamma == 0.0:  # no step lowers the loss: the next iteration would be identical
            return record, "no_descent"
        self.coefficients.mul_(1.0 - gamma).add_(vertex.rows, alpha=gamma)
        record.gamma = gamma
        return record, None

    def task_gradient(self, index: int, desc: str) -> LossReport:
        """The gradient of task `index`'s own weighted loss, left in the parameters' .grad."""
        self.model.zero_grad(set_to_none=False)
        batches = [b for b in self.batches if b.task == index]
        return evaluate(
            self.model, self.objective, batches, self.task_names,
            grad=True, desc=desc, quiet=self.quiet,
        )  # fmt: skip

    def task_preferences(self) -> dict[str, dict[str, int]]:
        """Which vertex each task's own gradient prefers at the final merge (tensors won)."""
        preferences = {}
        for index, name in enumerate(self.task_names):
            self.task_gradient(index, desc=f"task {name}")
            preferences[name] = self.wins(self.constraint.lmo(self.score_pass(), origin=False))
        return preferences

    def run(self) -> FWPlan:
        started = time.perf_counter()
        s = self.settings
        torch.manual_seed(s.seed)
        self.model.eval()  # deterministic gradients: no dropout
        for slot in self.slots:
            slot.param.requires_grad_(True)
        if s.init == "task_arithmetic":
            self.init_task_arithmetic()
        history: list[IterationRecord] = []
        stopped = "budget"
        for t in range(s.iterations):
            record, stop = self.iteration(t)
            history.append(record)
            self._log(record)
            if stop:
                stopped = stop
                break
        preferences = self.task_preferences() if len(self.task_names) > 1 else {}
        self.model.zero_grad(set_to_none=True)
        final = self.loss(grad=False, desc="final loss")
        if not self.quiet:
            LOG.info("final calibration loss %.5f", final.total)
        plan = self._plan(history, final, stopped, time.perf_counter() - started)
        plan.task_preferences = preferences
        return plan

    def _log(self, r: IterationRecord) -> None:
        wins = ", ".join(f"{k} {v}" for k, v in sorted(r.wins.items(), key=lambda kv: -kv[1]))
        message = (
            f"FW t={r.t}: loss {r.loss:.5f}  gap {r.gap:.4g}  gamma {r.gamma:.4g}  wins: {wins}"
        )
        if self.quiet:
            LOG.info(message)
        else:
            tqdm.write(message, file=sys.stderr)

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
