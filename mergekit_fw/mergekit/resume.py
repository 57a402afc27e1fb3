"""Resume a killed pre-pass, and guard the output folder while a run writes it.

The state lives beside the output, in `<OUT>.fw-state/` (never inside OUT: a folder that
exists must not look like a merge, and a run that fails before any iteration leaves no
folder at all). It holds the lock file of the run writing OUT and, after every finished
iteration, the loop's state (fw/state.py) keyed by the run's fingerprint: the settings, the
dtype, device and versions, every model and adapter file (pool/fingerprint.py) and the
tokenized calibration data (data/fingerprint.py). A re-run with the same fingerprint
continues from the last finished iteration; a different one logs what changed and starts
over. After fw_plan.json is written the folder is deleted.

`--no-resume` (`mergekit-fw run`/`plan`) or MERGEKIT_FW_NO_RESUME=1 (stock `mergekit-yaml`)
ignores a saved state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergekit_fw.fw import state as loop_state
from mergekit_fw.settings import FWConfigError

LOG = logging.getLogger("mergekit_fw")
STATE_SUFFIX = ".fw-state"
LOCK_FILE = "lock"
NO_RESUME_ENV = "MERGEKIT_FW_NO_RESUME"
FINGERPRINT_FORMAT = 1
# what a saved plan must match to be applied: what the written tensors depend on
PLAN_KEYS = ("settings", "dtype", "models", "adapters")


@dataclass
class RunRequest:
    """Options of `mergekit-fw run` that mergekit-yaml has no flag for."""

    resume: bool = True
    plan: str | None = None
    cli: bool = False  # set by `mergekit-fw run` / `plan`, whose --no-resume exists


def start_over_hint() -> str:
    """How to start over, in terms the command that is running accepts: `--no-resume` for
    `mergekit-fw run` / `plan`; the environment variable for stock `mergekit-yaml`, which
    rejects unknown options."""
    if getattr(_request, "value", None) is not None and _request.value.cli:
        return "add --no-resume to start over"
    return (
        f"to start over, run it with {NO_RESUME_ENV}=1 in front (e.g. `{NO_RESUME_ENV}=1 "
        "mergekit-yaml CONFIG OUT`)"
    )


_request = threading.local()


def current_request() -> RunRequest:
    request = getattr(_request, "value", None) or RunRequest()
    if os.environ.get(NO_RESUME_ENV, "").strip() not in ("", "0"):
        request = RunRequest(resume=False, plan=request.plan, cli=request.cli)
    return request


@contextlib.contextmanager
def requested(resume: bool = True, plan: str | None = None) -> Iterator[None]:
    previous = getattr(_request, "value", None)
    _request.value = RunRequest(resume, plan, cli=True)
    try:
        yield
    finally:
        _request.value = previous


def state_folder(out_path: str | os.PathLike) -> Path:
    out = Path(os.path.abspath(out_path))
    return out.parent / (out.name + STATE_SUFFIX)


# -- fingerprints ------------------------------------------------------------------------


def _model_entry(ref) -> dict[str, Any]:
    from mergekit_fw.pool.fingerprint import folder_fingerprint

    entry: dict[str, Any] = {}
    for role, part in (("model", ref.model), ("lora", ref.lora)):
        if part is None:
            continue
        path = part.path
        if os.path.isdir(path):
            entry[role] = folder_fingerprint(path)
        else:  # a hub id: its revision is all we know without downloading
            entry[role] = {"hub": f"{path}@{part.revision or 'main'}"}
    return entry


def run_fingerprint(recipe, config, device: torch.device, with_calibration: bool = True) -> dict:
    """Everything that determines the pre-pass's result, as plain JSON."""
    import mergekit_fw
    from mergekit_fw.data.fingerprint import calibration_digest
    from mergekit_fw.pool.fingerprint import folder_fingerprint

    settings = recipe.settings.public_dict()
    settings.pop("plan", None)  # how to run, not what
    settings.pop("prepass", None)
    found: dict[str, Any] = {
        "format": FINGERPRINT_FORMAT,
        "settings": settings,
        "dtype": config.dtype,
        "device": device.type,
        "torch": torch.__version__,
        "mergekit_fw": mergekit_fw.__version__,
        "models": {str(ref): _model_entry(ref) for ref in [recipe.base, *recipe.candidates]},
        "adapters": {a.id: folder_fingerprint(a.path) for a in recipe.adapters},
    }
    if with_calibration and recipe.calibration is not None:
        tokenizer = recipe.tokenizer
        found["pad_token_id"] = getattr(tokenizer, "pad_token_id", None)
        found["calibration"] = calibration_digest(recipe.calibration)
    return found


def differences(old: dict, new: dict, keys=None) -> list[str]:
    """Human-readable list of what differs between two fingerprints (old -> new)."""
    found = []
    for key in keys or sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    found.append(f"parameters.{name} ({a.get(name)!r} -> {b.get(name)!r})")
        elif key in ("models", "adapters") and isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                if name not in a:
                    found.append(f"{key[:-1]} {name} (added)")
                elif name not in b:
                    found.append(f"{key[:-1]} {name} (removed)")
                elif a[name] != b[name]:
                    files = _changed_files(a[name], b[name])
                    found.append(f"{key[:-1]} {name} (changed: {', '.join(files)})")
        elif key == "calibration":
            found.append("calibration data (tokenized content differs)")
        else:
            found.append(f"{key} ({a!r} -> {b!r})")
    return found


def _changed_files(a: dict, b: dict) -> list[str]:
    flat_a = {f"{role}/{f}": v for role, files in a.items() for f, v in files.items()}
    flat_b = {f"{role}/{f}": v for role, files in b.items() for f, v in files.items()}
    names = sorted(n for n in set(flat_a) | set(flat_b) if flat_a.get(n) != flat_b.get(n))
    return [n.split("/", 1)[1] for n in names][:5] or ["files"]


# -- the output lock and the state folder -------------------------------------------------


def _locked(out_path, lock: Path, holder: str) -> FWConfigError:
    """The error for an OUT whose lock another run holds (`holder`: the lock file's text)."""
    return FWConfigError(
        f"Another frank_wolfe run ({holder.strip() or 'another process'}) is writing to "
        f"{out_path} (lock: {lock}); wait for it to finish or choose another output folder."
    )


class OutputGuard:
    """Holds `<OUT>.fw-state/lock` (flock: released by the kernel if the process dies)."""

    def __init__(self, out_path: str, folder: bool = True):
        self.out_path, self.is_folder = out_path, folder
        self.folder = state_folder(out_path)
        self._handle = None

    @staticmethod
    def check_free(out_path: str) -> None:
        """Refuse at once when another run holds OUT's lock (before the recipe checks and
        the foreign screen, which take a while); creates nothing."""
        lock = state_folder(out_path) / LOCK_FILE
        if not lock.is_file():
            return
        try:
            with open(lock, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return  # unreadable: __enter__ reports it
            raise _locked(out_path, lock, lock.read_text()) from None

    def __enter__(self) -> OutputGuard:
        self.started = time.time()
        out = Path(self.out_path)
        self.earlier = (
            sorted(p.name for p in out.iterdir()) if self.is_folder and out.is_dir() else []
        )
        if (out / "fw_plan.json").is_file() and self.is_folder:
            LOG.warning(
                "%s holds a finished frank_wolfe merge; this run overwrites it.", self.out_path
            )
        if self.is_folder and out.exists() and not out.is_dir():
            raise FWConfigError(f"Output {out} exists and is not a folder; choose another path.")
        if not self.is_folder and out.is_dir():
            raise FWConfigError(f"{out} is a folder; give a file name for the plan.")
        if out.is_dir() and not os.access(out, os.W_OK):
            raise FWConfigError(f"Output folder {out} is not writable (read-only?).")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.folder / LOCK_FILE, "a+")
        except OSError as error:
            raise FWConfigError(
                f"Cannot write next to the output folder ({self.folder}): "
                f"{error.strerror or error}. Choose a writable output path."
            ) from None
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._handle.seek(0)
            holder = self._handle.read()
            self._handle.close()
            self._handle = None
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise _locked(self.out_path, self.folder / LOCK_FILE, holder) from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}")
        self._handle.flush()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        finished = kind is None
        if finished and self.earlier:
            self._stray()
        kept = (self.folder / loop_state.STATE_FILE).exists()
        if finished or not kept:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif kept:
            LOG.warning(
                "The pre-pass state is kept in %s: re-run the same command to resume; %s.",
                self.folder, start_over_hint(),
            )  # fmt: skip
        if self._handle is not None:
            self._handle.close()  # releases the lock
            self._handle = None

    def _stray(self) -> None:
        """Files an earlier merge left in OUT that this one did not rewrite (e.g. shards of
        another size): named, not deleted."""
        out = Path(self.out_path)
        stray = [
            name for name in self.earlier
            if (out / name).is_file() and (out / name).stat().st_mtime < self.started - 1
        ]  # fmt: skip
        if stray:
            LOG.warning(
                "%s still holds %d file(s) from an earlier merge that this one did not write: "
                "%s. Delete them, or merge into an empty folder.",
                self.out_path, len(stray), ", ".join(stray[:8]) + (" ..." if len(stray) > 8 else ""),
            )  # fmt: skip


class Checkpointer:
    """Saves the loop's state after every iteration; resumes a matching saved state."""

    def __init__(self, folder: Path, fingerprint: dict, resume: bool = True):
        self.folder, self.fingerprint, self.resume = folder, fingerprint, resume
        self.resumed_at: int | None = None

    def saved_state(self) -> loop_state.LoopState | None:
        """The saved state to resume from: None when resuming is off, when there is none,
        when it is unreadable, or when the inputs changed since it was saved (each said)."""
        saved = loop_state.load(self.folder) if self.resume else None
        if not self.resume and (self.folder / loop_state.STATE_FILE).exists():
            LOG.info(
                "Not resuming (as asked): ignoring the saved pre-pass state in %s", self.folder
            )
        if saved is not None:
            state, old = saved
            changed = differences(old, self.fingerprint)
            if changed:
                LOG.warning(
                    "Not resuming from %s, the inputs changed: %s. Starting over.",
                    self.folder, "; ".join(changed),
                )  # fmt: skip
            else:
                self.resumed_at = state.next_t
                LOG.warning(
                    "Resuming the pre-pass from %s at iteration %d", self.folder, state.next_t
                )
                return state
        elif self.resume and (self.folder / loop_state.STATE_FILE).exists():
            LOG.warning("The saved state in %s is unreadable; starting over.", self.folder)
        return None

    def save(self, loop, history, stopped) -> None:
        try:
            loop_state.save(
                loop_state.capture(loop, history, stopped), self.folder, self.fingerprint
            )
        except OSError as error:
            raise FWConfigError(
                f"Could not save the pre-pass state to {self.folder}: {error.strerror or error}"
                " (disk full or read-only?). Nothing was written to the output folder."
            ) from None
