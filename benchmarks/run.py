"""`make bench` = `python -m benchmarks.run`: run the steps, then render docs/benchmarks.md.

    python -m benchmarks.run                         # everything (cached steps are skipped)
    python -m benchmarks.run --only zoo              # build the re-routing zoo (benchmarks/zoo/)
    python -m benchmarks.run --only irrelevance,relevance,foreign   # its experiments
    python -m benchmarks.run --only memory,lmo,walltime             # benchmarks/systems/
    python -m benchmarks.run --only vision           # the ViT tier (benchmarks/vision/)
    python -m benchmarks.run --only report           # results/zoo.json from the zoo's cache
Every step writes its results to benchmarks/results/; the run ends by rendering the whole
page from them (`python -m benchmarks.report`, which can also be run alone). The MiniLM and
LoRA tiers have their own commands (docs/benchmarks_minilm.md, docs/benchmarks_lora.md).
Flags: --fresh recomputes cached experiment results; --rebuild-zoo retrains the zoo;
--methods 'TIES;FW-box, init auto' and --sizes 4,16 restrict an experiment; --no-plots.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
import warnings

EXPERIMENTS = ["irrelevance", "relevance", "foreign"]
SYSTEMS = {"memory": "memory", "lmo": "lmo_speed", "walltime": "walltime"}
STEPS = ["zoo", *EXPERIMENTS, *SYSTEMS, "vision", "report"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(STEPS), help="comma list of: " + ", ".join(STEPS)
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached experiment results")
    parser.add_argument("--rebuild-zoo", action="store_true")
    parser.add_argument("--methods", default="", help="experiments: semicolon-separated names")
    parser.add_argument("--sizes", default="", help="experiments: pool sizes, e.g. 4,16")
    parser.add_argument("--no-plots", action="store_true", help="leave docs/bench_*.png alone")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {STEPS}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("mergekit_fw").setLevel(logging.WARNING)
    from benchmarks.common import CACHE

    log = CACHE / "results" / "steps.json"
    log.parent.mkdir(parents=True, exist_ok=True)

    def record(name, t0):  # re-read first: steps may run in parallel processes
        seconds = json.loads(log.read_text()) if log.exists() else {}
        seconds[name] = time.perf_counter() - t0
        log.write_text(json.dumps(seconds, indent=1))

    exps = [s for s in EXPERIMENTS if s in steps]
    if "zoo" in steps or exps:
        from benchmarks.zoo import build as rzoo

        if "zoo" in steps or not (rzoo.ZOO / "zoo.json").exists():
            t0 = time.perf_counter()
            rzoo.build(force=args.rebuild_zoo)
            if "zoo" in steps:
                record("zoo", t0)
    if exps:
        from benchmarks.zoo import bench as rzoo_bench

        chosen = [m.strip() for m in args.methods.split(";") if m.strip()] or None
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()] or None
        for exp in exps:  # one timing per experiment
            t0 = time.perf_counter()
            rzoo_bench.run([exp], chosen=chosen, fresh=args.fresh, sizes=sizes)
            if not chosen and not sizes:
                record(exp, t0)
    if exps or "report" in steps:
        from benchmarks.zoo import build as rzoo
        from benchmarks.zoo import report as zoo_report

        if (rzoo.ZOO / "zoo.json").exists():  # else: results/zoo.json stays as committed
            zoo_report.summarise()
    for name, module in SYSTEMS.items():
        if name in steps:
            t0 = time.perf_counter()
            importlib.import_module(f"benchmarks.systems.{module}").run()
            record(name, t0)
    if "vision" in steps:
        from benchmarks.vision import bench as vision

        t0 = time.perf_counter()
        vision.run()
        record("vision", t0)
    from benchmarks import report

    report.main(["--no-plots"] if args.no_plots else [])


if __name__ == "__main__":
    main()
