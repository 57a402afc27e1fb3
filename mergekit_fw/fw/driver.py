"""The one function that drives a Frank-Wolfe run, whoever built its pieces.

The recipe path (mergekit/runner.py) and the Python API (mergekit_fw/api.py) each build a
model, its slots, a vertex pool, an objective and batches their own way, then both call
`run_frank_wolfe`: the hard/soft choice, the run and the clean-up live here only.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch

from mergekit_fw.fw.loop import FrankWolfe
from mergekit_fw.fw.out_of_core import OutOfCoreFrankWolfe
from mergekit_fw.fw.problem import CalibrationProblem
from mergekit_fw.fw.scores import VertexSource
from mergekit_fw.fw.slots import Slot
from mergekit_fw.fw.soft_task_vectors import loop_class
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWSettings


def run_frank_wolfe(
    model: torch.nn.Module,
    slots: list[Slot],
    pool: VertexSource,
    problem: CalibrationProblem,
    settings: FWSettings,
    quiet: bool = False,
    start_row: list[float] | None = None,
    prepare: Callable[[FrankWolfe], None] | None = None,
    out_of_core: bool = False,
    scratch: str | None = None,
) -> FWPlan:
    """Run the variant the settings name; theta (the slots' parameters) ends at the merge.

    `start_row`: the first iterate as coefficients over the pool (a mergekit start vertex);
    `prepare`: called with the loop before it runs (the resume checkpoint attaches there).
    `out_of_core`: `model` is a meta-device skeleton; theta and its gradient live in
    `scratch` on disk (fw/out_of_core.py; a temporary folder if None).
    """
    pieces = (model, slots, pool, problem.objective, problem.batches, problem.task_names)
    if out_of_core:
        loop = OutOfCoreFrankWolfe(*pieces, settings, quiet, scratch)
    else:  # hard | soft over the hull | soft over box / simplex
        loop = loop_class(settings)(*pieces, settings, quiet=quiet)
    loop.start_row = start_row
    if prepare is not None:
        prepare(loop)
    plan = loop.run()
    del loop
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return plan
