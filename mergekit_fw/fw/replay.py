"""The write phase of a non-linear merge function: replay the trajectory, one tensor at a time.

With `merge_fn: ties | dare` the iterate is not sum_k c_k v_k, so the write phase
recomputes each tensor from the plan: the start, then per iteration the recorded pick's
direction d = s - theta, the same mask (fw/merge_fns.py), and the same in-place moves
theta += delta * d the pre-pass made (line-search probes included, in order). Each step is
elementwise in that tensor, so the bytes equal the pre-pass's last iterate. Memory: theta,
d and one vertex tensor of one tensor; each iteration reads one vertex tensor.
"""

from __future__ import annotations

import torch

from mergekit_fw.fw.constraints import Vertex, make_constraint
from mergekit_fw.fw.merge_fns import apply_merge_fn_
from mergekit_fw.fw.oracles import ZERO
from mergekit_fw.fw.start_grid import set_combination, ta_row
from mergekit_fw.plan import FWPlan


def start_tensor(pool, plan: FWPlan, name: str) -> torch.Tensor:
    """theta_0 of one tensor, by the same operations as the loop's start."""
    s = plan.settings
    x = pool.tensor(0, name).clone()
    if plan.start_row is not None:  # FrankWolfe.init_combination
        set_combination(x, pool, name, plan.start_row)
    elif s.init == "task_arithmetic":  # FrankWolfe.init_task_arithmetic
        set_combination(x, pool, name, ta_row(s.init_scale, len(pool) - 1))
    return x


def recorded_vertex(pick: str, index: dict[str, int], constraint) -> Vertex:
    """The LMO's vertex of one tensor from its recorded pick ("a+b" on the box)."""
    members = [ZERO if label == "zero" else index[label] for label in pick.split("+")]
    return constraint.vertex_of(members, len(index))


@torch.no_grad()
def replay_tensor(pool, plan: FWPlan, name: str) -> torch.Tensor:
    """The pre-pass's last iterate of tensor `name` (a tied alias resolves to its primary)."""
    primary = plan.aliases.get(name, name)
    s = plan.settings
    index = {label: k for k, label in enumerate(plan.labels)}
    x = start_tensor(pool, plan, primary)
    constraint = make_constraint(s)
    for record in plan.iterations:
        if not record.moves:
            continue
        d = torch.empty_like(x)
        vertex = recorded_vertex(record.picks[primary], index, constraint)
        constraint.direction_(pool, 0, primary, vertex, x, d)
        apply_merge_fn_(d, s.merge_fn, s.merge_density, s.seed, record.t, primary)
        for delta in record.moves:
            x.add_(d, alpha=delta)
        del d
    return x
