#!/bin/sh
# Memory and time of a mergekit start (init: ties) vs the base start, 4 candidates of the
# ~66M-parameter bf16 model (benchmarks/bigmodel.py); one fresh process each.
# Writes benchmarks/results/start_cost.jsonl.   PYTHONPATH=. sh benchmarks/start_cost.sh
set -e
mkdir -p benchmarks/results
: > benchmarks/results/start_cost.jsonl
for mode in fw fw_init_ties ties; do
  python -m benchmarks.memchild "$mode" 4 "$(mktemp -d)/out" | tail -1 >> benchmarks/results/start_cost.jsonl
done
cat benchmarks/results/start_cost.jsonl
