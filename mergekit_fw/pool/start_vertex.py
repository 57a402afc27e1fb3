"""The start of a mergekit-initialised run as one more vertex of the pool.

A TIES (or any mergekit) start is not a combination of the other vertices, so the plan can
only stay "per tensor, sum_k c_k v_k" if the start is a vertex itself. Its tensors are kept
in memory (CPU, merge dtype): one model copy, whatever the pool size, and no file on disk.
The write phase reads them from the same object (mergekit/streaming.combine), so the
written merge is the pre-pass's last iterate.
"""

from __future__ import annotations

import torch

from mergekit_fw.fw.scores import (
    Fold,
    TensorScores,
    _dense_score,
    score_tensor,
    score_tensor_many,
)


class StartVertex:
    """A merge held as {tensor name: tensor}; `aliases` map tied names to stored ones."""

    def __init__(self, vertex_id: str, label: str, recipe: dict | None = None):
        self.id, self.label, self.recipe = vertex_id, label, recipe
        self.tensors: dict[str, torch.Tensor] = {}
        self.aliases: dict[str, str] = {}

    def put(self, name: str, tensor: torch.Tensor) -> None:
        self.tensors[name] = tensor.detach().to("cpu", copy=True)

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[self.aliases.get(name, name)]

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.tensors

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class StartedPool:
    """[inner pool's vertices..., start]: the inner pool (VertexPool) plus one StartVertex.

    Everything but the last index is the inner pool's; the start is scored from memory
    after the inner pool's own (blocked) pass, so the LMO reads nothing extra from disk.
    """

    def __init__(self, inner, start: StartVertex):
        self.inner, self.start_vertex = inner, start
        self.start_index = len(inner)
        self.labels = [*inner.labels, start.label]
        self.refs, self.adapters = inner.refs, inner.adapters
        self.device, self.dtype = inner.device, inner.dtype
        self.starts = [start]

    def __len__(self) -> int:
        return len(self.inner) + 1

    @property
    def ids(self) -> list[str]:
        return [*self.inner.ids, self.start_vertex.id]

    def is_adapter(self, k: int) -> bool:
        return k != self.start_index and self.inner.is_adapter(k)

    def has(self, k: int, name: str) -> bool:
        return self.start_vertex.has(name) if k == self.start_index else self.inner.has(k, name)

    def stored(self, k: int, name: str) -> torch.Tensor:
        return self.start_vertex.get(name) if k == self.start_index else self.inner.stored(k, name)

    def device_for(self, name: str) -> torch.device:
        return self.inner.device_for(name)

    def tensor(self, k: int, name: str) -> torch.Tensor:
        if k == self.start_index:
            return self.start_vertex.get(name).to(device=self.device_for(name), dtype=self.dtype)
        return self.inner.tensor(k, name)

    def tensor_names(self, k: int = 0) -> list[str]:
        return self.inner.tensor_names(0 if k == self.start_index else k)

    def score_tensor(self, name, g, theta, with_norms: bool, fold=None) -> TensorScores:
        """The start's dot first (a fold may overwrite g); the inner pool folds d when the
        predicted s leaves the start vertex out."""
        dot, norm = _dense_score(g, self.tensor(self.start_index, name), with_norms)
        inner_fold = None
        if fold is not None and fold.row[self.start_index] == 0.0:
            inner_fold = Fold(fold.row[: self.start_index], fold.task_vector, fold.out)
        scores = score_tensor(self.inner, name, g, theta, with_norms, inner_fold)
        if inner_fold is not None:
            fold.done = inner_fold.done
        scores.dots.append(dot)
        if with_norms:
            scores.norms.append(norm)
        return scores

    def score_tensor_many(self, name, grads, theta, with_norms: bool) -> list[TensorScores]:
        start = self.tensor(self.start_index, name)
        many = score_tensor_many(self.inner, name, grads, theta, with_norms)
        for scores, g in zip(many, grads):
            dot, norm = _dense_score(g, start, with_norms)
            scores.dots.append(dot)
            if with_norms:
                scores.norms.append(norm)
        return many
