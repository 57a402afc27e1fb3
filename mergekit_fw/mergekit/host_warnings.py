"""Warnings that mergekit 0.1.5's own code triggers in current transformers, silenced for
frank_wolfe runs only.

Why: every merge printed transformers' "`torch_dtype` is deprecated! Use `dtype` instead!".
It does not come from mergekit-fw (the pre-pass loads with `dtype=`): mergekit's
`merge._model_out_config` sets `config.torch_dtype`, which transformers 5 maps to `dtype`
with that warning. The written config is the same either way, so during the write phase of a
frank_wolfe recipe a filter on transformers' config logger drops exactly that message; other
recipes, and every other message, are left alone. `host_bars` does the same for the
progress bars transformers draws while the pre-pass loads the base.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

MESSAGES = ("`torch_dtype` is deprecated! Use `dtype` instead!",)
LOGGER = "transformers.configuration_utils"


class _DropHostDeprecations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in MESSAGES


@contextlib.contextmanager
def quiet_host_deprecations() -> Iterator[None]:
    logger = logging.getLogger(LOGGER)
    drop = _DropHostDeprecations()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def host_bars(quiet: bool) -> Iterator[None]:
    """transformers' own progress bars (from_pretrained's "Loading weights") follow
    fw.progress: shown on a terminal, off in a log file or when quiet."""
    import transformers.utils.logging as hf_logging

    from mergekit_fw.fw.progress import mode

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled and (quiet or mode() != "bars"):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
