"""Find truncated or corrupt model files from headers and file sizes alone.

Why: a truncated shard otherwise surfaces deep inside mergekit or safetensors
(`incomplete metadata, file not fully covered`) with no file or model name, and with five
candidates the user cannot tell which one is broken. These checks read a few bytes per file
(the safetensors header, an index's JSON, a zip's end record), never the weights, and return
one sentence per problem so the caller can name the model it belongs to.

The rules are safetensors' own (its Rust `validate`): an 8-byte little-endian header length,
a JSON header (both read by pool/safetensors_header.py), every tensor's byte range matching its dtype and shape, and the ranges covering
the data section exactly, without gaps.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

from mergekit_fw.pool import safetensors_header
from mergekit_fw.pool.safetensors_header import HeaderError

# Bytes per element; dtypes not listed here (sub-byte formats) are not size-checked.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
FIX = "Copy or download that file again, or re-save the model with save_pretrained."


def safetensors_problem(path: str) -> str | None:
    """Why `path` is not a complete safetensors file, or None when its header and size agree."""
    try:
        header = safetensors_header.read(path)
    except HeaderError as error:
        return str(error)
    ranges = []
    for name, info in header.entries.items():
        problem = _entry_problem(name, info)
        if problem:
            return f"has a corrupt header: {problem}"
        ranges.append((info["data_offsets"][0], info["data_offsets"][1], name))
    ranges.sort()
    end = 0
    for begin, stop, name in ranges:
        if begin != end:
            return f"has a corrupt header: tensor {name} starts at byte {begin}, expected {end}"
        end = stop
    data = header.file_size - header.data_start
    if end > data:
        return (
            f"is truncated: its header describes {end} bytes of tensor data, the file holds "
            f"{data} ({header.file_size} bytes, {end - data} missing)"
        )
    if end < data:
        return f"has {data - end} bytes after its tensor data (not a valid safetensors file)"
    return None


def _entry_problem(name: str, info) -> str | None:
    if not isinstance(info, dict):
        return f"entry {name} is not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"tensor {name} has shape {shape!r}"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        return f"tensor {name} has data_offsets {offsets!r}"
    width = DTYPE_BYTES.get(str(dtype))
    if width is not None and offsets[1] - offsets[0] != math.prod(shape) * width:
        return (
            f"tensor {name} ({dtype} {shape}) needs {math.prod(shape) * width} bytes, its "
            f"offsets give {offsets[1] - offsets[0]}"
        )
    return None


def pickle_problem(path: str) -> str | None:
    """A torch zip checkpoint (`torch.save` since 1.6) whose end record is missing is truncated;
    legacy (non-zip) pickles are not checked."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "is truncated: a torch zip checkpoint without its end-of-archive record"
    if os.path.getsize(path) == 0:
        return "is empty"
    return None


def file_problem(path: str) -> str | None:
    if path.endswith(".safetensors"):
        return safetensors_problem(path)
    if path.endswith(".bin"):
        return pickle_problem(path)
    return None


def weights_problems(folder: str) -> list[tuple[str, str]]:
    """(file, problem) for the weight files mergekit would read from `folder`, found as
    mergekit's `ShardedTensorIndex.from_disk` finds them: model.safetensors[.index.json],
    else pytorch_model.bin[.index.json]."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        single, index = os.path.join(folder, name), os.path.join(folder, name + ".index.json")
        if os.path.exists(index):
            return _index_problems(index)
        if os.path.exists(single):
            problem = file_problem(single)
            return [(single, problem)] if problem else []
    return []


def _index_problems(index: str) -> list[tuple[str, str]]:
    try:
        with open(index, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise ValueError("weight_map is not a {tensor: file} object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        return [(index, f"is not a valid shard index ({type(error).__name__}: {error})")]
    folder = os.path.dirname(index)
    problems = []
    for shard in sorted(set(weight_map.values())):
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            names = [t for t, s in weight_map.items() if s == shard]
            problems.append(
                (
                    index,
                    f"names {shard}, which does not exist ({len(names)} tensors, e.g. {names[0]})",
                )
            )
            continue
        problem = file_problem(path)
        if problem:
            problems.append((path, problem))
    return problems
