"""The vertex pool: base model and candidates, streamed one tensor at a time.

Models resolve through mergekit's own `LoaderCache` (same shards, same `model@lora`
merges); safetensors shards are then read with `pread` (reader.py), not memory-mapped, so
nothing of a candidate stays resident after its tensor has been used. On CPU the LMO
scores a tensor in blocks of `BLOCK` elements, every vertex per block, so the gradient
block stays in cache while the vertices stream past it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from mergekit.common import ModelReference
from mergekit.io.tasks import LoaderCache

from mergekit_fw.fw.scores import Fold, TensorScores, as_work, flat32, whole_tensor_scores
from mergekit_fw.pool.labels import short_labels, unique_labels
from mergekit_fw.pool.lora_math import add_delta_, factor_dot, factor_norm_sq
from mergekit_fw.pool.reader import TensorReader, weights_only

BLOCK = 1 << 18  # elements per LMO block: a 1 MiB float32 gradient block stays in L2


class VertexPool:
    """Index 0 is the base model; 1..n are the candidates.

    LoRA adapters (pool/lora_files.py) come after the dense candidates: vertex W0 + s B A, scored
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
        self.placement: dict[str, torch.device] = {}  # tensor -> its GPU (mergekit/placement.py)
        self.dtype = dtype
        cache = LoaderCache()
        self.loaders = [weights_only(lambda r=ref: cache.get(r), str(ref)) for ref in self.refs]
        self.readers = [TensorReader.for_loader(loader) for loader in self.loaders]
        self.adapters = list(adapters)
        if self.adapters:
            self.labels += unique_labels(self.labels, [a.label for a in self.adapters])

    def __len__(self) -> int:
        return len(self.refs) + len(self.adapters)

    @property
    def ids(self) -> list[str]:
        """Plan entries: str(ModelReference) of dense vertices, `adapter:<folder>` of adapters."""
        return [str(r) for r in self.refs] + [a.id for a in self.adapters]

    def _adapter(self, k: int):
        return self.adapters[k - len(self.refs)] if k >= len(self.refs) else None

    def is_adapter(self, k: int) -> bool:
        """Whether vertex k is a LoRA adapter (its task vector needs no base tensor)."""
        return self._adapter(k) is not None

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

    def device_for(self, name: str) -> torch.device:
        """Where a tensor's math runs: the math device, or its layer's GPU when the model is
        spread over several (`placement`)."""
        return self.placement.get(name, self.device)

    def tensor(self, k: int, name: str) -> torch.Tensor:
        """One tensor of one vertex, on its math device, in the merge dtype."""
        adapter = self._adapter(k)
        device = self.device_for(name)
        if adapter is not None:  # W0 + s B A: one tensor-sized temporary, no dense copy
            work = torch.float64 if self.dtype == torch.float64 else torch.float32
            x = self.stored(0, name).to(device=device, dtype=work, copy=True)
            return add_delta_(adapter, x, name).to(dtype=self.dtype)
        return self.stored(k, name).to(device=device, dtype=self.dtype)

    def add_task_vector_(
        self, k: int, name: str, out: torch.Tensor, alpha: float, base: torch.Tensor
    ) -> None:
        """out += alpha * tau_k (fw/constraints.py): an adapter's s B A from its factors, in
        place; a dense vertex's v_k - base with one vertex tensor in memory."""
        adapter = self._adapter(k)
        if adapter is not None:
            add_delta_(adapter, out, name, alpha=alpha)
            return
        x = self.tensor(k, name)
        out.add_(x - base, alpha=alpha)
        del x

    def tensor_names(self, k: int = 0) -> list[str]:
        k = 0 if self._adapter(k) is not None else k
        return list(self.loaders[k].index.tensor_paths)

    def score_tensor(
        self, name: str, g: torch.Tensor, theta: torch.Tensor, with_norms: bool,
        fold: Fold | None = None,
    ) -> TensorScores:  # fmt: skip
        """The LMO's numbers for one tensor: <g, v_k> (and ||v_k||) for every vertex, plus
        ||g|| and <g, theta>, in one blocked pass where it applies; with a `fold`, d = s - theta
        of the predicted s from the same read (fw/scores.py `Fold`)."""
        return self.score_tensor_many(name, [g], theta, with_norms, fold)[0]

    def score_tensor_many(
        self, name: str, grads: list[torch.Tensor], theta: torch.Tensor, with_norms: bool,
        fold: Fold | None = None,
    ) -> list[TensorScores]:  # fmt: skip
        """`score_tensor` for several gradients from one read of the tensor (the task
        preferences). Adapter vertices are scored from their factors plus the base's own dot
        and norm (pool/lora_math.py); their part of g's dot is taken before d may overwrite g.
        """
        factor_dots = []
        for g in grads:
            work = as_work(g) if self.adapters else g  # one float32 copy per gradient
            factor_dots.append([factor_dot(a, name, work, 0.0) for a in self.adapters])
        dense = len(self.refs)
        many = self._blocked_scores(name, grads, theta, with_norms, fold)
        if many is None:
            many = whole_tensor_scores(self, dense, name, grads, theta, with_norms, fold)
        adapter_norms = []
        if self.adapters and with_norms:  # the W0 terms of every adapter's norm, from W0
            base_norm = many[0].norms[0]
            w0 = as_work(self.tensor(0, name))
            adapter_norms = [
                factor_norm_sq(a, name, w0, base_norm * base_norm).clamp_min(0.0).sqrt()
                for a in self.adapters
            ]
            del w0
        for scores, own in zip(many, factor_dots):
            base_dot = scores.dots[0]
            scores.dots.extend(base_dot + dot for dot in own)
            if with_norms:
                scores.norms.extend(adapter_norms)
        if fold is not None:  # each adapter's delta; its base part is folded already
            for j, adapter in enumerate(self.adapters):
                add_delta_(adapter, fold.out, name, alpha=fold.row[dense + j])
        return many

    def _blocked_scores(
        self, name: str, grads: list[torch.Tensor], theta: torch.Tensor, with_norms: bool,
        fold: Fold | None,
    ) -> list[TensorScores] | None:  # fmt: skip
        """TensorScores of the dense vertices, read block by block: each gradient block is
        used by every vertex while it is in cache; a `fold`'s block of d is formed from the
        same blocks and written (possibly over g's block) once every dot of it is taken.

        None where it does not apply (a GPU, or a vertex that is not plain safetensors);
        the caller then reads whole tensors.
        """
        if grads[0].device.type != "cpu" or any(r is None for r in self.readers):
            return None
        entries = [r.entry(name) for r in self.readers]
        if any(e is None or not e.dtype.is_floating_point for e in entries):
            return None
        flats, here = [flat32(g) for g in grads], flat32(theta)
        numel = here.numel()
        if any(e.numel != numel for e in entries):
            return None
        size = min(BLOCK, numel)
        raw = {e.dtype: torch.empty(size, dtype=e.dtype) for e in entries}
        work = torch.empty(size, dtype=torch.float32)
        folding = _BlockFold(fold, theta, len(entries), size, self.dtype) if fold else None
        dots = torch.zeros(len(grads), len(entries), dtype=torch.float64)
        squares = torch.zeros(len(entries), dtype=torch.float64)
        grad_sq, current = [0.0] * len(grads), [0.0] * len(grads)
        for start in range(0, numel, size):
            stop = min(start + size, numel)
            blocks = [flat[start:stop] for flat in flats]
            for j, g_block in enumerate(blocks):
                grad_sq[j] += torch.dot(g_block, g_block).item()
                current[j] += torch.dot(g_block, here[start:stop]).item()
            for k, (reader, entry) in enumerate(zip(self.readers, entries)):
                x = reader.read(name, start, stop, out=raw[entry.dtype])
                if folding is not None:
                    folding.take(k, x, start, stop)
                if x.dtype != torch.float32:
                    x = work[: stop - start].copy_(x)
                for j, g_block in enumerate(blocks):
                    dots[j, k] += torch.dot(g_block, x).item()
                if with_norms:
                    squares[k] += torch.dot(x, x).item()
            if folding is not None:  # every dot of this block is taken: g's block is free
                folding.write(start, stop)
        if folding is not None:
            fold.done = True
        norms = list(squares.sqrt()) if with_norms else None
        return [
            TensorScores(list(dots[j]), None if norms is None else list(norms),
                         math.sqrt(grad_sq[j]), current[j])
            for j in range(len(grads))
        ]  # fmt: skip


class _BlockFold:
    """A `Fold` formed block by block in float32 (float64 for float64 merges), each vertex
    block rounded through the merge dtype first, as `VertexPool.tensor` would."""

    def __init__(self, fold: Fold, theta: torch.Tensor, dense: int, size: int, dtype):
        self.fold, self.dense, self.dtype = fold, dense, dtype
        work = torch.float64 if fold.out.dtype == torch.float64 else torch.float32
        self.theta = theta.detach().reshape(-1)
        self.out = fold.out.view(-1)
        self.acc = torch.empty(size, dtype=work)
        self.x = torch.empty(size, dtype=work)
        self.base = torch.empty(size, dtype=work) if fold.needs_base(dense) else None

    def take(self, k: int, raw: torch.Tensor, start: int, stop: int) -> None:
        m = stop - start
        x = self.x[:m].copy_(raw.to(self.dtype))
        if k == 0:
            theta = self.theta[start:stop].to(self.acc.dtype)
            self.fold.begin_(self.acc[:m], x, theta, self.dense)
            if self.base is not None:
                self.base[:m].copy_(x)
        else:
            self.fold.add_(self.acc[:m], k, x, None if self.base is None else self.base[:m])

    def write(self, start: int, stop: int) -> None:
        self.out[start:stop].copy_(self.acc[: stop - start])
