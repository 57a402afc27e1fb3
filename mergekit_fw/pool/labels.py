"""Short, unique vertex names for logs, plans and reports."""

from __future__ import annotations

import os
from collections.abc import Sequence


def short_labels(refs: Sequence) -> list[str]:
    """Human-readable, unique names for reports: the last path component."""
    return unique_labels([], [os.path.basename(str(r).rstrip("/")) or str(r) for r in refs])


def unique_labels(existing: Sequence[str], wanted: Sequence[str]) -> list[str]:
    taken, out = list(existing), []
    for base in wanted:
        label, i = base, 2
        while label in taken:
            label, i = f"{base}#{i}", i + 1
        taken.append(label)
        out.append(label)
    return out
