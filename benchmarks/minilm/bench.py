"""Merge benchmark on the MiniLM expert zoo (`python -m benchmarks.minilm.bench`). Not in CI.

Build the zoo first (`python -m benchmarks.minilm.zoo`). Held-out accuracy per target task of:
- the base and every expert of the pool;
- task arithmetic (stock mergekit `task_arithmetic`, in memory through
  `mergekit.merge_methods.merge_state_dicts`), lambda chosen on the calibration split;
- TIES (stock mergekit `ties`, the same way), density and lambda chosen on calibration;
- FW-hard and FW-soft: `merge_method: frank_wolfe` recipes run by the stock `mergekit-yaml`,
  calibrated on a YAML manifest of the targets' calibration files (`objective: classification`).
Grid selection maximises the mean calibration accuracy over the targets (ties: lower mean
calibration cross-entropy). Test splits are only scored, never used to choose anything.

Cached under benchmarks/.cache/minilm/bench/: scores.json (every (model, task, split) score),
runs.json (selection and wall times), fw/<setting>/<variant>/ (mergekit-yaml outputs). A
re-run reuses them; `--write-docs` rewrites the generated block of docs/benchmarks_minilm.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmarks.minilm import zoo

BENCH = zoo.CACHE / "bench"
DOCS = zoo.ROOT.parent / "docs" / "benchmarks_minilm.md"
BEGIN, END = "<!-- minilm-bench:begin -->", "<!-- minilm-bench:end -->"

# Which experts are merged (the pool) and which tasks are scored (the targets).
SETTINGS = {
    "all": {
        "targets": zoo.TASKS,
        "pool": zoo.TASKS,
        "about": "6 targets; pool = their 6 experts",
    },
    "all+noise": {
        "targets": zoo.TASKS,
        "pool": zoo.TASKS + [zoo.NOISE],
        "about": "6 targets; pool = their 6 experts + the random-label expert",
    },
    "sub3": {
        "targets": ["topic_business", "topic_tech", "match"],
        "pool": zoo.EXPERTS,
        "about": "3 targets; pool = all 7 experts (3 relevant, 4 irrelevant or harmful)",
    },
}
TA_LAMBDAS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
TIES_DENSITIES = [0.1, 0.2, 0.4, 0.7]
TIES_LAMBDAS = [0.5, 1.0, 1.5, 2.0]  # mergekit's ties normalizes (mean of the agreeing deltas)

BASELINES = [
    "task arithmetic",
    "TIES",
    "task arithmetic + head-bias fit",
    "TIES + head-bias fit",
]
FW_COMMON = {
    "objective": "classification",
    "max_length": zoo.SETTINGS["max_length"],
    "batch_size": 16,
    "seed": 0,
}
FW_VARIANTS = {
    # the package defaults (box over task vectors, init: auto), 8 iterations
    "FW defaults": {"variant": "hard", "iterations": 8, "line_search_evals": 6},
    # paper defaults (inner-product LMO, per-tensor, the hull, line search from the base)
    "FW-hard": {
        "variant": "hard",
        "iterations": 8,
        "line_search_evals": 6,
        "constraint": "hull",
        "init": "base",
    },  # fmt: skip
    # one vertex per task's gradient (authors' selection); coefficients per tensor fitted by
    # projected gradient descent on the simplex (paper) or by unconstrained Adam (authors)
    "FW-soft-simplex": {
        "variant": "soft",
        "iterations": 2,
        "select": "per_task",
        "coefficients": "simplex",
        "inner_steps": 8,
        "inner_lr": 1.0,  # scale-free: the first trial moves the largest weight by 1.0
    },
    "FW-soft-free": {
        "variant": "soft",
        "iterations": 2,
        "select": "per_task",
        "coefficients": "free",
        "inner_steps": 8,
        "constraint": "hull",  # free weights ignore any set: hull only
    },
}


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def zoo_fingerprint() -> str:
    metas = {}
    for task in zoo.EXPERTS:
        path = zoo.CACHE / "experts" / task / "meta.json"
        if not path.exists():
            raise SystemExit(f"missing expert {task}: run `python -m benchmarks.minilm.zoo` first")
        metas[task] = json.loads(path.read_text())
    return _key({"settings": zoo.SETTINGS, "experts": metas})


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors in {path}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


class Bench:
    """Scores state dicts on the encoded calibration/test sets, with a JSON score cache."""

    def __init__(self) -> None:
        BENCH.mkdir(parents=True, exist_ok=True)
        self.fingerprint = zoo_fingerprint()
        self.tok = zoo.load_tokenizer()
        self.model = zoo.load_model(zoo.CACHE / "base")
        self.sets = {
            (task, split): zoo.encode(
                zoo.read_jsonl(zoo.data_dir(task) / f"{split}.jsonl"), self.tok
            )
            for task in zoo.TASKS
            for split in ("calib", "test")
        }
        self.scores_path = BENCH / "scores.json"
        self.runs_path = BENCH / "runs.json"
        self.scores = self._load(self.scores_path)
        self.runs = self._load(self.runs_path)
        self._states: dict[str, dict[str, torch.Tensor]] = {}

    def _load(self, path: Path) -> dict:
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("zoo") == self.fingerprint:
                return data
        return {"zoo": self.fingerprint}

    def save(self) -> None:
        for path, data in ((self.scores_path, self.scores), (self.runs_path, self.runs)):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(path)

    def state(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._states:
            where = zoo.CACHE / ("base" if name == "base" else f"experts/{name}")
            self._states[name] = load_state(where)
        return self._states[name]

    def score(self, key: str, make_state, tasks: list[str], split: str) -> dict[str, list[float]]:
        """{task: [accuracy, cross-entropy, AUC]}; `make_state()` runs only for missing ones."""
        missing = [t for t in tasks if f"{key}|{t}|{split}" not in self.scores]
        if missing:
            state = make_state()
            self.model.load_state_dict(state, strict=True)
            for task in missing:
                enc = self.sets[(task, split)]
                out = zoo.logits(self.model, enc)
                self.scores[f"{key}|{task}|{split}"] = list(zoo.metrics(out, enc["labels"]))
                if split == "calib":  # kept for the head-bias fit of the baselines
                    margin = out[:, 1] - out[:, 0]
                    self.scores[f"margin|{key}|{task}"] = [round(float(m), 5) for m in margin]
            self.save()
        return {t: self.scores[f"{key}|{t}|{split}"] for t in tasks}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


_LAST_MERGE: dict = {}


def merge(bench: Bench, method: str, pool: list[str], params: dict) -> dict[str, torch.Tensor]:
    """Stock mergekit `method` in memory. In both task_arithmetic and ties, lambda only scales
    the merged delta at the end (base + lambda * delta), so a grid over lambda reuses one
    lambda=1 merge (TIES' sparsification costs ~1 min per merge on this CPU); `cli_check`
    and `lambda_check` compare this with mergekit-yaml and with a direct call."""
    from mergekit.merge_methods import merge_state_dicts

    lam = float(params.get("lambda", 1.0))
    unit = {**params, "lambda": 1.0}
    key = (method, tuple(pool), _key(unit))
    if _LAST_MERGE.get("key") != key:
        models = {"base": bench.state("base"), **{e: bench.state(e) for e in pool}}
        with torch.no_grad():
            merged = merge_state_dicts(models, method, parameters=unit, base="base")
        _LAST_MERGE.clear()
        _LAST_MERGE.update(key=key, state=merged)
    merged = _LAST_MERGE["state"]
    if lam == 1.0:
        return merged
    base = bench.state("base")
    return {
        k: (b + lam * (v - b)) if v.is_floating_point() else v
        for k, v, b in ((k, v, base[k]) for k, v in merged.items())
    }


def fit_shift(bench: Bench, key: str, targets: list[str]) -> tuple[float, float]:
    """The logit shift (added to logit[1] - logit[0]) that maximises the mean calibration
    accuracy over the targets; returns (shift, that accuracy). Ties: the smallest |shift|."""
    margins = {t: torch.tensor(bench.scores[f"margin|{key}|{t}"]) for t in targets}
    labels = {t: bench.sets[(t, "calib")]["labels"] for t in targets}
    values = torch.sort(torch.cat(list(margins.values()))).values
    candidates = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    best = (-1.0, 0.0)
    for threshold in [0.0, *candidates.tolist()]:
        acc = mean(
            float(((margins[t] > threshold).long() == labels[t]).double().mean()) for t in targets
        )
        if acc > best[0] + 1e-12 or (abs(acc - best[0]) < 1e-12 and abs(threshold) < abs(best[1])):
            best = (acc, threshold)
    return -best[1], best[0]


def shifted(state: dict[str, torch.Tensor], shift: float) -> dict[str, torch.Tensor]:
    """The same model with `shift` added to logit[1] - logit[0] (two head biases)."""
    bias = state["classifier.bias"].clone()
    bias[1] += shift / 2
    bias[0] -= shift / 2
    return {**state, "classifier.bias": bias}


def grid_search(bench: Bench, name: str, method: str, setting: str, grid: list[dict]) -> list[dict]:
    """Choose the parameters on calibration accuracy (then loss); score the choice on test.

    Two records: the stock merge (`name`), and `name + head-bias fit`, where the logit shift
    of the 2-way head is also fitted on the calibration split (a 1-parameter data-driven
    correction, chosen jointly with the grid point)."""
    spec = SETTINGS[setting]
    targets, pool = spec["targets"], spec["pool"]
    start = time.perf_counter()
    trials = []
    for params in grid:
        full = {"weight": 1.0, **params}
        key = f"{method}|{'+'.join(sorted(pool))}|{_key(full)}"
        calib = bench.score(
            key, lambda full=full: merge(bench, method, pool, full), targets, "calib"
        )
        shift, shift_acc = fit_shift(bench, key, targets)
        trials.append(
            {
                "params": params,
                "key": key,
                "calib_acc": mean(v[0] for v in calib.values()),
                "calib_loss": mean(v[1] for v in calib.values()),
                "calib_auc": mean(v[2] for v in calib.values()),
                "shift": shift,
                "shift_calib_acc": shift_acc,
            }
        )
    records = []
    best = min(trials, key=lambda t: (-t["calib_acc"], t["calib_loss"]))
    fitted = min(trials, key=lambda t: (-t["shift_calib_acc"], -t["calib_auc"]))
    for label, trial, shift in (
        (name, best, None),
        (f"{name} + head-bias fit", fitted, fitted["shift"]),
    ):
        full = {"weight": 1.0, **trial["params"]}
        if shift is None:
            test = bench.score(
                trial["key"], lambda full=full: merge(bench, method, pool, full), targets, "test"
            )
            chosen, calib_acc = trial["params"], trial["calib_acc"]
        else:
            test = bench.score(
                f"{trial['key']}|shift={shift:.6g}",
                lambda full=full, shift=shift: shifted(merge(bench, method, pool, full), shift),
                targets,
                "test",
            )
            chosen = {**trial["params"], "shift": round(shift, 3)}
            calib_acc = trial["shift_calib_acc"]
        run_key = f"{setting}|{label}"
        record = bench.runs.get(run_key, {})
        if "seconds" not in record:  # wall time of the first (uncached) run
            record["seconds"] = round(time.perf_counter() - start, 1)
        record.update(name=label, chosen=chosen, calib_acc=calib_acc, test=test, trials=trials)
        bench.runs[run_key] = record
        records.append(record)
    bench.save()
    return records


# ---------------------------------------------------------------------------------- FW


def fw_recipe(setting: str, options: dict) -> dict:
    """A `merge_method: frank_wolfe` recipe for a setting, from a dict of FW options."""
    spec = SETTINGS[setting]
    manifest = BENCH / "fw" / setting / "calib.yaml"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tasks = {t: str(zoo.data_dir(t) / "calib.jsonl") for t in spec["targets"]}
    manifest.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    return {
        "merge_method": "frank_wolfe",
        "base_model": str(zoo.CACHE / "base"),
        "models": [{"model": str(zoo.CACHE / "experts" / e)} for e in spec["pool"]],
        "dtype": "float32",
        "parameters": {"calibration": str(manifest), **FW_COMMON, **options},
    }


def mergekit_yaml(recipe: dict, out: Path, threads: int, log: Path) -> float:
    """Run the stock `mergekit-yaml` on a recipe; returns the wall time in seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / (out.name + ".yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    exe = Path(sys.executable).with_name("mergekit-yaml")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(
            [str(exe), str(path), str(out)], stdout=f, stderr=subprocess.STDOUT, env=env
        )
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"mergekit-yaml failed ({proc.returncode}) for {path}:\n{tail}")
    return seconds


def run_fw(bench: Bench, setting: str, name: str, options: dict, threads: int) -> dict:
    recipe = fw_recipe(setting, options)
    digest = _key({"recipe": recipe, "zoo": bench.fingerprint})
    out = BENCH / "fw" / setting / name
    meta_path = out / "bench_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("digest") != digest:
        log = out.parent / f"{name}.log"
        print(f"  {setting} {name}: mergekit-yaml (log {log}) ...", flush=True)
        seconds = mergekit_yaml(recipe, out, threads, log)
        meta = {"digest": digest, "seconds": round(seconds, 1), "options": options}
    plan = out / "fw_plan.json"
    if plan.exists():
        meta["plan_summary"] = _plan_summary(json.loads(plan.read_text()))
    meta_path.write_text(json.dumps(meta, indent=2))
    targets = SETTINGS[setting]["targets"]
    key = f"fw|{digest}"
    calib = bench.score(key, lambda: load_state(out), targets, "calib")
    test = bench.score(key, lambda: load_state(out), targets, "test")
    record = {
        "name": name,
        "chosen": options,
        "seconds": meta["seconds"],
        "calib_acc": mean(v[0] for v in calib.values()),
        "test": test,
        "plan_summary": meta.get("plan_summary"),
    }
    bench.runs[f"{setting}|{name}"] = record
    bench.save()
    return record


def _plan_summary(plan: dict) -> dict:
    """Mean coefficient per vertex over tensors, the loss trajectory and final losses."""
    summary: dict = {}
    try:
        labels = plan["labels"]
        rows = list(plan["coefficients"].values())
        summary["mean_coefficient"] = {
            label: round(sum(r[i] for r in rows) / len(rows), 4) for i, label in enumerate(labels)
        }
        summary["loss"] = [round(r["loss"], 4) for r in plan["iterations"]]
        summary["gamma"] = [round(r["gamma"], 4) for r in plan["iterations"]]
        summary["final_loss"] = round(plan["final_loss"], 4)
        summary["final_task_losses"] = {
            k: round(v, 4) for k, v in plan.get("final_task_losses", {}).items()
        }
        summary["prepass_seconds"] = round(plan.get("seconds", 0.0), 1)
    except Exception as error:  # the plan format belongs to mergekit_fw; never fail on it
        summary["error"] = repr(error)
    return summary


# ------------------------------------------------------------------------ orchestration


def single_models(bench: Bench, setting: str) -> None:
    spec = SETTINGS[setting]
    targets = spec["targets"]
    for name in ["base", *spec["pool"]]:
        calib = bench.score(f"model|{name}", lambda n=name: bench.state(n), targets, "calib")
        test = bench.score(f"model|{name}", lambda n=name: bench.state(n), targets, "test")
        bench.runs[f"{setting}|{name}"] = {
            "name": name,
            "calib_acc": mean(v[0] for v in calib.values()),
            "test": test,
        }
    bench.save()


def run_setting(
    bench: Bench, setting: str, fw: bool, threads: int, variants: list[str] | None = None
) -> None:
    spec = SETTINGS[setting]
    print(f"[{setting}] {spec['about']}", flush=True)
    single_models(bench, setting)
    ta_grid = [{"lambda": x} for x in TA_LAMBDAS]
    for record in grid_search(bench, "task arithmetic", "task_arithmetic", setting, ta_grid):
        _print(setting, record)
    ties_grid = [{"density": d, "lambda": x} for d in TIES_DENSITIES for x in TIES_LAMBDAS]
    for record in grid_search(bench, "TIES", "ties", setting, ties_grid):
        _print(setting, record)
    if fw:
        for name, options in FW_VARIANTS.items():
            if variants is None or name in variants:
                _print(setting, run_fw(bench, setting, name, options, threads))


def _print(setting: str, record: dict) -> None:
    test = record["test"]
    print(
        f"  {setting:10s} {record['name']:16s} test mean {mean(v[0] for v in test.values()):.3f}"
        f"  calib {record['calib_acc']:.3f}  chosen {record.get('chosen')}"
        f"  {record.get('seconds', '')}s",
        flush=True,
    )


def cli_check(bench: Bench, threads: int) -> dict:
    """The in-memory baselines are stock mergekit: compare them with `mergekit-yaml` runs
    (task_arithmetic lambda 0.3 and ties density 0.2 lambda 1.5 on the `all` pool), which
    also checks the lambda reuse in `merge`."""
    from mergekit.merge_methods import merge_state_dicts

    pool = SETTINGS["all"]["pool"]
    result = {}
    for method, params in (
        ("task_arithmetic", {"lambda": 0.3}),
        ("ties", {"lambda": 1.5, "density": 0.2}),
    ):
        lam = params["lambda"]
        per_model = {k: v for k, v in params.items() if k != "lambda"}
        recipe = {
            "merge_method": method,
            "base_model": str(zoo.CACHE / "base"),
            "models": [
                {
                    "model": str(zoo.CACHE / "experts" / e),
                    "parameters": {"weight": 1.0, **per_model},
                }
                for e in pool
            ],
            "parameters": {"lambda": lam},
            "dtype": "float32",
        }
        out = BENCH / "cli_check" / method
        seconds = mergekit_yaml(recipe, out, threads, out.parent / f"{method}.log")
        cli = load_state(out)
        full = {"weight": 1.0, **params}
        ours = merge(bench, method, pool, full)
        models = {"base": bench.state("base"), **{e: bench.state(e) for e in pool}}
        with torch.no_grad():
            direct = merge_state_dicts(models, method, parameters=full, base="base")
        floats = [k for k in ours if ours[k].is_floating_point()]
        result[method] = {
            "params": params,
            "mergekit_yaml_seconds": round(seconds, 1),
            "max_abs_diff_vs_mergekit_yaml": max(
                float((cli[k] - ours[k]).abs().max()) for k in floats
            ),
            "max_abs_diff_vs_direct_call": max(
                float((direct[k] - ours[k]).abs().max()) for k in floats
            ),
        }
        print(f"check {method}: {result[method]}", flush=True)
    return result


# ---------------------------------------------------------------------------- report


def table(bench: Bench, setting: str) -> str:
    spec = SETTINGS[setting]
    targets = spec["targets"]
    names = ["base", *spec["pool"], *BASELINES, *FW_VARIANTS]
    head = "| model | " + " | ".join(targets) + " | mean | mean AUC | chosen on calib | wall s |"
    lines = [head, "|" + "---|" * (len(targets) + 5)]
    merges = [n for n in [*BASELINES, *FW_VARIANTS] if f"{setting}|{n}" in bench.runs]
    best = max(
        merges,
        key=lambda n: mean(bench.runs[f"{setting}|{n}"]["test"][t][0] for t in targets),
        default=None,
    )
    for name in names:
        record = bench.runs.get(f"{setting}|{name}")
        if record is None:
            cells = " | ".join("n/a" for _ in targets)
            lines.append(f"| {name} | {cells} | n/a | n/a | not run | |")
            continue
        accs = [record["test"][t][0] for t in targets]
        aucs = [record["test"][t][2] for t in targets]
        label = f"expert {name}" if name in spec["pool"] else name
        chosen = record.get("chosen") or {}
        if name in FW_VARIANTS:
            chosen = {k: v for k, v in chosen.items() if k != "variant"}
        chosen = ", ".join(f"{k}={v}" for k, v in chosen.items())
        seconds = record.get("seconds", "")
        cells = " | ".join(f"{a:.3f}" for a in accs)
        m = f"{mean(accs):.3f}"
        if name == best:
            m = f"**{m}**"
        lines.append(f"| {label} | {cells} | {m} | {mean(aucs):.3f} | {chosen} | {seconds} |")
    return "\n".join(lines)


def fw_table(setting: str) -> str | None:
    """Mean FW coefficient per vertex over tensors, and the final calibration loss."""
    spec = SETTINGS[setting]
    labels = ["base", *spec["pool"]]
    lines = []
    for name in FW_VARIANTS:
        path = BENCH / "fw" / setting / name / "bench_meta.json"
        if not path.exists():
            continue
        summary = json.loads(path.read_text()).get("plan_summary") or {}
        coeff = summary.get("mean_coefficient")
        if not coeff:
            continue
        cells = " | ".join(f"{coeff.get(label, float('nan')):.3f}" for label in labels)
        loss = " → ".join(f"{x:.3f}" for x in [*summary["loss"], summary["final_loss"]])
        lines.append(f"| {name} | {cells} | {loss} |")
    if not lines:
        return None
    head = "| FW run | " + " | ".join(labels) + " | calibration loss per iteration → final |"
    return "\n".join([head, "|" + "---|" * (len(labels) + 2), *lines])


def report(bench: Bench) -> str:
    parts = []
    for setting, spec in SETTINGS.items():
        if not any(k.startswith(f"{setting}|") for k in bench.runs):
            continue
        parts.append(f"#### `{setting}`: {spec['about']}\n\n{table(bench, setting)}\n")
        coefficients = fw_table(setting)
        if coefficients:
            parts.append(
                f"Mean FW coefficient per vertex (over tensors), `{setting}`:\n\n{coefficients}\n"
            )
    zoo_meta = json.loads((zoo.CACHE / "zoo.json").read_text())
    lines = ["| expert | fine-tune s | own-task test acc | base acc |", "|---|---|---|---|"]
    for task, meta in zoo_meta["experts"].items():
        acc = meta.get("test_accuracy")
        base = meta.get("base_test_accuracy")
        lines.append(
            f"| {task} | {meta['train_seconds']} | "
            f"{'-' if acc is None else f'{acc:.3f}'} | {'-' if base is None else f'{base:.3f}'} |"
        )
    parts.append("#### The zoo\n\n" + "\n".join(lines) + "\n")
    check = bench.runs.get("cli_check")
    if check:
        items = [
            f"`{m}` {c['params']}: max abs diff {c['max_abs_diff_vs_mergekit_yaml']:.1e} vs "
            f"`mergekit-yaml` ({c['mergekit_yaml_seconds']} s)"
            for m, c in check.items()
        ]
        parts.append("In-memory baselines vs stock `mergekit-yaml`: " + "; ".join(items) + ".\n")
    return "\n".join(parts)


def write_docs(text: str) -> None:
    doc = DOCS.read_text() if DOCS.exists() else f"# MiniLM benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"wrote {DOCS}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--no-fw", action="store_true", help="baselines only")
    parser.add_argument("--variants", nargs="*", choices=list(FW_VARIANTS), help="FW rows to run")
    parser.add_argument("--check-cli", action="store_true", help="mergekit-yaml vs in-memory TA")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS.name}")
    args = parser.parse_args(argv)
    zoo.threads(args.threads)
    bench = Bench()
    if args.check_cli:
        bench.runs["cli_check"] = cli_check(bench, args.threads)
        bench.save()
    for setting in args.settings:
        run_setting(bench, setting, fw=not args.no_fw, threads=args.threads, variants=args.variants)
    text = report(bench)
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
