"""Slots: which model parameters FW merges, and under which checkpoint names.

A parameter shared by several modules (tied embeddings) is one slot whose other names are
aliases. The recipe path picks the names the base checkpoint stores (`build_slots`); the
Python API picks the floating-point parameters its `include=` accepts (`select_slots`).
Both group tied names the same way (`tied_parameters`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Slot:
    """One mergeable tensor: a model parameter and the checkpoint names it is stored under."""

    name: str
    param: torch.nn.Parameter
    aliases: list[str] = field(default_factory=list)


def tied_parameters(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, list[str]]]:
    """Every parameter once, with all the names it has in the model (tied: several)."""
    groups: dict[int, tuple[torch.nn.Parameter, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), (param, []))[1].append(name)
    return list(groups.values())


def slot_of(param: torch.nn.Parameter, names: list[str], primary: str) -> Slot:
    return Slot(primary, param, [n for n in names if n != primary])


def build_slots(model: torch.nn.Module, stored: set[str]) -> list[Slot]:
    """Map parameters to checkpoint names; tied parameters become one slot with aliases."""
    slots = []
    for param, names in tied_parameters(model):
        present = [n for n in names if n in stored]
        if not present:
            raise ValueError(
                f"Model parameter {names[0]} is not stored in the base checkpoint under that "
                "name; mergekit-fw needs checkpoint names that match the transformers model."
            )
        slots.append(slot_of(param, names, present[0]))
    return slots


def select_slots(model: torch.nn.Module, include: Callable[[str], bool] | None) -> list[Slot]:
    """One slot per floating-point parameter with a name `include` accepts (None: all); an
    empty selection is the caller's error to word."""
    slots = []
    for param, names in tied_parameters(model):
        if not param.dtype.is_floating_point:
            continue
        chosen = [n for n in names if include is None or include(n)]
        if chosen:
            slots.append(slot_of(param, names, chosen[0]))
    return slots
