"""Constraint sets of the FW pre-pass, over the task vectors tau_i = theta_i - base.

Per block (a tensor, or the whole model with `granularity: model`),
theta = base + sum_i lambda_i tau_i, with lambda in

- `hull`: lambda >= 0, sum lambda <= 1: conv{base, candidates}, the paper's set (its LMO
  picks one vertex; `zero_vertex` adds the origin);
- `box`: 0 <= lambda_i <= kappa: the LMO sets lambda_i = kappa for every tau_i with
  <g, tau_i> < 0, so one step can add several task vectors at once, or take them back out;
- `simplex`: lambda >= 0, sum lambda <= kappa: kappa on the most negative <g, tau_i>.

Each set is a small class: `lmo(table)` returns the vertex s as coefficient rows over
[base, candidates] (a `Vertex`), and `direction_` forms d = s - theta for one tensor,
streamed (base and one selected vertex in memory at a time). <g, tau_i> comes from the score
table the pool already computes (<g, theta_i> - <g, base>), so no set costs an extra read.
Every vertex row sums to 1 (the origin's to 0), so theta, the plan and `fw_linear.yaml`
stay per-tensor linear combinations; the base coefficient 1 - kappa |S| may be negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergekit_fw.fw.oracles import ORACLES, SCORES, ZERO, ScoreTable
from mergekit_fw.fw.projections import project_box, project_capped_simplex

ACTIVE = 1e-12  # a corner weight above this is in an active set (fw/away.py)


@dataclass
class Vertex:
    """The LMO's answer: s as per-tensor coefficient rows, and who makes it up."""

    rows: torch.Tensor  # [L, n] float64, over [base, candidates]
    members: list[list[int]]  # per tensor: vertex indices in s ([ZERO]: the origin; []: base)

    def dots(self, table: ScoreTable) -> torch.Tensor:
        """<g_l, s_l> per tensor, from the score table."""
        return (self.rows * table.dots).sum(dim=1)


def task_vector_scores(table: ScoreTable) -> torch.Tensor:
    """[L, n-1] <g_l, tau_il> = <g_l, theta_il> - <g_l, base_l>, no extra read."""
    return table.dots[:, 1:] - table.dots[:, :1]


def add_task_vector_(pool, k: int, name: str, out: torch.Tensor, alpha: float, base) -> None:
    """out += alpha * tau_k for one tensor: the pool's own (adapters: alpha s B A from the
    factors) if it has one, else alpha * (v_k - base) with one vertex tensor in memory."""
    own = getattr(pool, "add_task_vector_", None)
    if own is not None:
        own(k, name, out, alpha, base)
        return
    x = pool.tensor(k, name)
    out.add_(x - base, alpha=alpha)
    del x


class Hull:
    """conv{base, candidates} (the paper): one vertex per block, exactly as before."""

    name = "hull"
    task_vector_form = False  # d = v_pick - theta (fw/scores.py Fold)

    def __init__(self, lmo: str, granularity: str, zero_vertex: bool):
        self.score = SCORES[lmo]
        self.oracle = ORACLES[granularity]
        self.zero_vertex = zero_vertex

    def lmo(self, table: ScoreTable, origin: bool = True) -> Vertex:
        picks = self.oracle(self.score(table), self.zero_vertex and origin)
        rows = torch.zeros_like(table.dots)
        for i, pick in enumerate(picks):
            if pick != ZERO:
                rows[i, pick] = 1.0
        return Vertex(rows, [[p] for p in picks])

    def start_problem(self, init_scale: float, n: int | None) -> str | None:
        return None  # the authors' task-arithmetic start may lie outside the hull

    def corner_row(self, members, n: int) -> torch.Tensor:
        """The row over n vertices of the vertex `members` ([k]; [ZERO]: the origin)."""
        row = torch.zeros(n, dtype=torch.float64)
        for k in members:
            if k != ZERO:
                row[k] = 1.0
        return row

    def vertex_of(self, members: list[int], n: int) -> Vertex:
        """One tensor's vertex from its members (a recorded pick, fw/replay.py)."""
        return Vertex(self.corner_row(members, n)[None], [list(members)])

    def corners(self, row: list[float]) -> dict[frozenset, float]:
        """A convex decomposition of a coefficient row into corners (fw/away.py's active
        set): on the hull, the vertices themselves with their coefficients."""
        return {frozenset([k]): c for k, c in enumerate(row) if c > ACTIVE}

    def contains(self, lam: torch.Tensor) -> bool:
        """Task-vector weights [L, n-1] inside the hull: lambda >= 0, sum lambda <= 1."""
        return bool((lam >= 0).all() and (lam.sum(dim=-1) <= 1 + 1e-9).all())

    def correct_(self, pool, i: int, name: str, vertex: Vertex, predicted, theta, out) -> None:
        """d for a pick other than the predicted one: formed again (one vertex read)."""
        self.direction_(pool, i, name, vertex, theta, out)

    def direction_(self, pool, i: int, name: str, vertex: Vertex, theta, out) -> None:
        (pick,) = vertex.members[i]
        if pick == ZERO:
            out.copy_(theta).neg_()
        else:
            out.copy_(pool.tensor(pick, name)).sub_(theta)


class _TaskVectorSet:
    """Shared by box and simplex: s = base + sum_i lambda_i tau_i."""

    name = ""
    task_vector_form = True  # d = (base - theta) + sum lambda_i tau_i (fw/scores.py Fold)

    def __init__(self, scale: float, granularity: str):
        self.scale = scale
        self.per_tensor = granularity == "tensor"

    def weights(self, scores: torch.Tensor) -> torch.Tensor:
        """[L, n-1] lambda of the vertex from [L, n-1] <g, tau> (rows of one block)."""
        raise NotImplementedError

    def start_problem(self, init_scale: float, n: int | None) -> str | None:
        """Why the task-arithmetic start lambda_i = init_scale is outside the set, if it is:
        the one check, for the options (`n` None: any number of candidates, so one) and for
        the loop (the pool's n)."""
        if self.contains(torch.full((1, n or 1), float(init_scale), dtype=torch.float64)):
            return None
        each = f" for each of the {n} candidates" if n else ""
        bound = f"{n} * init_scale" if n and self.name == "simplex" else "init_scale"
        return (
            f"init: task_arithmetic starts at lambda_i = init_scale = {init_scale}{each}, "
            f"outside constraint: {self.name} with scale {self.scale}; use 0 <= {bound} <= "
            "scale (lower init_scale or raise scale)"
        )

    def corner_row(self, members, n: int) -> torch.Tensor:
        """base + kappa sum_{i in members} tau_i as a row over n vertices (the base's
        coefficient 1 - kappa |members| may be negative)."""
        row = torch.zeros(n, dtype=torch.float64)
        for k in members:
            row[k] = self.scale
        row[0] = 1.0 - self.scale * len(members)
        return row

    def vertex_of(self, members: list[int], n: int) -> Vertex:
        """One tensor's vertex from its members (a recorded pick, fw/replay.py); the base
        is no task vector."""
        members = sorted(k for k in members if k != 0)
        return Vertex(self.corner_row(members, n)[None], [members])

    def corners(self, row: list[float]) -> dict[frozenset, float]:
        """A convex decomposition of a coefficient row into corners (fw/away.py's active
        set): a corner is a set S of task vectors at kappa, the base the empty one."""
        lam = [v / self.scale for v in row[1:]]  # fraction of kappa per task vector
        out, rest = self.corner_weights(lam)
        if rest > ACTIVE:
            out[frozenset()] = rest
        return out

    def corner_weights(self, lam: list[float]) -> tuple[dict[frozenset, float], float]:
        """(the corners with task vectors and their weights, the base's weight)."""
        raise NotImplementedError

    def contains(self, lam: torch.Tensor) -> bool:
        raise NotImplementedError

    def lmo(self, table: ScoreTable, origin: bool = True) -> Vertex:
        scores = task_vector_scores(table)
        if not self.per_tensor:  # one lambda for the whole model, by the summed scores
            scores = scores.sum(dim=0, keepdim=True).expand_as(scores)
        lam = self.weights(scores)
        rows = torch.cat([1.0 - lam.sum(dim=1, keepdim=True), lam], dim=1)
        members = [[k + 1 for k in torch.nonzero(row).flatten().tolist()] for row in lam]
        return Vertex(rows, members)

    def direction_(self, pool, i: int, name: str, vertex: Vertex, theta, out) -> None:
        """d = (base - theta) + sum_{i in S} lambda_i tau_i: the base, then one selected
        vertex at a time (the task-vector form keeps float32 cancellation small)."""
        base = pool.tensor(0, name)
        out.copy_(base).sub_(theta)
        for k in vertex.members[i]:
            add_task_vector_(pool, k, name, out, float(vertex.rows[i, k]), base)
        del base

    def correct_(self, pool, i: int, name: str, vertex: Vertex, predicted, theta, out) -> None:
        """d of the predicted row -> d of the LMO's row: + sum_k (lambda_k - predicted_k) tau_k,
        reading the base and only the vertices whose weight changed (both rows sum to 1)."""
        delta = [float(a) - float(b) for a, b in zip(vertex.rows[i].tolist(), predicted)]
        changed = [k for k in range(1, len(delta)) if delta[k] != 0.0]
        is_adapter = getattr(pool, "is_adapter", lambda k: False)
        base = pool.tensor(0, name) if any(not is_adapter(k) for k in changed) else None
        for k in changed:
            add_task_vector_(pool, k, name, out, delta[k], base)
        del base


class Box(_TaskVectorSet):
    """0 <= lambda_i <= kappa: kappa on every task vector the gradient descends along."""

    name = "box"

    def weights(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.where(scores < 0, self.scale, 0.0).to(scores.dtype)

    def contains(self, lam: torch.Tensor) -> bool:
        return bool(((lam >= 0) & (lam <= self.scale * (1 + 1e-9))).all())

    def fit_projection(self, coefficients: torch.Tensor, selected: torch.Tensor, per_tensor: bool):
        """FW-soft's fit (fw/soft_task_vectors.py): the projection of the change Delta
        [rows, k] of the selected lambdas onto the box, 0 <= lambda + Delta <= kappa."""
        lam = coefficients.gather(1, selected)  # [L, k] current lambda_j
        low, high = -lam, self.scale - lam
        if not per_tensor:
            low, high = low.max(dim=0, keepdim=True)[0], high.min(dim=0, keepdim=True)[0]
        return lambda delta: project_box(delta, low, high)

    def corner_weights(self, lam: list[float]) -> tuple[dict[frozenset, float], float]:
        """Corners {top j} with weights lam_(j) - lam_(j+1): a staircase."""
        order = sorted(range(len(lam)), key=lambda k: -lam[k])
        out, previous = {}, 0.0
        for j in range(len(order), 0, -1):
            value = lam[order[j - 1]]
            if value - previous > ACTIVE:
                out[frozenset(k + 1 for k in order[:j])] = value - previous
            previous = max(previous, value)
        return out, 1.0 - (lam[order[0]] if order else 0.0)


class Simplex(_TaskVectorSet):
    """lambda >= 0, sum lambda <= kappa: kappa on the most negative <g, tau_i> if < 0."""

    name = "simplex"

    def weights(self, scores: torch.Tensor) -> torch.Tensor:
        lam = torch.zeros_like(scores)
        if scores.shape[1] == 0:
            return lam
        best = torch.argmin(scores, dim=1)  # first of tied minima, like the hull's oracle
        low = scores.gather(1, best[:, None]).squeeze(1) < 0
        lam[torch.arange(len(best))[low], best[low]] = self.scale
        return lam

    def contains(self, lam: torch.Tensor) -> bool:
        return bool((lam >= 0).all() and (lam.sum(dim=-1) <= self.scale * (1 + 1e-9)).all())

    def fit_projection(self, coefficients: torch.Tensor, selected: torch.Tensor, per_tensor: bool):
        """FW-soft's fit (fw/soft_task_vectors.py): the projection of the change Delta
        [rows, k] of the selected lambdas onto the simplex (the others stay as they are)."""
        low = -coefficients.gather(1, selected)  # [L, k] minus the current lambda_j
        budget = self.scale - coefficients[:, 1:].sum(dim=1)  # sum Delta <= budget per tensor
        if not per_tensor:
            low, budget = low.max(dim=0, keepdim=True)[0], budget.min().reshape(1)
        room = budget - low.sum(dim=1)  # x = Delta - low: x >= 0, sum x <= room
        return lambda delta: low + project_capped_simplex(delta - low, room)

    def corner_weights(self, lam: list[float]) -> tuple[dict[frozenset, float], float]:
        """Corners kappa tau_i, each with its lambda_i / kappa."""
        out = {frozenset([k + 1]): x for k, x in enumerate(lam) if x > ACTIVE}
        return out, 1.0 - sum(lam)


def make_constraint(settings) -> Hull | Box | Simplex:
    """The constraint set of an FWSettings (validated there)."""
    if settings.constraint == "hull":
        return Hull(settings.lmo, settings.granularity, settings.zero_vertex)
    if settings.constraint == "box":
        return Box(settings.scale, settings.granularity)
    if settings.constraint == "simplex":
        return Simplex(settings.scale, settings.granularity)
    raise ValueError(f"unknown constraint {settings.constraint!r}")
