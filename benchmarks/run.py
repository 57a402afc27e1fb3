"""`make bench` = `python -m benchmarks.run`: zoo, experiments, then docs/benchmarks.md.

    python -m benchmarks.run                         # everything (cached steps are skipped)
    python -m benchmarks.run --only zoo
    python -m benchmarks.run --only irrelevance,relevance,noisy   # (= scaling)
    python -m benchmarks.run --only memory,lmo,walltime
    python -m benchmarks.run --only report           # rewrite docs/ from cached results
    python -m benchmarks.run --only vision           # ViT tier (own zoo): docs section
Flags: --fresh recomputes cached scaling results; --rebuild-zoo retrains the zoo.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings

STEPS = [
    "zoo",
    "irrelevance",
    "relevance",
    "noisy",
    "memory",
    "lmo",
    "walltime",
    "report",
    "vision",
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(STEPS), help="comma list of: " + ", ".join(STEPS) + ", scaling"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached scaling results")
    parser.add_argument("--rebuild-zoo", action="store_true")
    parser.add_argument("--methods", default="", help="scaling: semicolon-separated method names")
    parser.add_argument("--full", action="store_true", help="scaling: extra FW variants")
    parser.add_argument("--sizes", default="", help="scaling: pool sizes, e.g. 4,16")
    parser.add_argument(
        "--calib", type=int, default=0, help="scaling: calibration samples per task (default 16)"
    )
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    if "scaling" in steps:
        steps = [s for s in steps if s != "scaling"] + ["irrelevance", "relevance", "noisy"]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {STEPS}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.calib:
        os.environ["BENCH_CALIB"] = str(args.calib)
    warnings.filterwarnings("ignore")
    logging.getLogger("mergekit_fw").setLevel(logging.WARNING)
    from benchmarks.common import CACHE

    log = CACHE / "results" / "steps.json"
    log.parent.mkdir(parents=True, exist_ok=True)

    def record(name, t0):  # re-read first: steps may run in parallel processes
        seconds = json.loads(log.read_text()) if log.exists() else {}
        seconds[name] = time.perf_counter() - t0
        log.write_text(json.dumps(seconds, indent=1))

    from benchmarks import zoo

    needs_zoo = any(s in steps for s in ("irrelevance", "relevance", "noisy", "walltime"))
    if "zoo" in steps or (needs_zoo and not (CACHE / "zoo" / "zoo.json").exists()):
        t0 = time.perf_counter()
        zoo.build(force=args.rebuild_zoo)
        if "zoo" in steps:
            record("zoo", t0)
    scaling = [s for s in ("irrelevance", "relevance", "noisy") if s in steps]
    if scaling:
        from benchmarks import scaling as sc

        t0 = time.perf_counter()
        chosen = [m.strip() for m in args.methods.split(";") if m.strip()] or None
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()] or None
        sc.run(scaling, chosen=chosen, fresh=args.fresh, full=args.full, sizes=sizes)
        suffix = f" (calib {args.calib})" if args.calib else ""
        record("scaling:" + "+".join(scaling) + suffix, t0)
    for name, module in (("memory", "memory"), ("lmo", "lmo_speed"), ("walltime", "walltime")):
        if name in steps:
            import importlib

            t0 = time.perf_counter()
            importlib.import_module(f"benchmarks.{module}").run()
            record(name, t0)
    if "report" in steps:
        from benchmarks import report

        report.write()
    if "vision" in steps:  # last: it appends/replaces its own block of docs/benchmarks.md
        from benchmarks import vision, vision_report

        t0 = time.perf_counter()
        vision_report.write(vision.run())
        record("vision", t0)


if __name__ == "__main__":
    main()
