"""Progress of the pre-pass's passes: tqdm bars on a terminal, one line per pass in a log.

Why: in a log file (stderr not a TTY) tqdm writes every refresh of every bar, dozens per FW
iteration, and the `FW t=` lines drown in them. Every bar of this package goes through
`progress`, so the choice is made in one place: bars when stderr is a terminal, otherwise one
indented line when a pass ends (`  gradient t=3: 8/8 in 0.21 s`), which leaves the flush-left
`FW t=` lines easy to find. `MERGEKIT_FW_PROGRESS=bars|lines|off` overrides the choice.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
MODES = ("bars", "lines", "off")


def mode() -> str:
    """bars | lines | off: the environment override, else bars on a terminal, lines otherwise."""
    chosen = os.environ.get("MERGEKIT_FW_PROGRESS", "").strip().lower()
    if chosen in MODES:
        return chosen
    stream = sys.stderr
    return "bars" if stream is not None and getattr(stream, "isatty", lambda: False)() else "lines"


def progress(items: Iterable[T], desc: str, quiet: bool = False) -> Iterable[T]:
    """`items`, with a bar or a closing line on stderr (nothing when quiet)."""
    chosen = "off" if quiet else mode()
    if chosen == "bars":
        return tqdm(items, desc=desc, leave=False)
    if chosen == "lines":
        return _lines(items, desc)
    return items


def _lines(items: Iterable[T], desc: str) -> Iterator[T]:
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    started, done = time.perf_counter(), 0
    for item in items:
        yield item
        done += 1
    count = f"{done}/{total}" if total is not None else f"{done}"
    print(
        f"  {desc}: {count} in {time.perf_counter() - started:.2f} s", file=sys.stderr, flush=True
    )


def message(text: str, quiet_log=None) -> None:
    """A line that must stand out (`FW t=...`): written between bars, or logged when quiet."""
    if quiet_log is not None:
        quiet_log(text)
    elif mode() == "bars":
        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)
