"""FWConfigError, a plain exception of the algorithm, presented on the command lines as
click's one-line `Error: ...` (exit 1, no traceback).

`settings.FWConfigError` carries no click (fw/ and the Python API raise it as is). The two
command lines a user runs present it here: the stock `mergekit-yaml` through `run_merge`
(the hook installs `patch_run_merge`, which wraps mergekit_fw's own run_merge wrapper), and
`mergekit-fw` through its click group (`PresentingGroup`). Only inside a click command: a
Python caller of run_merge gets the original error (NonFiniteError and other subclasses);
the presented one is still an FWConfigError.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys

import click

from mergekit_fw.settings import FWConfigError


class PresentedError(FWConfigError, click.ClickException):
    """An FWConfigError that click prints as `Error: <message>` and exits 1."""

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)
        self.message = message


@contextlib.contextmanager
def presented():
    """Inside a click command, re-raise an FWConfigError from the block as a PresentedError
    (click prints it); elsewhere (a Python caller of run_merge) leave it as it is, subclass
    and traceback included."""
    try:
        yield
    except FWConfigError as error:
        if isinstance(error, click.ClickException) or click.get_current_context(True) is None:
            raise
        raise PresentedError(error.message) from None


class PresentingGroup(click.Group):
    """A click group whose commands present FWConfigError as `Error: ...`."""

    def invoke(self, ctx):
        with presented():
            return super().invoke(ctx)


def patch_run_merge() -> None:
    """The hook's target: mergekit_fw's run_merge wrapper (runner.patch_run_merge), with its
    FWConfigErrors presented for mergekit-yaml; idempotent."""
    from mergekit_fw.mergekit import runner

    runner.patch_run_merge()
    module = sys.modules.get("mergekit.merge") or importlib.import_module("mergekit.merge")
    wrapped = module.run_merge
    if getattr(wrapped, "_mergekit_fw_presented", False):
        return

    @functools.wraps(wrapped)
    def run_merge(*args, **kwargs):
        with presented():
            return wrapped(*args, **kwargs)

    run_merge._mergekit_fw = True  # type: ignore[attr-defined]
    run_merge._mergekit_fw_presented = True  # type: ignore[attr-defined]
    module.run_merge = run_merge
