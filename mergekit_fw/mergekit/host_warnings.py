"""Warnings that mergekit 0.1.5's own code triggers in current transformers, silenced for
frank_wolfe runs only.

Why: every merge printed transformers' "`torch_dtype` is deprecated! Use `dtype` instead!".
It does not come from mergekit-fw (the pre-pass loads with `dtype=`): mergekit's
`merge._model_out_config` sets `config.torch_dtype`, which transformers 5 maps to `dtype`
with that warning. The written config is the same either way, so during the write phase of a
frank_wolfe recipe a filter on transformers' config logger drops exactly that message; other
recipes, and every other message, are left alone.
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
