"""`mergekit-fw eval`: the merge next to its base and candidates, on the same lm-eval tasks.

A merge is only worth keeping if it beats the models it came from, so by default the models
named in OUT/fw_plan.json are evaluated alongside it with identical settings. Each task gets
one headline metric, chosen the way people read lm-eval results (accuracy or exact match
where the task has it, bits per byte for perplexity-style tasks), and the table says which.
lm-eval is an optional extra and is imported only here.
"""

from __future__ import annotations

import difflib
import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mergekit_fw.plan import PLAN_FILE, FWPlan
from mergekit_fw.report.card import EVAL_FILE, plan_fingerprint

EVAL_FORMAT = "mergekit_fw/eval-v1"
MERGED_LABEL = "merged"
ADAPTER_CONFIG = "adapter_config.json"
INSTALL_HINT = (
    "lm-eval is not installed. It is an optional extra of mergekit-fw: "
    "pip install 'mergekit-fw[eval]'  (or: pip install 'lm_eval>=0.4.5,<0.5')"
)
# First match wins. Accuracy-like metrics first; for loglikelihood_rolling tasks (wikitext,
# pile) bits_per_byte, which unlike word_perplexity does not depend on the tokenizer.
HEADLINE_METRICS = (
    "acc",
    "exact_match",
    "acc_norm",
    "em",
    "f1",
    "mcc",
    "pass@1",
    "bleu",
    "rougeL",
    "bits_per_byte",
    "word_perplexity",
    "byte_perplexity",
    "perplexity",
)


class EvalError(ValueError):
    """Bad input to `mergekit-fw eval`, with a message that says how to fix it."""


@dataclass(frozen=True)
class EvalModel:
    """One column of the table: what HFLM loads."""

    label: str
    pretrained: str
    revision: str | None = None
    peft: str | None = None

    def describe(self) -> str:
        text = f"`{self.pretrained}`" + (f"@{self.revision}" if self.revision else "")
        return text + (f" + LoRA `{self.peft}`" if self.peft else "")


@dataclass(frozen=True)
class Headline:
    metric: str  # e.g. "acc"
    key: str  # lm-eval's "metric,filter" key, e.g. "acc,none"
    higher_is_better: bool | None


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise EvalError(INSTALL_HINT) from None


# --- which models ----------------------------------------------------------------------
def check_model_dir(out: str | Path) -> Path:
    """OUT must be a transformers checkpoint folder (what mergekit writes) or, for
    `lora_mode: factors`, a PEFT adapter folder."""
    path = Path(out)
    if not path.is_dir():
        raise EvalError(f"{out} is not a folder; pass the output folder of a merge.")
    if not (path / "config.json").exists() and not (path / ADAPTER_CONFIG).exists():
        raise EvalError(
            f"{out} is not a merged model folder: it has no config.json (nor {ADAPTER_CONFIG}). "
            "Pass the folder that mergekit-yaml / mergekit-fw run wrote."
        )
    return path


def merged_model(out: Path, plan: FWPlan | None) -> EvalModel:
    """The merge itself; a LoRA adapter output is evaluated on top of its base."""
    if (out / "config.json").exists():
        return EvalModel(MERGED_LABEL, str(out))
    if plan is not None:
        base = plan.models[0]
    else:
        config = json.loads((out / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path") or ""
    if not base:
        raise EvalError(f"{out}/{ADAPTER_CONFIG} does not name its base model.")
    return replace(_model_from_reference(base, MERGED_LABEL), peft=str(out))


def _model_from_reference(text: str, label: str) -> EvalModel:
    """A mergekit reference string (path[@revision][+lora]) as HFLM arguments."""
    from mergekit.common import ModelReference

    ref = ModelReference.parse(text)
    return EvalModel(
        label=label,
        pretrained=ref.model.path,
        revision=ref.model.revision,
        peft=ref.lora.path if ref.lora else None,
    )


def _missing_local(path: str) -> bool:
    """A path that can only be local (hub ids are 'org/name') and is not there."""
    local = path.startswith((".", "/", "~")) or path.count("/") > 1
    return local and not os.path.exists(os.path.expanduser(path))


def _unique(label: str, taken: set[str]) -> str:
    candidate, i = label, 2
    while candidate in taken:
        candidate, i = f"{label}#{i}", i + 1
    taken.add(candidate)
    return candidate


def models_to_compare(
    out: Path, compare: Sequence[str] = (), auto_compare: bool = True
) -> tuple[list[EvalModel], FWPlan | None]:
    """[merged, *others]: --compare models if given, else the plan's base and candidates."""
    plan_path = out / PLAN_FILE
    try:
        plan = FWPlan.load(plan_path) if plan_path.exists() else None
    except ValueError as error:
        raise EvalError(f"{plan_path} is not a readable Frank-Wolfe plan: {error}") from None
    taken = {MERGED_LABEL}
    models = [merged_model(out, plan)]
    if compare:
        for text in compare:
            model = _model_from_reference(text, "")
            name = os.path.basename(model.pretrained.rstrip("/")) or text
            models.append(replace(model, label=_unique(name, taken)))
    elif auto_compare and plan is not None:
        for text, label in zip(plan.models, plan.labels):
            adapter = getattr(plan, "adapters", {}).get(text)
            if adapter:  # a LoRA vertex: the base with that adapter
                base = _model_from_reference(plan.models[0], "")
                models.append(replace(base, label=_unique(label, taken), peft=adapter))
            else:
                models.append(_model_from_reference(text, _unique(label, taken)))
    for model in models:
        for path in (model.pretrained, model.peft):
            if path and _missing_local(path):
                raise EvalError(
                    f"Model {path} ({model.label}) does not exist. Paths in {PLAN_FILE} are "
                    "as written in the recipe (relative ones resolve from the working "
                    "directory); pass --compare, or --no-auto-compare to evaluate the merge alone."
                )
    return models, plan


# --- which tasks -----------------------------------------------------------------------
def task_manager(include_paths: Sequence[str] = (), tasks: Sequence[str] = ()):
    """lm-eval's TaskManager; only the --include-path folders when they hold every task.

    Indexing lm-eval's ~14k built-in task YAMLs takes about 10 s, which dominates a quick
    run on local tasks. Groups are excluded from the shortcut: they may name built-in tasks.
    """
    from lm_eval.tasks import TaskManager

    for path in include_paths:
        if not Path(path).is_dir():
            raise EvalError(f"--include-path {path} is not a folder of lm-eval task YAMLs.")
    paths = [str(Path(p).resolve()) for p in include_paths]
    if paths and tasks:
        local = TaskManager(include_path=paths, include_defaults=False)
        entries = [local.task_index.get(name) for name in tasks]
        if all(e is not None and e.kind.name in {"TASK", "PY_TASK", "TAG"} for e in entries):
            return local
    return TaskManager(include_path=paths or None)


def check_tasks(manager, tasks: Sequence[str], include_paths: Sequence[str] = ()) -> list[str]:
    """Task, group and tag names as lm-eval knows them; unknown names list what is there."""
    if not tasks:
        raise EvalError("No tasks given: pass --tasks T1,T2 (lm-eval task, group or tag names).")
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known and not manager.match_tasks([t])]
    if not unknown:
        return list(tasks)
    local = sorted(_local_tasks(manager, include_paths))
    lines = [f"Unknown lm-eval task(s): {', '.join(unknown)}."]
    for name in unknown:
        close = difflib.get_close_matches(name, manager.all_tasks, n=3)
        if close:
            lines.append(f"  {name}: did you mean {', '.join(close)}?")
    if local:
        lines.append("Tasks in --include-path: " + ", ".join(local))
    elif not include_paths:
        lines.append(
            "For the toy demo tasks pass --include-path examples/lm_eval_tasks "
            "(a folder of task YAMLs)."
        )
    lines.append(
        f"{len(manager.all_tasks)} names are available in all; `lm_eval ls tasks` lists them."
    )
    raise EvalError("\n".join(lines))


def _local_tasks(manager, include_paths: Sequence[str]) -> list[str]:
    """Names (tasks, groups, tags) defined by the --include-path folders alone."""
    if not include_paths:
        return []
    from lm_eval.tasks import TaskManager

    local = TaskManager(
        include_path=[str(Path(p).resolve()) for p in include_paths], include_defaults=False
    )
    return list(local.all_tasks)


# --- headline metric -------------------------------------------------------------------
def _numeric(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def choose_headline(
    task_result: dict[str, Any], higher_is_better: dict[str, bool], prefer: str | None = None
) -> Headline | None:
    """One metric of a task's lm-eval result: `prefer` if present, else HEADLINE_METRICS order."""
    keys = [
        key
        for key, value in task_result.items()
        if "," in key and "_stderr" not in key and _numeric(value) is not None
    ]
    if not keys:
        return None

    def pick(metric: str) -> str | None:
        matching = [k for k in keys if k.split(",", 1)[0] == metric]
        # unfiltered scores first, then the first filter lm-eval reports (e.g. strict-match)
        return next((k for k in matching if k.endswith(",none")), matching[0] if matching else None)

    for metric in ([prefer] if prefer else []) + list(HEADLINE_METRICS):
        key = pick(metric)
        if key:
            break
    else:
        key = keys[0]
    metric = key.split(",", 1)[0]
    return Headline(metric, key, higher_is_better.get(metric))


# --- running lm-eval ---------------------------------------------------------------------
def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_model(
    model: EvalModel,
    tasks: Sequence[str],
    manager,
    *,
    limit: float | None,
    device: str,
    batch_size: int | str,
    dtype: str,
    num_fewshot: int | None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """lm_eval.simple_evaluate on one model; returns the parts of its output we keep."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    kwargs: dict[str, Any] = {"revision": model.revision or "main"}
    if model.peft:
        kwargs["peft"] = model.peft
    lm = HFLM(
        pretrained=model.pretrained,
        device=device,
        batch_size=batch_size,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    try:
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            log_samples=False,
            bootstrap_iters=1000,
        )
    finally:
        del lm
        gc.collect()
        _empty_cuda_cache()
    if output is None:  # non-zero rank of a distributed run
        return {}
    keep = ("results", "higher_is_better", "n-samples", "n-shot", "versions", "group_subtasks")
    return {key: output.get(key) for key in keep}


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- table ------------------------------------------------------------------------------
def _format(value: float, stderr: float | None) -> str:
    text = f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{text} ± {stderr:.3f}" if stderr is not None and stderr > 0 else text


def table_tasks(runs: dict[str, dict[str, Any]], requested: Sequence[str] = ()) -> list[str]:
    """Result names for the table: requested ones first; a requested group that has its own
    score hides its subtasks (mmlu is one row, not 62); tags expand to their tasks."""
    names: list[str] = []
    tree: dict[str, list[str]] = {}
    for run in runs.values():
        names += [t for t in run.get("results") or {} if t not in names]
        tree.update(run.get("group_subtasks") or {})
    scored = {
        task
        for run in runs.values()
        for task, result in (run.get("results") or {}).items()
        if choose_headline(result, {}) is not None
    }
    hidden: set[str] = set()
    for name in requested:
        stack = list(tree.get(name, [])) if name in scored else []
        while stack:
            child = stack.pop()
            if child not in hidden:
                hidden.add(child)
                stack += tree.get(child, [])
    ordered = [t for t in requested if t in names] + [t for t in names if t not in requested]
    return [t for t in ordered if t not in hidden or t in requested]


def scores_table(
    runs: dict[str, dict[str, Any]], prefer: str | None = None, requested: Sequence[str] = ()
) -> dict[str, Any]:
    """Per task: the headline metric and each model's score (None where a model lacks it)."""
    rows: dict[str, Any] = {}
    for task in table_tasks(runs, requested):
        headline = None
        for run in runs.values():
            result = (run.get("results") or {}).get(task)
            if result:
                headline = choose_headline(
                    result, (run.get("higher_is_better") or {}).get(task, {}), prefer
                )
            if headline:
                break
        if headline is None:  # a group without aggregate scores
            continue
        scores, stderrs = {}, {}
        for label, run in runs.items():
            result = (run.get("results") or {}).get(task) or {}
            scores[label] = _numeric(result.get(headline.key))
            metric, _, filt = headline.key.partition(",")
            stderrs[label] = _numeric(result.get(f"{metric}_stderr,{filt}"))
        rows[task] = {"headline": asdict(headline), "scores": scores, "stderr": stderrs}
    return rows


def markdown_table(rows: dict[str, Any], labels: Sequence[str], note: str = "") -> str:
    """task x model, best score per row in bold, the metric and its direction in the task cell."""
    arrows = {True: "↑", False: "↓", None: ""}
    lines = [
        "| task (headline metric) | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for task, row in rows.items():
        head = row["headline"]
        better = head["higher_is_better"]
        values = {k: v for k, v in row["scores"].items() if v is not None}
        best = None
        if values and better is not None and len(values) > 1:
            best = (max if better else min)(values.values())
        cells = []
        for label in labels:
            value = row["scores"].get(label)
            if value is None:
                cells.append("-")
                continue
            text = _format(value, row["stderr"].get(label))
            cells.append(f"**{text}**" if best is not None and value == best else text)
        metric = f"{head['metric']} {arrows[better]}".rstrip()
        lines.append(f"| {task} ({metric}) | " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# --- the command ------------------------------------------------------------------------
def run_eval(
    out: str | Path,
    tasks: Sequence[str],
    *,
    compare: Sequence[str] = (),
    auto_compare: bool = True,
    include_paths: Sequence[str] = (),
    limit: float | None = None,
    device: str | None = None,
    batch_size: int | str | None = None,
    dtype: str = "auto",
    num_fewshot: int | None = None,
    metric: str | None = None,
    trust_remote_code: bool = False,
    output: str | Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate OUT (and the models it came from); write and return the JSON document."""
    require_lm_eval()
    out_path = check_model_dir(out)
    models, plan = models_to_compare(out_path, compare, auto_compare)
    manager = task_manager(include_paths, tasks)
    tasks = check_tasks(manager, tasks, include_paths)
    device = device or default_device()
    if batch_size is None:
        batch_size = "auto" if device.startswith("cuda") else 8
    runs: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for model in models:
        progress(f"[mergekit-fw eval] {model.label}: {model.describe()} on {', '.join(tasks)}")
        start = time.perf_counter()
        runs[model.label] = evaluate_model(
            model, tasks, manager, limit=limit, device=device, batch_size=batch_size,
            dtype=dtype, num_fewshot=num_fewshot, trust_remote_code=trust_remote_code,
        )  # fmt: skip
        seconds[model.label] = round(time.perf_counter() - start, 2)
    import lm_eval

    labels = [m.label for m in models]
    rows = scores_table(runs, metric, tasks)
    shots = "task default shots" if num_fewshot is None else f"{num_fewshot}-shot"
    docs = "all docs" if limit is None else f"limit {limit:g} docs per task"
    note = (
        f"lm-eval {getattr(lm_eval, '__version__', '?')}, {shots}, {docs}. ↑ higher is better, "
        "↓ lower is better; best per row in bold. "
        + "; ".join(f"{m.label} = {m.describe()}" for m in models)
    )
    document: dict[str, Any] = {
        "format": EVAL_FORMAT,
        "out": str(out_path),
        "models": [asdict(m) for m in models],
        "tasks": list(tasks),
        "settings": {
            "limit": limit,
            "device": device,
            "batch_size": batch_size,
            "dtype": dtype,
            "num_fewshot": num_fewshot,
            "metric": metric,
            "include_paths": [str(Path(p).resolve()) for p in include_paths],
        },
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "seconds": seconds,
        "scores": rows,
        "table": markdown_table(rows, labels, note),
        "runs": runs,
    }
    if plan is not None:  # lets `mergekit-fw report` tell this merge from a later one
        document["plan_fingerprint"] = plan_fingerprint(plan)
    target = Path(output) if output else out_path / EVAL_FILE
    target.write_text(json.dumps(document, indent=1, default=_json_default), encoding="utf-8")
    document["path"] = str(target)
    return document


def _json_default(value: Any) -> Any:
    """numpy scalars and other odd values that lm-eval leaves in its results."""
    number = _numeric(value)
    if number is not None:
        return number
    return str(value)


def quiet_lm_eval(verbose: bool) -> None:
    """lm-eval logs every task build at INFO/WARNING; keep the table readable."""
    level = logging.INFO if verbose else logging.ERROR
    logging.getLogger("lm_eval").setLevel(level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
