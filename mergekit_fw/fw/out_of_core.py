"""The hard FW loop out of core: theta and its gradient on disk, the model a skeleton.

Same algorithm, same plan as fw/loop.py; only where the iterate lives changes. theta and
the gradient (then the direction d, as in memory) are `TensorStore`s on disk; the model's
parameters are on the meta device and each block materialises its weights when it runs
(fw/offload.py): theta for the gradient pass, theta + gamma d for a line-search pass
(formed block by block, so the search never moves theta on disk), and the gradient of each
tensor goes straight to the store as its block finishes backward. Memory: one block's
weights and gradients, one batch's boundary activations, one streamed vertex tensor.

Not here (refused by settings): FW-soft, away / pairwise steps, merge_fn ties / dare,
lora_mode: factors; a saved state to resume from.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from mergekit_fw.fw.loop import FrankWolfe, LineWalk, Slot
from mergekit_fw.fw.offload import Offloaded, TensorStore
from mergekit_fw.fw.start_grid import (
    LineScan,
    choose,
    line_position,
    set_combination,
)


class StillWalk(LineWalk):
    """Out of core, the loss at theta + gamma d is formed per block from the two stores, so
    theta on disk does not move until `settle` (one write per iteration)."""

    def __call__(self, gamma: float) -> float:
        loop = self.loop

        def weights(name: str) -> torch.Tensor:
            return loop.theta.get(name).add_(loop.grad.get(name), alpha=gamma)

        return loop.loss_with(weights, f"line search g={gamma:.3f}")


class OutOfCoreFrankWolfe(FrankWolfe):
    """`FrankWolfe` with theta and its gradient / direction in `TensorStore`s."""

    def __init__(self, model, slots, pool, objective, batches, task_names, settings,
                 quiet: bool = False, scratch: str | Path | None = None):  # fmt: skip
        super().__init__(model, slots, pool, objective, batches, task_names, settings, quiet)
        device = batches[0].input_ids.device if batches else torch.device("cpu")
        self._own_scratch = scratch is None
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="mergekit_fw_scratch_"))
        self.theta = TensorStore(self.scratch / "theta", device)
        self.grad = TensorStore(self.scratch / "grad", device)
        self.engine = Offloaded(model, {id(s.param): s.name for s in slots}, device)
        self._last: dict[int, tuple[str, torch.Tensor]] = {}  # id(store) -> (name, tensor)
        with torch.no_grad():  # theta_0 = the base, as the in-memory path starts
            for slot in self._bar(slots, "base to scratch"):
                self.theta.put(slot.name, pool.tensor(0, slot.name))

    # -- storage: the last tensor read of each store is kept, so that the LMO pass's scores
    # and its direction (the same tensor, right after) read theta and g from disk once ------
    def _read(self, store: TensorStore, name: str) -> torch.Tensor:
        last = self._last.get(id(store))
        if last is None or last[0] != name:
            last = (name, store.get(name))
            self._last[id(store)] = last
        return last[1]

    def _write(self, store: TensorStore, name: str, x: torch.Tensor) -> None:
        store.put(name, x)
        self._last[id(store)] = (name, x)

    def theta_of(self, slot: Slot) -> torch.Tensor:
        return self._read(self.theta, slot.name)

    def store_theta(self, slot: Slot, x: torch.Tensor) -> None:
        self._write(self.theta, slot.name, x)

    def gradient_of(self, slot: Slot) -> torch.Tensor:
        return self._read(self.grad, slot.name)

    def direction_buffer(self, slot: Slot) -> torch.Tensor:
        return self._read(self.grad, slot.name)

    def store_direction(self, slot: Slot, d: torch.Tensor) -> None:
        self._write(self.grad, slot.name, d)

    def zero_gradient(self) -> None:
        self._last.clear()
        self.grad.clear()

    # -- passes ----------------------------------------------------------------------------
    def loss(self, grad: bool, desc: str, batches=None):
        self._last.clear()  # the sink writes the gradient store behind the cache
        with self.engine.use(self.theta.get, self.grad.add_ if grad else None):
            return super().loss(grad, desc, batches)

    def loss_with(self, weights, desc: str) -> float:
        """Calibration loss (no gradient) with each block's weights from `weights(name)`."""
        with self.engine.use(weights):
            return FrankWolfe.loss(self, False, desc).total

    def preference_scratch(self) -> Path:
        return self.scratch

    def device_of_gradients(self) -> torch.device:
        return self.grad.device

    def line_walk(self) -> StillWalk:
        return StillWalk(self)

    def row_loss(self, row: list[float]) -> float:
        """Calibration loss of sum_k row_k v_k (every tensor alike), formed block by block
        from the pool: how `init: auto` scores its starts out of core."""

        def weights(name: str) -> torch.Tensor:
            shape, dtype = self.theta.meta[name]  # the iterate's tensor, not read
            out = torch.empty(shape, dtype=dtype, device=self.theta.device)
            return set_combination(out, self.pool, name, row)

        return self.loss_with(weights, "start")

    def choose_start(self, rows: list[tuple[str, list[float]]]) -> list[dict]:
        """`init: auto` over the given coefficient rows; the winner becomes the start. Rows
        on the task-arithmetic line are scored from the base (theta's store) and the line's
        summed task vector (put in the gradient's store from one read of the pool), then
        each candidate alone and the screened lines alike (fw/screened_start.py); the
        winner is formed from the two stores (`start_formed`: the loop reads no vertex for
        it)."""
        if None in [line_position(row) for _, row in rows]:
            table = [{"start": name, "loss": self.row_loss(row), "row": row} for name, row in rows]
            lam = None
        else:
            scan = LineScan(
                base=self.theta.get, direction=self.grad.get, set_direction=self.grad.put,
                loss_with=lambda weights: self.loss_with(weights, "start"),
            )  # fmt: skip
            table, lam = scan.run(rows, self.slots, self.pool, self.settings)
        chosen, public = choose(table)
        self.start_row = list(chosen["row"])
        self.start_formed = lam is not None
        if lam:  # theta = base + lam t from the two stores, as scored
            with torch.no_grad():
                for slot in self._bar(self.slots, "start"):
                    start = self.theta.get(slot.name).add_(self.grad.get(slot.name), alpha=lam)
                    self.theta.put(slot.name, start)
                    del start
        self.zero_gradient()
        return public

    def run(self):
        if self.resume_state is not None:
            raise ValueError("the out-of-core pre-pass cannot resume a saved state")
        try:
            return super().run()
        finally:
            self.theta.remove()
            self.grad.remove()
            if self._own_scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)
