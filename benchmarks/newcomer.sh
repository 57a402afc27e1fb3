#!/usr/bin/env bash
# A new user's first hour, measured: a fresh clone, then the README's two set-up commands.
# Usage: benchmarks/newcomer.sh [REPO] [DIR]   (defaults: this checkout, /tmp/newcomer)
# Writes DIR/newcomer_timings.txt: install, demo and test wall times, venv size, pytest summary.
set -euo pipefail
repo=${1:-$(git rev-parse --show-toplevel)}
dir=${2:-/tmp/newcomer}
rm -rf "$dir"
git clone -q "$repo" "$dir"
cd "$dir"
out="$dir/newcomer_timings.txt"
timed() {  # timed NAME COMMAND...: wall seconds of COMMAND, its output in DIR/NAME.log
  local name=$1 start end
  shift
  start=$(date +%s)
  "$@" >"$dir/$name.log" 2>&1
  end=$(date +%s)
  echo "$name: $((end - start)) s wall" >>"$out"
}
{
  echo "commit: $(git rev-parse --short HEAD)  date: $(date -u +%FT%TZ)"
  echo "machine: $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out"
timed install make install
echo "venv size: $(du -sh .venv | cut -f1)" >>"$out"
timed demo make demo
timed test make test
echo "pytest: $(grep -E '(passed|failed|error)' test.log | tail -1)" >>"$out"
cat "$out"
