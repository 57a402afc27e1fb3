"""Fingerprints of model and adapter folders: what a resume or a saved plan is keyed by.

Per weight file: its size, the SHA-256 of its safetensors header (names, dtypes, shapes,
offsets), and the SHA-256 of `SAMPLES` blocks of `SAMPLE_BYTES` spread evenly over the data
(the first and last bytes included). Why not a hash of every byte: a 7B candidate is 15 GB,
and hashing the whole pool at ~1 GB/s would add minutes to every run and every resume. Why
more than header and size: a checkpoint re-trained and re-saved with the same layout has the
same header and size; it differs in almost every weight, so a handful of sampled blocks
catches it. Not caught: an edit of a few weights between the samples, in place, same size.
No modification times: a copied folder is the same model, and must keep its plan valid.
Small JSON files (config, shard index, adapter config) are hashed whole. Pickled weights
(`.bin`) get the same size + sampled blocks (no header to read).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mergekit_fw.pool import safetensors_header
from mergekit_fw.pool.safetensors_header import HeaderError

SAMPLES = 16
SAMPLE_BYTES = 4096
JSON_FILES = ("config.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sampled(handle, start: int, end: int) -> str:
    """SHA-256 of SAMPLES blocks spread evenly over [start, end)."""
    digest = hashlib.sha256()
    span = max(end - start - SAMPLE_BYTES, 0)
    for i in range(SAMPLES):
        offset = start + (span * i) // max(SAMPLES - 1, 1)
        handle.seek(offset)
        digest.update(handle.read(min(SAMPLE_BYTES, end - offset)))
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """'size:<n> header:<sha> data:<sha>' of one weight file (header only for safetensors)."""
    path = Path(path)
    size = path.stat().st_size
    header, start = "", 0
    if path.suffix == ".safetensors":
        try:
            _, raw = safetensors_header.read_raw(path)
            header, start = _sha(raw), 8 + len(raw)
        except HeaderError:
            pass  # a header that cannot be read: size and sampled bytes only
    with open(path, "rb") as handle:
        data = _sampled(handle, start, size)
    return f"size:{size} header:{header or '-'} data:{data}"


def folder_fingerprint(folder: str | Path) -> dict[str, str]:
    """{file name: fingerprint} of the weight and JSON files of a model or adapter folder."""
    folder = Path(folder)
    found = {}
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if not path.is_file():
            continue
        if entry.endswith(WEIGHT_SUFFIXES):
            found[entry] = file_fingerprint(path)
        elif entry in JSON_FILES or entry.endswith(".index.json"):
            found[entry] = "sha:" + _sha(path.read_bytes())
    return found
