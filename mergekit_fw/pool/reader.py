"""Read safetensors tensors with plain `pread`s instead of memory maps.

Why: mergekit's lazy loader (and `safetensors.safe_open`) memory-map each shard and keep it
mapped, so every page the LMO touches stays in the process's resident set until the file is
closed. Streaming 16 candidates then grew the peak RSS with the pool (docs/benchmarks.md,
Memory). A `pread` lands in the kernel's page cache, which is shared and reclaimable, and in
one buffer of ours that is freed as soon as the tensor has been used.

The index (which shard holds which tensor) is mergekit's own `ShardedTensorIndex`, so this
reads exactly the bytes mergekit's loader would read; anything that is not a plain
safetensors shard (`pytorch_model.bin`) returns None and the caller falls back to mergekit.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import torch

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lives: file, absolute byte offset, dtype and shape."""

    path: str
    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: str) -> dict[str, Entry]:
    """The tensors of one safetensors file (its header, parsed by pool/safetensors_header.py)."""
    from mergekit_fw.pool import safetensors_header

    header = safetensors_header.read(path)
    start = header.data_start
    entries = {}
    for name, info in header.entries.items():
        if info.get("dtype") not in _DTYPES:
            continue
        entries[name] = Entry(
            path, start + info["data_offsets"][0], _DTYPES[info["dtype"]], tuple(info["shape"])
        )
    return entries


class TensorReader:
    """Tensors of one model (a mergekit `ShardedTensorIndex`), read on demand, no mmap."""

    def __init__(self, index) -> None:
        self.index = index
        self._headers: dict[str, dict[str, Entry]] = {}  # shard path -> its tensors
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_loader(cls, loader) -> TensorReader | None:
        """A reader for a mergekit LazyTensorLoader's model, or None if it is not safetensors."""
        index = getattr(loader, "index", None)
        if index is None or not getattr(index, "is_safetensors", False):
            return None
        return cls(index)

    def entry(self, name: str) -> Entry | None:
        shard = self.index.tensor_paths.get(name)
        if shard is None:
            return None
        path = os.path.join(self.index.base_path, shard)
        with self._lock:
            if path not in self._headers:
                self._headers[path] = read_header(path)
        return self._headers[path].get(name)

    def _fd(self, path: str) -> int:
        with self._lock:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def read(
        self, name: str, start: int = 0, stop: int | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Elements [start, stop) of the flattened tensor in its stored dtype (a fresh buffer,
        or `out`'s first elements). The whole tensor, reshaped, when no range is given."""
        entry = self.entry(name)
        if entry is None:
            return None
        whole = start == 0 and stop is None
        stop = entry.numel if stop is None else stop
        count = stop - start
        if out is None:
            out = torch.empty(count, dtype=entry.dtype)
        else:
            out = out[:count]
        if count:
            view = memoryview(out.view(torch.uint8).numpy()).cast("B")
            done, offset = 0, entry.offset + start * entry.dtype.itemsize
            fd = self._fd(entry.path)
            while done < len(view):
                n = os.preadv(fd, [view[done:]], offset + done)
                if n <= 0:
                    raise OSError(f"short read of {name} from {entry.path}")
                done += n
        return out.view(entry.shape) if whole else out

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def weights_only(load, where: str):
    """Run a load that may unpickle a `.bin` (torch's weights-only unpickler, torch >= 2.6
    default); a pickle that holds more than tensors is a clear error, and its code never runs."""
    import pickle

    try:
        return load()
    except pickle.UnpicklingError as error:
        from mergekit_fw.settings import FWConfigError

        first = str(error).strip().splitlines()[0] if str(error).strip() else "unpickling failed"
        raise FWConfigError(
            f"{where}: its pickled weights (.bin) hold more than tensors, and mergekit-fw loads "
            f"pickles weights-only ({first}). Convert the model to safetensors, or remove it."
        ) from None


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Shapes from safetensors headers only; {} when the weights are pickles."""
    from mergekit.io.lazy_tensor_loader import ShardedTensorIndex

    from mergekit_fw.pool import safetensors_header

    index = weights_only(lambda: ShardedTensorIndex.from_disk(path), path)
    if not index.is_safetensors:
        return {}
    shapes = {}
    for shard in index.shards:
        shapes.update(safetensors_header.read(os.path.join(path, shard.filename)).shapes())
    return shapes
