"""`make bench` = `python -m benchmarks.run`: zoo, experiments, then docs/benchmarks.md.

    python -m benchmarks.run                         # everything (cached steps are skipped)
    python -m benchmarks.run --only zoo              # the re-routing zoo (benchmarks/rzoo.py)
    python -m benchmarks.run --only irrelevance,relevance,foreign   # (= scaling)
    python -m benchmarks.run --only memory,lmo,walltime
    python -m benchmarks.run --only report           # rewrite docs/ from cached results
    python -m benchmarks.run --only vision           # ViT tier (own zoo): docs section
Flags: --fresh recomputes cached experiment results; --rebuild-zoo retrains the zoo;
--methods 'TIES;FW-box' and --sizes 4,16 restrict an experiment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings

EXPERIMENTS = ["irrelevance", "relevance", "foreign"]
STEPS = ["zoo", *EXPERIMENTS, "memory", "lmo", "walltime", "report", "vision"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(STEPS), help="comma list of: " + ", ".join(STEPS) + ", scaling"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached experiment results")
    parser.add_argument("--rebuild-zoo", action="store_true")
    parser.add_argument("--methods", default="", help="experiments: semicolon-separated names")
    parser.add_argument("--sizes", default="", help="experiments: pool sizes, e.g. 4,16")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    if "scaling" in steps:
        steps = [s for s in steps if s != "scaling"] + EXPERIMENTS
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

    from benchmarks import rzoo

    exps = [s for s in EXPERIMENTS if s in steps]
    if "zoo" in steps or (exps and not (rzoo.ZOO / "zoo.json").exists()):
        t0 = time.perf_counter()
        rzoo.build(force=args.rebuild_zoo)
        if "zoo" in steps:
            record("zoo", t0)
    if exps:
        from benchmarks import rzoo_bench

        chosen = [m.strip() for m in args.methods.split(";") if m.strip()] or None
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()] or None
        for exp in exps:  # one timing per experiment
            t0 = time.perf_counter()
            rzoo_bench.run([exp], chosen=chosen, fresh=args.fresh, sizes=sizes)
            if not chosen and not sizes:
                record(exp, t0)
    for name, module in (("memory", "memory"), ("lmo", "lmo_speed"), ("walltime", "walltime")):
        if name in steps:
            import importlib

            t0 = time.perf_counter()
            importlib.import_module(f"benchmarks.{module}").run()
            record(name, t0)
    if "report" in steps:
        from benchmarks import rzoo_report

        rzoo_report.write()
    if "vision" in steps:  # last: it appends/replaces its own block of docs/benchmarks.md
        from benchmarks import vision, vision_report

        t0 = time.perf_counter()
        vision_report.write(vision.run())
        record("vision", t0)


if __name__ == "__main__":
    main()
