"""The one function that drives a Frank-Wolfe run, whoever built its pieces.

The recipe path (mergekit/runner.py) and the Python API (mergekit_fw/api.py) each build a
model, its slots, a vertex pool, an objective and batches their own way, then both call
`run_frank_wolfe`: the hard/soft choice, the run and the clean-up live here only.
"""

from __future__ import annotations

import gc

import torch

from mergekit_fw.fw.loop import OnIteration
from mergekit_fw.fw.out_of_core import OutOfCoreFrankWolfe
from mergekit_fw.fw.problem import CalibrationProblem
from mergekit_fw.fw.scores import VertexSource
from mergekit_fw.fw.slots import Slot
from mergekit_fw.fw.soft_task_vectors import loop_class
from mergekit_fw.fw.state import LoopState
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWSettings


def run_frank_wolfe(
    model: torch.nn.Module,
    slots: list[Slot],
    pool: VertexSource,
    problem: CalibrationProblem,
    settings: FWSettings,
    quiet: bool = False,
    *,
    start_row: list[float] | None = None,
    start_formed: bool = False,
    on_iteration: OnIteration | None = None,
    resume: LoopState | None = None,
    out_of_core: bool = False,
    scratch: str | None = None,
    start_rows: list[tuple[str, list[float]]] | None = None,
) -> FWPlan:
    """Run the variant the settings name; theta (the slots' parameters) ends at the merge.

    `start_row`, `start_formed`, `on_iteration`, `resume`: the loop's own keywords
    (`FrankWolfe.__init__` says what each does). `out_of_core`: `model` is a meta-device
    skeleton; theta and its gradient live in `scratch` on disk (fw/out_of_core.py; a
    temporary folder if None), and `start_rows` are `init: auto`'s candidate starts, which
    the out-of-core loop scores block by block and starts from the best of (the table is
    the plan's `init_table`). Out of core takes none of the loop's keywords: settings refuse
    a mergekit start there, and it keeps no resumable state.
    """
    pieces = (model, slots, pool, problem.objective, problem.batches, problem.task_names)
    table = None
    if out_of_core:
        if start_row is not None or on_iteration is not None or resume is not None:
            raise ValueError("the out-of-core pre-pass takes no start row, hook or saved state")
        loop = OutOfCoreFrankWolfe(*pieces, settings, quiet, scratch)
        if start_rows:
            table = loop.choose_start(start_rows)
    else:  # hard | soft over the hull | soft over box / simplex
        loop = loop_class(settings)(
            *pieces, settings, quiet=quiet, start_row=start_row, start_formed=start_formed,
            on_iteration=on_iteration, resume=resume,
        )  # fmt: skip
    plan = loop.run()
    del loop
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return plan if table is None else plan.model_copy(update={"init_table": table})
