"""Dataset loader for the toy tasks: reads the jsonl next to this file, from any cwd.

`datasets.load_dataset("json", data_files=...)` resolves relative paths against the current
working directory, so a plain `dataset_kwargs: {data_files: data/x.jsonl}` would only work
when lm-eval is started from this folder. The task YAMLs name this function as their
`custom_dataset` instead, and it resolves `data_files` relative to this folder.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def _resolve(path: str) -> str:
    return path if Path(path).is_absolute() else str(HERE / path)


def load(data_files: str | dict[str, str], **_ignored):
    """lm-eval calls this with the task metadata plus `dataset_kwargs`; only data_files matter."""
    import datasets

    if isinstance(data_files, str):
        data_files = {"test": data_files}
    files = {split: _resolve(path) for split, path in data_files.items()}
    return datasets.load_dataset("json", data_files=files)


def answer_bits(doc: dict, results: list) -> dict:
    """(log-likelihood, bytes) of the answer: lm-eval's bits_per_byte aggregation sums both."""
    loglikelihood, _is_greedy = results[0]
    return {"bits_per_byte": (loglikelihood, len(doc["response"].encode("utf-8")))}
