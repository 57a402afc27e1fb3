"""Held-out exact match of chosen real-tier merges through `mergekit-fw eval` (lm-eval).

    nice -n 10 python -m benchmarks.real.lmeval [--pool targets4] [--methods auto]

Writes one lm-eval generation task per target task (`real_<task>`, the 100 test inputs, the
prompt already rendered through the chat template, greedy, cut at `<|im_end|>`, at most the
longest answer's tokens + 1, exact match after stripping surrounding whitespace) into
$BENCH_CACHE/real/lm_eval_tasks, then runs one `mergekit-fw eval FIRST -c SECOND ...
--include-path THAT_FOLDER --device cpu --no-auto-compare` over the chosen setting of each
method (from results/merges*.json; merged again from its recipe when its output is gone).
Results: benchmarks/real/results/lmeval.json, beside the in-process figures of the same merges.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.real import lm, merges, tasks  # noqa: E402
from benchmarks.real.report import FW, best_baseline, load_merges, table  # noqa: E402

TASK_DIR = lm.CACHE / "lm_eval_tasks"

TEMPLATE = """task: real_{task}
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
num_fewshot: 0
generation_kwargs:
  until: ["<|im_end|>"]
  max_gen_toks: {tokens}
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    regexes_to_ignore: ["^\\\\s+", "\\\\s+$"]
metadata:
  version: 1.0
"""


def write_tasks() -> list[str]:
    """The lm-eval task folder of the 4 target tasks' test splits; their names."""
    tok = lm.load_tokenizer(lm.base_dir())
    TASK_DIR.mkdir(parents=True, exist_ok=True)
    names = []
    for t in tasks.TARGETS:
        pairs = tasks.splits(t)["test"]
        data = TASK_DIR / f"real_{t}.jsonl"
        data.write_text(
            "".join(
                json.dumps({"prompt": lm.prompt_text(tok, p), "answer": a}) + "\n" for p, a in pairs
            )
        )
        longest = max(
            len(tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]) for _, a in pairs
        )
        (TASK_DIR / f"real_{t}.yaml").write_text(
            TEMPLATE.format(task=t, data=data, tokens=longest + 1)
        )
        names.append(f"real_{t}")
    return names


def chosen(mg: dict, pool: str, method: str) -> tuple[dict, Path]:
    runs = mg["runs"][f"{pool}/{method}"]
    best = max(runs, key=lambda r: r["calib_mean"])
    tag = "_".join(f"{k}{v}" for k, v in best["setting"].items())
    return best, merges.ROOT / pool / f"{method}_{tag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default="targets4")
    parser.add_argument(
        "--methods",
        default="auto",
        help="comma-separated; auto: FW (FW defaults where they ran, else the earlier runs) "
        "and the best baseline (test mean)",
    )
    parser.add_argument("--out", type=Path, default=lm.RESULTS / "lmeval.json")
    args = parser.parse_args()
    mg = load_merges()
    names = write_tasks()
    folders, picked = [], {}
    methods = args.methods.split(",")
    if args.methods == "auto":
        tab = table(mg)[args.pool]
        # FW defaults (its budget with the best calibration mean) where it ran, else the
        # earlier step: quadratic / line-search runs
        fw = [m for m in ("fw_defaults", *reversed(FW)) if f"{args.pool}/{m}" in mg["runs"]][:1]
        methods = fw + [best_baseline(tab)[0]]
    for method in methods:
        run, folder = chosen(mg, args.pool, method)
        if not (folder / "out" / "config.json").exists():
            merges.run_command(
                merges.merge_argv(method, mg["pools"][args.pool], run["setting"], folder),
                folder / "merge_for_lmeval.log",
            )
        folders.append(folder / "out")
        picked[method] = run
    report = lm.CACHE / "lmeval" / args.pool / "fw_eval.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(merges.BIN / "mergekit-fw"), "eval", str(folders[0]),
            *(x for f in folders[1:] for x in ("-c", str(f))), "-t", ",".join(names),
            "--include-path", str(TASK_DIR), "--device", "cpu", "--no-auto-compare",
            "-o", str(report)]  # fmt: skip
    started = time.perf_counter()
    cost = merges.run_command(argv, report.parent / "eval.log")
    doc = json.loads(report.read_text())
    labels = [m["label"] for m in doc["models"]]
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result[args.pool] = {
        "command": " ".join(["mergekit-fw", *argv[1:]]),
        "lm_eval_version": doc.get("lm_eval_version"),
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": cost["peak_rss_mb"],
        "models": {},
    }
    for method, label in zip(picked, labels):
        per_task = {
            t: doc["runs"][label]["results"][f"real_{t}"]["exact_match,none"] for t in tasks.TARGETS
        }
        run = picked[method]
        result[args.pool]["models"][method] = {
            "setting": run["setting"],
            "lm_eval": per_task,
            "lm_eval_mean": sum(per_task.values()) / len(per_task),
            "in_process": run.get("test"),
            "in_process_mean": run.get("test_mean"),
            "eval_s": doc["seconds"].get(label),
        }
        print(f"{args.pool}/{method}: lm-eval {result[args.pool]['models'][method]['lm_eval_mean']:.3f}"
              f" (in-process {run.get('test_mean')})", flush=True)  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for f in folders:  # ~540 MB each
        import shutil

        shutil.rmtree(f, ignore_errors=True)


if __name__ == "__main__":
    main()
