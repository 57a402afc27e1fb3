"""The pre-pass's resumable state: everything iteration t + 1 needs, saved after iteration t.

Saved: the iterate theta itself (every slot, as stored in memory), the coefficients, the
records so far, why the loop stopped (if it did) and torch's RNG state. theta is saved, not
recomputed from the coefficients: sum_k c_k theta_k rounds differently from the chain of
in-place updates `theta += gamma (s - theta)`, and a resumed run must pick, step and write
exactly what an uninterrupted one does (tests/test_resume.py measures the difference).
The vertex norms of the cosine LMO are not saved: they are a deterministic function of the
vertices and are recomputed in the first score pass after a resume. The LMO's last picks
are saved: the next pass forms d from its prediction (fw/scores.py Fold), and a resumed
run must round d as the uninterrupted one does.

Layout of a state folder (atomic at every point a kill can hit):
  theta-<t>.safetensors   theta, coefficients and RNG after iteration t - 1 (written, then renamed)
  state.json              which theta file, the records, the run's fingerprint (renamed last)
This module knows nothing of mergekit: the fingerprint is an opaque JSON dict to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mergekit_fw.plan import IterationRecord

STATE_FORMAT = "mergekit_fw/state-v1"
STATE_FILE = "state.json"
_COEFFICIENTS = "__fw_state__/coefficients"
_RNG = "__fw_state__/rng"
_LAST_ROWS = "__fw_state__/last_rows"


@dataclass
class LoopState:
    next_t: int  # the first iteration still to run
    coefficients: torch.Tensor  # [slots, vertices] float64
    theta: dict[str, torch.Tensor]  # slot name -> iterate (CPU)
    history: list[IterationRecord]
    stopped: str | None  # set when the loop already stopped (tolerance, no_descent)
    rng: torch.Tensor
    last_rows: torch.Tensor | None = None  # the LMO's last s per tensor (FrankWolfe._last_rows)


def capture(loop, history: list[IterationRecord], stopped: str | None) -> LoopState:
    """The loop's state now (after iteration history[-1].t)."""
    return LoopState(
        next_t=history[-1].t + 1 if history else 0,
        coefficients=loop.coefficients.detach().clone(),
        theta={slot.name: slot.param.detach().to("cpu") for slot in loop.slots},
        history=list(history),
        stopped=stopped,
        rng=torch.get_rng_state(),
        last_rows=None if loop._last_rows is None else loop._last_rows.clone(),
    )


def restore(loop, state: LoopState) -> None:
    """Put a saved state back into a freshly built loop (same slots, same pool)."""
    names = [slot.name for slot in loop.slots]
    if sorted(names) != sorted(state.theta) or state.coefficients.shape != loop.coefficients.shape:
        raise ValueError("the saved state does not match this model's tensors")
    with torch.no_grad():
        for slot in loop.slots:
            saved = state.theta[slot.name]
            if saved.shape != slot.param.shape or saved.dtype != slot.param.dtype:
                raise ValueError(f"the saved state's {slot.name} has another shape or dtype")
            slot.param.copy_(saved)
    loop.coefficients.copy_(state.coefficients)
    loop._last_rows = None if state.last_rows is None else state.last_rows.clone()
    torch.set_rng_state(state.rng)


def save(state: LoopState, folder: str | Path, fingerprint: dict[str, Any]) -> None:
    """Write the state so that a kill at any moment leaves the previous or the new one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    theta_name = f"theta-{state.next_t}.safetensors"
    tensors = {name: t.contiguous() for name, t in state.theta.items()}
    tensors[_COEFFICIENTS] = state.coefficients
    tensors[_RNG] = state.rng
    if state.last_rows is not None:
        tensors[_LAST_ROWS] = state.last_rows
    partial = folder / (theta_name + ".partial")
    save_file(tensors, str(partial))
    os.replace(partial, folder / theta_name)
    document = {
        "format": STATE_FORMAT,
        "next_t": state.next_t,
        "stopped": state.stopped,
        "theta_file": theta_name,
        "history": [r.model_dump(mode="json") for r in state.history],
        "fingerprint": fingerprint,
    }
    partial = folder / (STATE_FILE + ".partial")
    partial.write_text(json.dumps(document, indent=1))
    os.replace(partial, folder / STATE_FILE)
    for old in folder.glob("theta-*.safetensors*"):  # earlier iterations, interrupted writes
        if old.name != theta_name:
            old.unlink(missing_ok=True)


def load(folder: str | Path) -> tuple[LoopState, dict[str, Any]] | None:
    """The saved state and the fingerprint it was saved under; None if there is none."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
        if document.get("format") != STATE_FORMAT:
            return None
        tensors = load_file(str(Path(folder) / document["theta_file"]))
        coefficients = tensors.pop(_COEFFICIENTS)
        rng = tensors.pop(_RNG)
        last_rows = tensors.pop(_LAST_ROWS, None)
        history = [IterationRecord.model_validate(r) for r in document["history"]]
    except (OSError, ValueError, KeyError, RuntimeError):
        return None  # unreadable state: start over (the caller logs it)
    state = LoopState(
        document["next_t"], coefficients, tensors, history, document["stopped"], rng, last_rows
    )
    return state, document["fingerprint"]
