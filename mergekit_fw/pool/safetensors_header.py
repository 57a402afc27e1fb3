"""The one safetensors header parser: an 8-byte little-endian header length, a JSON header
(tensor name -> dtype, shape, data_offsets; optional `__metadata__`), then the data.

Every reader of headers goes through here: the pread reader (pool/reader.py), the integrity
checks (pool/integrity.py), the fingerprints (pool/fingerprint.py) and adapter parsing
(pool/lora_files.py). A file whose header cannot be read raises HeaderError, whose message is
one clause about the file ("is truncated: ..."), for the caller to prefix with the path.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field

MAX_HEADER = 100_000_000  # safetensors' own limit


class HeaderError(ValueError):
    """Why a file has no readable safetensors header."""


@dataclass(frozen=True)
class Header:
    """One file's header: its tensor entries (raw JSON objects) and where the data starts."""

    path: str
    file_size: int
    raw: bytes  # the JSON bytes as stored (fingerprints hash them)
    entries: dict = field(default_factory=dict)  # name -> {"dtype", "shape", "data_offsets"}
    metadata: dict = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + len(self.raw)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(info["shape"]) for name, info in self.entries.items()}


def read_raw(path: str | os.PathLike) -> tuple[int, bytes]:
    """(file size, the header's JSON bytes); HeaderError if the length field cannot hold."""
    size = os.path.getsize(path)
    if size < 8:
        raise HeaderError(
            f"is truncated: {size} bytes, less than the 8-byte safetensors length field"
        )
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_HEADER or 8 + length > size:
            raise HeaderError(
                f"is truncated or not a safetensors file: its length field announces a "
                f"{length}-byte header, the file has {size} bytes"
            )
        return size, handle.read(length)


def read(path: str | os.PathLike) -> Header:
    """The parsed header of one safetensors file (no weights are read)."""
    size, raw = read_raw(path)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise HeaderError(f"has a corrupt header (not valid JSON: {error})") from None
    if not isinstance(parsed, dict):
        raise HeaderError("has a corrupt header (not a JSON object)")
    metadata = parsed.pop("__metadata__", None)
    return Header(str(path), size, raw, parsed, metadata if isinstance(metadata, dict) else {})
