"""The vertex pool: base model and candidates, streamed one tensor at a time.

Models resolve through mergekit's own `LoaderCache` (same shards, same `model@lora`
merges); safetensors shards are then read with `pread` (reader.py), not memory-mapped, so
nothing of a candidate stays resident after its tensor has been used. On CPU the LMO
scores a tensor in blocks of `BLOCK` elements, every vertex per block, so the gradient
block stays in cache while the vertices stream past it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from mergekit.common import ModelReference
from mergekit.io.tasks import LoaderCache

from mergekit_fw.reader import TensorReader

BLOCK = 1 << 18  # elements per LMO block: a 1 MiB float32 gradient block stays in L2


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
    """Index 0 is the base model; 1..n are the candidates.

    LoRA adapters (adapters.py) come after the dense candidates: vertex W0 + s B A, scored
    from its factors (`score_tensor`), never read through mergekit's LoaderCache.
    """

    def __init__(
        self,
        refs: Sequence[ModelReference],
        device: torch.device,
        dtype: torch.dtype,
        adapters: Sequence = (),
    ):
        self.refs = list(refs)
        self.labels = short_labels(self.refs)
        self.device = device
        self.dtype = dtype
        cache = LoaderCache()
        self.loaders = [cache.get(ref) for ref in self.refs]
        self.readers = [TensorReader.for_loader(loader) for loader in self.loaders]
        self.adapters = list(adapters)
        if self.adapters:
            from mergekit_fw.adapters import unique_labels

            self.labels += unique_labels(self.labels, [a.label for a in self.adapters])

    def __len__(self) -> int:
        return len(self.refs) + len(self.adapters)

    @property
    def ids(self) -> list[str]:
        """Plan entries: str(ModelReference) of dense vertices, `adapter:<folder>` of adapters."""
        return [str(r) for r in self.refs] + [a.id for a in self.adapters]

    def _adapter(self, k: int):
        return self.adapters[k - len(self.refs)] if k >= len(self.refs) else None

    def has(self, k: int, name: str) -> bool:
        k = 0 if self._adapter(k) is not None else k
        return name in self.loaders[k].index.tensor_paths

    def stored(self, k: int, name: str) -> torch.Tensor:
        """One dense vertex's tensor as stored (dtype, CPU): a fresh buffer, no memory map."""
        reader = self.readers[k]
        x = reader.read(name) if reader is not None else None
        if x is None:  # not safetensors (or not found there): mergekit's loader decides
            x = self.loaders[k].get_tensor(name, device="cpu")
        return x

    def tensor(self, k: int, name: str) -> torch.Tensor:
        """One tensor of one vertex, on the math device, in the merge dtype."""
        adapter = self._adapter(k)
        if adapter is not None:  # W0 + s B A: one tensor-sized temporary, no dense copy
            work = torch.float64 if self.dtype == torch.float64 else torch.float32
            x = self.stored(0, name).to(device=self.device, dtype=work, copy=True)
            return adapter.add_delta_(x, name).to(dtype=self.dtype)
        return self.stored(k, name).to(device=self.device, dtype=self.dtype)

    def tensor_names(self, k: int = 0) -> list[str]:
        k = 0 if self._adapter(k) is not None else k
        return list(self.loaders[k].index.tensor_paths)

    def score_tensor(
        self, name: str, g: torch.Tensor, theta: torch.Tensor, with_norms: bool
    ) -> TensorScores:
        """The LMO's numbers for one tensor: <g, v_k> (and ||v_k||) for every vertex, plus
        ||g|| and <g, theta>, in one blocked pass where it applies.

        Adapter vertices are scored from their factors plus the base's own dot and norm
        (adapters.Adapter.dot / norm_sq).
        """
        scores = self._blocked_scores(name, g, theta, with_norms)
        if scores is None:
            scores = _whole_tensor_scores(self, len(self.refs), name, g, theta, with_norms)
        dots, norms = scores.dots, scores.norms
        if self.adapters:
            base_dot = dots[0]
            base_norm = norms[0] if with_norms else None
            adapter_sq = []
            if with_norms:  # the W0 terms of every adapter's norm, from W0 itself
                w0 = _work(self.tensor(0, name))
                adapter_sq = [a.norm_sq(name, w0, base_norm * base_norm) for a in self.adapters]
                del w0
            work_g = _work(g)
            for j, adapter in enumerate(self.adapters):
                dots.append(adapter.dot(name, work_g, base_dot))
                if with_norms:
                    norms.append(adapter_sq[j].clamp_min(0.0).sqrt())
        return scores

    def _blocked_scores(self, name: str, g: torch.Tensor, theta: torch.Tensor, with_norms: bool):
        """TensorScores of the dense vertices, read block by block: each gradient block is
        used by every vertex while it is in cache.

        None where it does not apply (a GPU, or a vertex that is not plain safetensors);
        the caller then reads whole tensors.
        """
        if g.device.type != "cpu" or any(r is None for r in self.readers):
            return None
        entries = [r.entry(name) for r in self.readers]
        if any(e is None or not e.dtype.is_floating_point for e in entries):
            return None
        flat, here = _flat32(g), _flat32(theta)
        numel = flat.numel()
        if any(e.numel != numel for e in entries):
            return None
        size = min(BLOCK, numel)
        raw = {e.dtype: torch.empty(size, dtype=e.dtype) for e in entries}
        work = torch.empty(size, dtype=torch.float32)
        dots = torch.zeros(len(entries), dtype=torch.float64)
        squares = torch.zeros(len(entries), dtype=torch.float64)
        grad_sq = current = 0.0
        for start in range(0, numel, size):
            stop = min(start + size, numel)
            g_block = flat[start:stop]
            grad_sq += torch.dot(g_block, g_block).item()
            current += torch.dot(g_block, here[start:stop]).item()
            for k, (reader, entry) in enumerate(zip(self.readers, entries)):
                x = reader.read(name, start, stop, out=raw[entry.dtype])
                if x.dtype != torch.float32:
                    x = work[: stop - start].copy_(x)
                dots[k] += torch.dot(g_block, x).item()
                if with_norms:
                    squares[k] += torch.dot(x, x).item()
        norms = list(squares.sqrt()) if with_norms else None
        return TensorScores(list(dots), norms, math.sqrt(grad_sq), current)


@dataclass
class TensorScores:
    """What the LMO needs from one tensor (vertex order: base, candidates, adapters)."""

    dots: list  # <g, v_k>
    norms: list | None  # ||v_k||, when asked for
    grad_norm: float  # ||g||
    current: float  # <g, theta>


def _flat32(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().reshape(-1)
    return x if x.dtype == torch.float32 else x.float()


def _whole_tensor_scores(pool, count: int, name: str, g, theta, with_norms: bool) -> TensorScores:
    """TensorScores of vertices 0..count-1, one whole `pool.tensor(k, name)` at a time."""
    dots, norms = [], [] if with_norms else None
    for k in range(count):
        x = pool.tensor(k, name)
        dot, norm = _dense_score(g, x, with_norms)
        del x
        dots.append(dot)
        if with_norms:
            norms.append(norm)
    flat = _flat32(g)
    grad_norm = float(torch.linalg.vector_norm(flat))
    return TensorScores(dots, norms, grad_norm, float(torch.dot(flat, _flat32(theta))))


def _work(x: torch.Tensor) -> torch.Tensor:
    """float32 (or float64) view of a tensor for factor products."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _dense_score(g: torch.Tensor, x: torch.Tensor, with_norms: bool):
    # float32 BLAS dot: a float64-accumulated sum of g * x was the LMO's main cost
    # (docs/benchmarks.md, LMO speed); float32 accumulation is ample for ranking vertices.
    dot = torch.dot(g.reshape(-1).float(), x.reshape(-1).float())
    return dot, torch.linalg.vector_norm(x.float()) if with_norms else None


def score_tensor(pool, name: str, g: torch.Tensor, theta: torch.Tensor, with_norms: bool):
    """The pool's own `score_tensor` if it has one (blocked reads, factor-scored adapters),
    else one streamed `pool.tensor(k, name)` at a time."""
    own = getattr(pool, "score_tensor", None)
    if own is not None:
        return own(name, g, theta, with_norms)
    return _whole_tensor_scores(pool, len(pool), name, g, theta, with_norms)


def vertex_ids(pool) -> list[str]:
    """The plan's `models`: the pool's ids (adapters included) or its references."""
    ids = getattr(pool, "ids", None)
    return list(ids) if ids is not None else [str(r) for r in pool.refs]
