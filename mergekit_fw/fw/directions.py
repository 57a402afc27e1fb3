"""Step 4 of an FW iteration: the direction d, from the LMO's vertex, and the coefficient
update of step 6. One strategy object per run, chosen once from the options
(`make_directions`): `Directions` (vanilla steps, d = s - theta, Algorithm 1) or
`ActiveSetDirections` (`fw_steps: away | pairwise`, fw/away.py), either applied through
the merge function (`merge_fn: ties | dare` masks d per tensor, fw/merge_fns.py).

Where d lives: over the spent gradient. After the LMO the gradient is needed only as the
scalars of its score table (<g, v>, <g, theta>), so d is written into the gradient's buffer
(`FrankWolfe.direction_buffer`; on disk out of core) and the pre-pass holds no third
model-sized copy. The slope <g, d> the step rules use therefore comes from the table, not
from g. An LMO that decides each tensor alone may write d during its own read of the pool
(`in_lmo`; a `Fold`, fw/scores.py, when it can predict the pick: `predicts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergekit_fw.fw.away import AWAY, PAIRWISE, ActiveSets, BlockStep
from mergekit_fw.fw.constraints import Vertex
from mergekit_fw.fw.merge_fns import apply_merge_fn_
from mergekit_fw.fw.oracles import ScoreTable


@dataclass
class Direction:
    """What step 4 made: d itself is in the direction buffers; this says what it is."""

    vertex: Vertex  # s_t, the LMO's vertex
    slope: float | None  # <g, d> at gamma = 0 from the score table; None: ties / dare
    steps: list[BlockStep] | None = None  # away / pairwise: each row's step; None: s - theta


class Directions:
    """Vanilla FW steps: d = s - theta per tensor, then the merge function's mask."""

    def __init__(self, settings, constraint):
        self.settings, self.constraint = settings, constraint
        self.linear = settings.merge_fn == "linear"
        # the LMO pass writes d while it reads the pool when each tensor's pick is known
        # right after its scores; it predicts d from the last pick (a Fold) only when the
        # write phase does not replay d (merge_fn ties / dare replay it as direction_ forms it)
        self.in_lmo = settings.granularity == "tensor"
        self.predicts = self.in_lmo and self.linear

    def begin(self, coefficients: torch.Tensor) -> None:
        """The run's start is set (theta_0 and its coefficients)."""

    @torch.no_grad()
    def form(self, loop, t: int, table: ScoreTable, vertex: Vertex, formed: bool) -> Direction:
        """d over the gradient's buffers (unless the LMO pass `formed` it), masked by the
        merge function, with its slope."""
        steps = self.choose(table, vertex)
        if not formed:
            self.write(loop, vertex, steps)
        if not self.linear:
            s = self.settings
            for slot in loop.slots:
                d = loop.direction_buffer(slot)
                apply_merge_fn_(d, s.merge_fn, s.merge_density, s.seed, t, slot.name)
                loop.store_direction(slot, d)
        return Direction(vertex, self.slope(table, vertex, steps), steps)

    def choose(self, table: ScoreTable, vertex: Vertex) -> list[BlockStep] | None:
        return None

    def write(self, loop, vertex: Vertex, steps) -> None:
        loop.direction_pass(vertex)

    def slope(self, table: ScoreTable, vertex: Vertex, steps) -> float | None:
        """<g, s - theta> = -(FW gap); None when d is not the linear direction (a mask)."""
        if not self.linear:
            return None
        return float((vertex.dots(table) - table.current_dots).sum())

    def update(self, coefficients: torch.Tensor, direction: Direction, gamma: float) -> None:
        """c <- (1 - gamma) c + gamma c_s: theta + gamma d in coefficients."""
        coefficients.mul_(1.0 - gamma).add_(direction.vertex.rows, alpha=gamma)


class ActiveSetDirections(Directions):
    """Away / pairwise steps: each row's d is s - theta, theta - a or s - a, scaled by its
    largest feasible step; the active sets (fw/away.py) track the corners' weights."""

    def __init__(self, settings, constraint):
        super().__init__(settings, constraint)
        self.in_lmo = self.predicts = False  # away or FW is decided after the whole table
        self.active: ActiveSets | None = None

    def begin(self, coefficients: torch.Tensor) -> None:
        self.active = ActiveSets(self.constraint, coefficients, self.settings)

    def choose(self, table: ScoreTable, vertex: Vertex) -> list[BlockStep]:
        return self.active.choose(self.settings.fw_steps, table, vertex)

    def write(self, loop, vertex: Vertex, steps: list[BlockStep]) -> None:
        away = self.active.away_vertex(vertex, steps)
        for i, (slot, st) in enumerate(zip(loop.slots, steps)):
            d, theta = loop.direction_buffer(slot), loop.theta_of(slot)

            def toward(v: Vertex, out: torch.Tensor, i=i, slot=slot, theta=theta) -> None:
                self.constraint.direction_(loop.pool, i, slot.name, v, theta, out)  # v - theta

            if st.kind == AWAY:  # scale (theta - a)
                toward(away, d)
                d.mul_(-st.scale)
            elif st.kind == PAIRWISE:  # scale ((s - theta) - (a - theta))
                toward(vertex, d)
                other = torch.empty_like(d)
                toward(away, other)
                d.sub_(other).mul_(st.scale)
                del other
            else:
                toward(vertex, d)
            loop.store_direction(slot, d)

    def slope(self, table: ScoreTable, vertex: Vertex, steps: list[BlockStep]) -> float | None:
        if not self.linear:
            return None
        s_dots, cur = vertex.dots(table), table.current_dots
        a_dots = self.active.away_vertex(vertex, steps).dots(table)
        total = 0.0
        for i, st in enumerate(steps):
            if st.kind == AWAY:
                total += st.scale * float(cur[i] - a_dots[i])
            elif st.kind == PAIRWISE:
                total += st.scale * float(s_dots[i] - a_dots[i])
            else:
                total += float(s_dots[i] - cur[i])
        return total

    def update(self, coefficients: torch.Tensor, direction: Direction, gamma: float) -> None:
        self.active.update(coefficients, direction.vertex, direction.steps, gamma)


def make_directions(settings, constraint) -> Directions:
    """The run's direction strategy: vanilla, or away / pairwise (`fw_steps`)."""
    if settings.fw_steps == "vanilla":
        return Directions(settings, constraint)
    return ActiveSetDirections(settings, constraint)
