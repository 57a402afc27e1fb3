"""Vertices from state dicts and safetensors files: the Python API's pool, no mergekit.

Vertex 0 is the base (a snapshot of the model's merged parameters); candidates are state
dicts in memory, or safetensors files / folders of shards read one tensor at a time with
`pread` (reader.py), so a candidate on disk is never loaded whole and nothing of it stays
resident once its tensor has been used. Every candidate is checked against the merged
parameters (present, same shape) when the pool is built, before any gradient work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mergekit_fw.pool.labels import unique_labels
from mergekit_fw.pool.reader import TensorReader, read_header
from mergekit_fw.settings import FWConfigError


@dataclass
class FileIndex:
    """Which file of a checkpoint holds which tensor (what TensorReader needs of an index)."""

    base_path: str
    tensor_paths: dict[str, str]  # tensor name -> file name under base_path
    is_safetensors: bool = True


def file_index(path: str | os.PathLike) -> FileIndex:
    """The tensors of one .safetensors file, or of every .safetensors shard in a folder."""
    p = Path(path)
    if p.is_file():
        if p.suffix != ".safetensors":
            raise FWConfigError(
                f"Candidate {p} is not a .safetensors file; load it (e.g. torch.load) and pass "
                "the state dict, or save it with safetensors.torch.save_file."
            )
        files = [p]
    elif p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise FWConfigError(
                f"Candidate folder {p} holds no .safetensors files; pass a state dict instead."
            )
    else:
        raise FWConfigError(f"Candidate {p} does not exist (expected a state dict or a path).")
    names: dict[str, str] = {}
    for f in files:
        for name in read_header(str(f)):
            names.setdefault(name, f.name)
    return FileIndex(str(files[0].parent), names)


class StateDictPool:
    """[base, candidates] over the merged parameter names (a `VertexSource`, fw/scores.py)."""

    def __init__(
        self,
        base: Mapping[str, torch.Tensor],
        candidates: Sequence,
        labels: Sequence[str] | None = None,
    ):
        if not candidates:
            raise FWConfigError("candidates= is empty; pass at least one state dict or path.")
        if labels is not None and len(labels) != len(candidates):
            raise FWConfigError(
                f"labels= has {len(labels)} names for {len(candidates)} candidates."
            )
        self.base = dict(base)  # name -> tensor in the model's dtype, on the model's device
        self.memory: list[Mapping[str, torch.Tensor] | None] = [None]
        self.readers: list[TensorReader | None] = [None]
        self.refs = ["base"]
        for i, candidate in enumerate(candidates, start=1):
            if isinstance(candidate, Mapping):
                self.memory.append(candidate)
                self.readers.append(None)
                self.refs.append(f"state_dict:{i}")
            elif isinstance(candidate, (str, os.PathLike)):
                self.memory.append(None)
                self.readers.append(TensorReader(file_index(candidate)))
                self.refs.append(str(candidate))
            else:
                raise FWConfigError(
                    f"Candidate {i} is a {type(candidate).__name__}; pass an nn.Module, a "
                    "state dict (name -> tensor) or the path of a .safetensors file or folder."
                )
        wanted = (
            list(labels) if labels is not None else [self._default_label(r) for r in self.refs[1:]]
        )
        self.labels = unique_labels(["base"], wanted)
        self.labels.insert(0, "base")
        for k in range(1, len(self.refs)):
            self._check(k)

    @staticmethod
    def _default_label(ref: str) -> str:
        if ref.startswith("state_dict:"):
            return f"candidate_{ref.split(':')[1]}"
        name = os.path.basename(ref.rstrip("/"))
        return name.removesuffix(".safetensors") or name

    @property
    def ids(self) -> list[str]:
        return list(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def _shape(self, k: int, name: str) -> tuple[int, ...] | None:
        if self.memory[k] is not None:
            x = self.memory[k].get(name)
            return None if x is None else tuple(x.shape)
        entry = self.readers[k].entry(name)
        return None if entry is None else entry.shape

    def _check(self, k: int) -> None:
        """Every merged tensor present with the base's shape (headers only for files)."""
        missing = []
        for name, base in self.base.items():
            shape = self._shape(k, name)
            if shape is None:
                missing.append(name)
            elif shape != tuple(base.shape):
                raise FWConfigError(
                    f"Candidate {self.labels[k]} ({self.refs[k]}): tensor {name} has shape "
                    f"{list(shape)}, the model's is {list(base.shape)}. Candidates must be "
                    "fine-tunes of the same architecture (or narrow include= to the shared part)."
                )
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise FWConfigError(
                f"Candidate {self.labels[k]} ({self.refs[k]}) lacks {', '.join(missing[:3])}"
                f"{more}, which the merge includes. Save full state dicts, or exclude those "
                "parameters with include=."
            )

    def tensor_names(self, k: int = 0) -> list[str]:
        return list(self.base)

    def tensor(self, k: int, name: str) -> torch.Tensor:
        """One tensor of one vertex in the model's dtype and device (files: a fresh read)."""
        base = self.base[name]
        if k == 0:
            return base
        if self.memory[k] is not None:
            x = self.memory[k][name]
        else:
            x = self.readers[k].read(name)
        return x.to(device=base.device, dtype=base.dtype)

    def close(self) -> None:
        for reader in self.readers:
            if reader is not None:
                reader.close()
