"""The calibration data's fingerprint: a hash of what the loss actually sees.

Hashed after tokenization (task names, weights, token ids, labels, token types), not the
files: a changed tokenizer, `max_length` or loss mask changes the run even when the files
are the same, and a reformatted file with the same records does not.
"""

from __future__ import annotations

import hashlib
import json

from mergekit_fw.data.calibration import CalibrationSet


def calibration_digest(calibration: CalibrationSet) -> str:
    digest = hashlib.sha256()
    for task in calibration.tasks:
        digest.update(json.dumps([task.name, task.weight, len(task.samples)]).encode())
        for sample in task.samples:
            digest.update(
                json.dumps(
                    [sample.input_ids, sample.labels, sample.token_type_ids, sample.sequence_level],
                    separators=(",", ":"),
                ).encode()
            )
    return digest.hexdigest()
