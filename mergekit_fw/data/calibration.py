"""Calibration sets: local files read with `datasets`, tokenized into loss-masked samples.

Record shapes (decided per record):
- `text`: loss on every next-token prediction;
- `prompt` + `response`: loss on the response tokens only;
- `messages`: chat template of the tokenizer, loss on the last (assistant) message only.
A YAML manifest names several tasks (`tasks: {name: path | {path, weight}}`), each its own
loss term, so later steps can weigh tasks and report which candidate helped which task.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergekit_fw.fw.objectives import IGNORE_INDEX
from mergekit_fw.settings import FWConfigError

DATA_SUFFIXES = {
    ".jsonl": "json",
    ".json": "json",
    ".txt": "text",
    ".csv": "csv",
    ".parquet": "parquet",
}
MANIFEST_SUFFIXES = {".yaml", ".yml"}


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    weight: float = Field(1.0, gt=0)
    max_samples: int | None = Field(None, ge=1)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: dict[str, TaskEntry | str]


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]  # causal LM: per token, IGNORE_INDEX where no loss; classifier: [label]
    token_type_ids: list[int] | None = None
    sequence_level: bool = False  # one target per sample (classification)

    @property
    def n_targets(self) -> int:
        if self.sequence_level:
            return 1
        # causal LM: label at position i is predicted from positions < i
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class CalibrationTask:
    name: str
    path: str
    weight: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def n_targets(self) -> int:
        return sum(s.n_targets for s in self.samples)


@dataclass
class CalibrationSet:
    tasks: list[CalibrationTask]

    @property
    def n_samples(self) -> int:
        return sum(len(t.samples) for t in self.tasks)

    def describe(self) -> str:
        parts = [
            f"{t.name}: {len(t.samples)} samples, {t.n_targets} target tokens" for t in self.tasks
        ]
        return "; ".join(parts)


def _check_file(path: str) -> Path:
    source = Path(path)
    if not source.exists():
        raise FWConfigError(
            f"Calibration file not found: {path} (resolved from {os.getcwd()}). "
            "Relative paths resolve from the working directory, as mergekit model paths do."
        )
    if source.is_dir():
        raise FWConfigError(
            f"Calibration path {path} is a directory; name a data file or a manifest."
        )
    if source.stat().st_size == 0:
        raise FWConfigError(f"Calibration file {path} is empty; add samples to it.")
    return source


def _check_data_file(path: str) -> None:
    source = _check_file(path)
    if source.suffix.lower() not in DATA_SUFFIXES:
        raise FWConfigError(
            f"Calibration file {path} has an unknown extension '{source.suffix}'; use one of "
            f"{', '.join(sorted(DATA_SUFFIXES))}, or a .yaml manifest of tasks."
        )


def task_files(path: str) -> list[tuple[str, TaskEntry]]:
    """Resolve a calibration path into (task name, entry) pairs whose files exist."""
    source = _check_file(path)
    if source.suffix.lower() not in MANIFEST_SUFFIXES:
        _check_data_file(path)
        return [(source.stem, TaskEntry(path=str(source)))]
    try:
        manifest = Manifest.model_validate(yaml.safe_load(source.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as error:
        raise FWConfigError(
            f"Calibration manifest {path} is invalid: {error}. Expected "
            "`tasks: {name: path-or-{path, weight, max_samples}}`."
        ) from None
    if not manifest.tasks:
        raise FWConfigError(f"Calibration manifest {path} lists no tasks.")
    pairs = []
    for name, entry in manifest.tasks.items():
        entry = TaskEntry(path=entry) if isinstance(entry, str) else entry
        # Paths inside a manifest resolve from the manifest's folder.
        resolved = entry.path if os.path.isabs(entry.path) else str(source.parent / entry.path)
        _check_data_file(resolved)
        pairs.append((name, entry.model_copy(update={"path": resolved})))
    return pairs


def _line_start(line: str, width: int = 60) -> str:
    text = line.strip()
    return repr(text if len(text) <= width else text[:width] + "...")


def _jsonl_records(path: str) -> list[tuple[str, dict[str, Any]]]:
    """JSON lines parsed here, line by line, so an error names the 1-based line and its start
    (datasets only says `row N`, 0-based and counted without blank lines)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                detail = getattr(error, "msg", str(error))
                column = getattr(error, "colno", None)
                at = f" at column {column}" if column else ""
                raise FWConfigError(
                    f"Calibration file {path}, line {number}: not valid JSON ({detail}{at}): "
                    f"{_line_start(line)}. Each line must be one JSON object."
                ) from None
            if not isinstance(record, dict):
                raise FWConfigError(
                    f"Calibration file {path}, line {number}: a JSON object per line is "
                    f"expected, found a {type(record).__name__}: {_line_start(line)}."
                )
            records.append((f"line {number}", record))
    return records


def _read_records(path: str) -> list[tuple[str, dict[str, Any]]]:
    """(position, record) pairs of a local data file: JSON lines parsed here, other formats
    read with `datasets` (no network, no cache files kept). Positions are 1-based."""
    import datasets

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".jsonl":
            return _jsonl_records(path)
    except UnicodeDecodeError as error:
        raise FWConfigError(f"Calibration file {path} is not UTF-8 text ({error}).") from None
    builder = DATA_SUFFIXES[suffix]
    kwargs: dict[str, Any] = {}
    if builder == "text":
        text = Path(path).read_text(encoding="utf-8")
        kwargs["sample_by"] = "paragraph" if "\n\n" in text.strip() else "line"
    datasets.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # our error says it, 1-based
    try:
        ds = datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
    except Exception as error:
        if suffix == ".json":  # JSON lines in a .json file: name the line that breaks
            try:
                _jsonl_records(path)
            except FWConfigError as line_error:
                raise line_error from None
            except UnicodeDecodeError:
                pass
        cause = error.__cause__ or error.__context__
        detail = f"{error}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        raise FWConfigError(f"Could not read calibration file {path}: {detail}") from None
    finally:
        datasets.enable_progress_bars()
        datasets.logging.set_verbosity(verbosity)
    records = [dict(r) for r in ds]
    if builder == "text":
        records = [r for r in records if r.get("text", "").strip()]
    return [(f"sample {i}", r) for i, r in enumerate(records, start=1)]


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_record(record: dict[str, Any], tokenizer, max_length: int, where: str) -> Sample:
    """Turn one record into a loss-masked sample, or explain why it cannot be one."""
    if record.get("messages") is not None:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise FWConfigError(
                f"{where}: `messages` must be a non-empty list of {{role, content}}."
            )
        if messages[-1].get("role") != "assistant":
            raise FWConfigError(
                f"{where}: the last message must have role 'assistant' (it is the target)."
            )
        if not getattr(tokenizer, "chat_template", None):
            raise FWConfigError(
                f"{where}: `messages` needs a chat template, and the base model's tokenizer has "
                "none. Use `prompt`/`response` records, or add a chat_template to the tokenizer."
            )
        prompt_text = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        full_text = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = _encode(tokenizer, prompt_text, special=False)
        full = _encode(tokenizer, full_text, special=False)
        ids = full[:max_length]
        labels = [IGNORE_INDEX] * min(len(prompt), len(ids)) + ids[len(prompt) :]
    elif record.get("prompt") is not None or record.get("response") is not None:
        if record.get("prompt") is None or record.get("response") is None:
            raise FWConfigError(f"{where}: `prompt` and `response` must both be present.")
        if not str(record["response"]).strip():
            raise FWConfigError(f"{where}: no target tokens: the response is empty.")
        prompt = _encode(tokenizer, str(record["prompt"]), special=True)
        response = _encode(tokenizer, str(record["response"]), special=False)
        if tokenizer.eos_token_id is not None:
            response = response + [tokenizer.eos_token_id]
        ids = (prompt + response)[:max_length]
        labels = [IGNORE_INDEX] * min(len(prompt), len(ids)) + ids[len(prompt) :]
    elif record.get("text") is not None:
        ids = _encode(tokenizer, str(record["text"]), special=True)[:max_length]
        labels = list(ids)
    else:
        raise FWConfigError(
            f"{where}: no usable fields (found {sorted(record)}). Each record needs `text`, "
            "`prompt` + `response`, or `messages`."
        )
    sample = Sample(input_ids=ids, labels=labels)
    if sample.n_targets == 0:
        raise FWConfigError(
            f"{where}: no target tokens after tokenization (max_length={max_length}). "
            "Give it a non-empty response/text, shorten the prompt, or raise max_length."
        )
    return sample


def encode_classification(
    record: dict[str, Any], tokenizer, max_length: int, where: str, num_labels: int | None
) -> Sample:
    """`text` (+ `text_pair`) and an integer `label`; without num_labels the label is optional
    (unlabelled data for the entropy objective)."""
    if record.get("text") is None:
        raise FWConfigError(
            f"{where}: classification records need `text` (and optionally `text_pair`, `label`); "
            f"found {sorted(record)}."
        )
    label = record.get("label")
    if num_labels is not None:
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < num_labels:
            raise FWConfigError(
                f"{where}: `label` must be an integer in [0, {num_labels}) for this "
                f"{num_labels}-label model; got {label!r}."
            )
    enc = tokenizer(
        str(record["text"]),
        None if record.get("text_pair") is None else str(record["text_pair"]),
        truncation=True,
        max_length=max_length,
    )
    return Sample(
        input_ids=list(enc["input_ids"]),
        labels=[label if isinstance(label, int) else IGNORE_INDEX],
        token_type_ids=list(enc["token_type_ids"]) if "token_type_ids" in enc else None,
        sequence_level=True,
    )


def load_calibration(
    path: str, tokenizer, max_length: int, num_labels: int | None = None, sequence: bool = False
) -> CalibrationSet:
    """Read and tokenize every task; all problems surface here, before any model loads.

    `sequence=True` reads classifier records (`text`, `text_pair`, `label`); `num_labels`
    then makes the label required and range-checked.
    """
    tasks = []
    for name, entry in task_files(path):
        records = _read_records(entry.path)
        if entry.max_samples is not None:
            records = records[: entry.max_samples]
        if not records:
            raise FWConfigError(f"Calibration file {entry.path} holds no samples.")
        samples = [
            encode_classification(r, tokenizer, max_length, f"{entry.path} {at}", num_labels)
            if sequence
            else encode_record(r, tokenizer, max_length, where=f"{entry.path} {at}")
            for at, r in records
        ]
        tasks.append(
            CalibrationTask(name=name, path=entry.path, weight=entry.weight, samples=samples)
        )
    return CalibrationSet(tasks=tasks)
