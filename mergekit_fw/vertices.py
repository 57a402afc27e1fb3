"""The vertex pool: base model and candidates, streamed one tensor at a time.

Tensors come from mergekit's own `LoaderCache`, so the pre-pass reads exactly what the
executor will read later (same shards, same LoRA merges, same dtype casts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from mergekit.common import ModelReference
from mergekit.io.tasks import LoaderCache


def short_labels(refs: Sequence[ModelReference]) -> list[str]:
    """Human-readable, unique names for reports: the last path component."""
    labels: list[str] = []
    for ref in refs:
        text = str(ref)
        base = os.path.basename(text.rstrip("/")) or text
        label, i = base, 2
        while label in labels:
            label, i = f"{base}#{i}", i + 1
        labels.append(label)
    return labels


class VertexPool:
    """Index 0 is the base model; 1..n are the candidates."""

    def __init__(self, refs: Sequence[ModelReference], device: torch.device, dtype: torch.dtype):
        self.refs = list(refs)
        self.labels = short_labels(self.refs)
        self.device = device
        self.dtype = dtype
        cache = LoaderCache()
        self.loaders = [cache.get(ref) for ref in self.refs]

    def __len__(self) -> int:
        return len(self.refs)

    def has(self, k: int, name: str) -> bool:
        return name in self.loaders[k].index.tensor_paths

    def tensor(self, k: int, name: str) -> torch.Tensor:
        """One tensor of one vertex, on the math device, in the merge dtype."""
        x = self.loaders[k].get_tensor(name, device="cpu")
        return x.to(device=self.device, dtype=self.dtype)

    def tensor_names(self, k: int = 0) -> list[str]:
        return list(self.loaders[k].index.tensor_paths)
