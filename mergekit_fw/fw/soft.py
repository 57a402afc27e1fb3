"""FW-soft: select k vertices, then fit their coefficients on the calibration loss.

Each iteration (paper section 3.3; the authors' V-soft in fw_reference.md section 5):
  1. selection: the k best vertices of one LMO (`select: topk`), or one distinct argmin per
     calibration task from that task's own gradient (`select: per_task`, the authors' code);
  2. fit: theta(w) = theta_t + sum_j w_j (s_j - theta_t), with w per tensor or per model,
     by projected gradient descent onto the simplex {w >= 0, sum w <= 1} (the paper,
     `coefficients: simplex`) or unconstrained Adam (the authors' code, `coefficients: free`);
  3. merge: theta_{t+1} = theta(w*), again a per-tensor linear combination of the vertices.
Memory: the model, the k selected directions s_j - theta_t, and the coefficients.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.func import functional_call

from mergekit_fw.fw.constraints import Hull, Vertex
from mergekit_fw.fw.finite import check_loss
from mergekit_fw.fw.loop import FrankWolfe
from mergekit_fw.fw.objectives import LossReport
from mergekit_fw.fw.oracles import ScoreTable
from mergekit_fw.fw.progress import progress
from mergekit_fw.fw.projections import project_simplex
from mergekit_fw.plan import IterationRecord


def topk_vertices(scores: torch.Tensor, k: int, per_tensor: bool) -> torch.Tensor:
    """[L, k] indices of the k lowest scores (stable: ties keep vertex order)."""
    k = min(k, scores.shape[1])
    if per_tensor:
        return torch.argsort(scores, dim=1, stable=True)[:, :k]
    order = torch.argsort(scores.sum(dim=0), stable=True)[:k]
    return order.expand(scores.shape[0], k).clone()


def argmin_excluding(
    scores: torch.Tensor, chosen: torch.Tensor | None, per_tensor: bool
) -> torch.Tensor:
    """One vertex per tensor (or for the model), never one already chosen there."""
    masked = scores.clone()
    if not per_tensor:
        masked = masked.sum(dim=0, keepdim=True).expand_as(scores).clone()
    if chosen is not None and chosen.numel():
        masked.scatter_(1, chosen, float("inf"))
    return torch.argmin(masked, dim=1)


def fit_coefficients(
    loss_of,
    n_rows: int,
    k: int,
    simplex: bool,
    steps: int,
    lr: float,
    init: float,
    quiet: bool = True,
    project=None,
) -> tuple[torch.Tensor, float]:
    """Minimise loss_of(w) over w [n_rows, k] (w_j: weight of vertex j, 1 - sum w on theta_t).

    `loss_of(w)` returns the loss and leaves its gradient in w.grad. Simplex: projected
    gradient descent from w = 0 (theta_t itself) with an adaptive step (grow after a
    decrease, halve and retry after an increase), so the fit never ends above the current
    loss. The step is scale-free: the first trial moves the largest weight by `lr` (1.0 =
    a full step to a vertex), whatever the loss's scale. A raw-gradient step of 0.05 moved
    no weight above 1e-3 on the MiniLM tier, where the loss is flat near log 2 at the base
    (docs/benchmarks_minilm.md). Free: the authors' unconstrained Adam from `init` (0.3 /
    0.01 in their code), returning the best point seen. Each step costs one pass over the
    calibration set. `project` replaces the simplex projection (fw/soft_task_vectors.py:
    the box or capped simplex of a task-vector constraint).
    """
    start = 0.0 if simplex else init
    w = torch.full((n_rows, k), start, dtype=torch.float64, requires_grad=True)
    optimiser = None if simplex else torch.optim.Adam([w], lr=lr)

    def evaluate_at(point: torch.Tensor) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            w.copy_(point)
        w.grad = None
        value = loss_of(w)
        return value, w.grad.detach().clone()

    best_w = w.detach().clone()
    best_loss, grad = evaluate_at(best_w)
    step = lr / max(float(grad.abs().max()), 1e-30) if simplex else lr
    for _ in progress(range(steps), "fit coefficients", quiet=quiet):
        if simplex:
            moved = best_w - step * grad
            if project is None:  # the paper's simplex, theta_t's weight lifted in
                lifted = torch.cat([1.0 - best_w.sum(dim=1, keepdim=True), moved], dim=1)
                trial = project_simplex(lifted)[:, 1:]
            else:
                trial = project(moved)
            value, trial_grad = evaluate_at(trial)
            if value <= best_loss:
                best_w, best_loss, grad, step = trial, value, trial_grad, step * 1.5
            else:
                step *= 0.5
        else:
            w.grad = grad.clone()
            optimiser.step()
            value, grad = evaluate_at(w.detach().clone())
            if value < best_loss:
                best_w, best_loss = w.detach().clone(), value
    return best_w, best_loss


class SoftFrankWolfe(FrankWolfe):
    """FW-soft: same pre-pass plumbing and plan format as the hard variant."""

    def selection(self, t: int) -> tuple[LossReport, ScoreTable, torch.Tensor, dict]:
        s = self.settings
        per_tensor = s.granularity == "tensor"
        if s.select == "topk":
            report = self.gradient(t)
            table = self.score_pass()
            return report, table, topk_vertices(self.score(table), s.topk, per_tensor), {}
        # per_task: each task's own gradient picks a vertex no earlier task picked
        chosen: list[torch.Tensor] = []
        tables: list[ScoreTable] = []
        task_wins = {}
        report = LossReport(total=0.0, per_task={})
        for index, name in enumerate(self.task_names):
            part = self.task_gradient(index, desc=f"gradient t={t} task {name}")
            check_loss(part, t)
            report.total += part.total
            report.per_task[name] = part.per_task[name]
            if len(chosen) >= self.selectable():
                continue  # more tasks than vertices: the extra tasks only add to the loss
            table = self.score_pass()
            previous = torch.stack(chosen, dim=1) if chosen else None
            pick = argmin_excluding(self.score(table), previous, per_tensor)
            chosen.append(pick)
            tables.append(table)
            task_wins[name] = dict(Counter(self.pool.labels[int(p)] for p in pick))
        # <g, v> is linear in g, and the task gradients sum to the total gradient
        total = ScoreTable(
            dots=sum(tb.dots for tb in tables),
            norms=tables[0].norms,
            grad_norms=torch.zeros_like(tables[0].grad_norms),
            current_dots=sum(tb.current_dots for tb in tables),
        )
        return report, total, torch.stack(chosen, dim=1), task_wins

    def selectable(self) -> int:
        """How many distinct vertices a tensor can select (per_task)."""
        return len(self.pool)

    def exact_vertex(self, table: ScoreTable) -> Vertex:
        """The vertex of the exact (inner-product, no origin) hull LMO: its FW gap."""
        return Hull("inner", self.settings.granularity, False).lmo(table)

    def iteration(self, t: int) -> tuple[IterationRecord, str | None]:
        s = self.settings
        report, table, selected, task_wins = self.selection(t)
        # the FW gap is that of the exact (inner-product) LMO at theta_t
        record = self.record(t, report, table, self.exact_vertex(table))
        record.task_wins = task_wins
        record.picks = {
            slot.name: "+".join(self.pool.labels[int(v)] for v in row)
            for slot, row in zip(self.slots, selected)
        }
        record.wins = dict(Counter(self.pool.labels[int(v)] for row in selected for v in row))
        if record.gap <= s.tolerance:
            return record, "tolerance"
        weights = self.fit(t, selected)
        record.gamma = float(weights.sum(dim=1).mean())
        record.soft_weights = {
            label: float(weights[selected == k].mean())
            for k, label in enumerate(self.pool.labels)
            if bool((selected == k).any())
        }
        return record, None

    def fit(self, t: int, selected: torch.Tensor) -> torch.Tensor:
        """Fit w, then move theta and the coefficients to theta(w). Returns w [L, k]."""
        s = self.settings
        k = selected.shape[1]
        with torch.no_grad():  # directions s_j - theta_t: the k selected vertices in memory
            directions = [
                torch.stack([self.pool.tensor(int(v), slot.name) - slot.param for v in row])
                for slot, row in zip(self.slots, selected)
            ]
        per_tensor = s.fit_granularity == "tensor"
        rows = len(self.slots) if per_tensor else 1
        loss_of = self.fit_loss(directions, per_tensor)

        weights, _ = fit_coefficients(
            loss_of, rows, k, simplex=s.coefficients == "simplex", steps=s.inner_steps,
            lr=s.inner_lr or (1.0 if s.coefficients == "simplex" else 0.05),
            init=0.3 if t == 0 else 0.01, quiet=self.quiet,
        )  # fmt: skip
        weights = weights.expand(len(self.slots), k) if not per_tensor else weights
        add_weighted_directions(self.slots, weights, directions)
        with torch.no_grad():
            vertex = torch.zeros_like(self.coefficients)
            vertex.scatter_add_(1, selected, weights.to(vertex.dtype))
            self.coefficients.mul_(1.0 - weights.sum(dim=1, keepdim=True)).add_(vertex)
        directions.clear()  # free the k vertex copies now
        return weights

    def fit_loss(self, directions: list[torch.Tensor], per_tensor: bool):
        """w -> the calibration loss at theta(w) = theta_t + sum_j w_j d_j (d_j: the k
        stacked `directions` of each tensor), its gradient left in w.grad."""
        theta = {slot.name: slot.param.detach() for slot in self.slots}
        call = _ObjectiveCall(self.model, self.objective)

        def merged(w: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {}
            for i, slot in enumerate(self.slots):
                wi = w[i if per_tensor else 0].to(slot.param.dtype)
                shape = (len(wi),) + (1,) * slot.param.dim()
                out[slot.name] = theta[slot.name] + (wi.view(shape) * directions[i]).sum(dim=0)
            return out

        def loss_of(w: torch.Tensor) -> float:
            params = {f"model.{name}": value for name, value in merged(w).items()}
            total = 0.0
            for j, batch in enumerate(self.batches):
                value = functional_call(call, params, (batch,), tie_weights=True, strict=False)
                value = value * batch.scale
                value.backward(retain_graph=j < len(self.batches) - 1)
                total += value.item()
            return total

        return loss_of


class _ObjectiveCall(torch.nn.Module):
    """The objective as a module around the model, so torch.func substitutes theta(w) for
    the model's parameters while it runs: any objective, a user's loss that reaches into
    submodules or calls the model positionally included, sees the real model object."""

    def __init__(self, model: torch.nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch):
        return self.objective.batch_loss_sum(self.model, batch)


@torch.no_grad()
def add_weighted_directions(slots, weights: torch.Tensor, directions) -> None:
    """theta_l += sum_j w_lj d_lj for every tensor l: the fitted soft step (hull and
    task-vector sets alike)."""
    for i, slot in enumerate(slots):
        w = weights[i].to(slot.param.dtype).view((weights.shape[1],) + (1,) * slot.param.dim())
        slot.param.add_((w * directions[i]).sum(dim=0))
