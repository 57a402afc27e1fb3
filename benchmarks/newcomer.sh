#!/usr/bin/env bash
# A new user's first hour, measured: a fresh clone, the README's two set-up commands, then
# the bad inputs of the trials (issues 15 and 23) and a kill / resume.
# Usage: benchmarks/newcomer.sh [REPO] [DIR]   (defaults: this checkout, /tmp/newcomer)
#        NEWCOMER_ONLY=mistakes benchmarks/newcomer.sh - DIR   (DIR: a clone with .venv and
#        .demo already built; BIN=path/to/bin overrides DIR/.venv/bin)
# Writes DIR/newcomer_timings.txt: install, demo and test wall times, venv size, pytest
# summary; and DIR/mistakes.txt: per bad input, the exit status and last stderr line of
# `mergekit-fw check` and of `mergekit-yaml`, whether a traceback or an output folder appeared;
# then the kill / resume check.
set -euo pipefail
repo=${1:-$(git rev-parse --show-toplevel)}
dir=${2:-/tmp/newcomer}
only=${NEWCOMER_ONLY:-all}
if [ "$only" != mistakes ]; then
  rm -rf "$dir"
  git clone -q "$repo" "$dir"
fi
cd "$dir"
bin=${BIN:-$dir/.venv/bin}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
out="$dir/newcomer_timings.txt"
timed() {  # timed NAME COMMAND...: wall seconds of COMMAND, its output in DIR/NAME.log
  local name=$1 start end
  shift
  start=$(date +%s)
  "$@" >"$dir/$name.log" 2>&1
  end=$(date +%s)
  echo "$name: $((end - start)) s wall" >>"$out"
}
if [ "$only" != mistakes ]; then
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
fi

# -- the bad inputs, each through `mergekit-fw check` and the stock `mergekit-yaml` ---------
m="$dir/mistakes"
rm -rf "$m"
mkdir -p "$m"
report="$dir/mistakes.txt"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$report"
recipe=examples/yaml/fw_tiny.yaml
mk() {  # mk NAME SED-SCRIPT: the demo recipe with one mistake
  sed -e "$2" "$recipe" >"$m/$1.yaml"
}
mk typo_option 's/^  iterations: 8/  iteratons: 8/'
mk missing_model 's#\.demo/expert_sort#.demo/expert_srot#'
mk calib_yml 's#\.demo/calib\.yaml#.demo/calib.yml#'
mk dtype_float33 's/^dtype: float32/dtype: float33/'
mk duplicated_key 's/^  iterations: 8/  iterations: 8\n  iterations: 3/'
mk factors_with_box 's/^  seed: 0/  seed: 0\n  lora_mode: factors/'
mk null_option 's/^  seed: 0/  seed: 0\n  adapters:/'
mk top_level_typo '$a dtpye: float16'
cp -r .demo/expert_count "$m/expert_count_cut"
truncate -s 60000 "$m/expert_count_cut/model.safetensors"
mk truncated_weights "s#\\.demo/expert_count\$#$m/expert_count_cut#"
{ head -n 10 .demo/calib_add.jsonl; sed -n 11p .demo/calib_add.jsonl | cut -c1-30; } >"$m/calib_add.jsonl"
printf 'tasks:\n  reverse: %s\n  add: %s\n' "$dir/.demo/calib_reverse.jsonl" "$m/calib_add.jsonl" >"$m/calib.yaml"
mk broken_jsonl "s#\\.demo/calib\\.yaml#$m/calib.yaml#"
"$bin/python" - "$m" <<'EOF'
import shutil, sys
from safetensors.torch import load_file, save_file
folder = sys.argv[1] + "/expert_add_nan"
shutil.copytree(".demo/expert_add", folder)
state = load_file(folder + "/model.safetensors")
next(iter(state.values())).view(-1)[0] = float("nan")
save_file(state, folder + "/model.safetensors", metadata={"format": "pt"})
EOF
mk nan_candidate "s#\\.demo/expert_add\$#$m/expert_add_nan#"
for r in "$m"/*.yaml; do
  name=$(basename "$r" .yaml)
  [ "$name" = calib ] && continue
  set +e
  "$bin/mergekit-fw" check "$r" --distances >"$m/$name.check.out" 2>"$m/$name.check.err"
  check_rc=$?
  start=$(date +%s)
  "$bin/mergekit-yaml" "$r" "$m/out_$name" >"$m/$name.yaml.out" 2>"$m/$name.yaml.err"
  yaml_rc=$?
  set -e
  {
    echo "== $name"
    echo "  check: exit $check_rc, OK printed: $(grep -c '^OK:' "$m/$name.check.out"); $(tail -1 "$m/$name.check.err")"
    echo "  mergekit-yaml: exit $yaml_rc in $(($(date +%s) - start)) s, traceback: $(grep -c Traceback "$m/$name.yaml.err"), output folder: $([ -e "$m/out_$name" ] && echo yes || echo no); $(tail -1 "$m/$name.yaml.err")"
  } >>"$report"
done

# -- kill at t=1, resume, compare with an uninterrupted run --------------------------------
set +e
log="$m/kill.err"
set -m  # job control: a background job keeps SIGINT (Ctrl-C) instead of ignoring it
"$bin/mergekit-yaml" "$recipe" "$m/out_killed" 2>"$log" &
pid=$!
set +m
until grep -q '^FW t=1:' "$log" || ! kill -0 "$pid" 2>/dev/null; do sleep 1; done
kill -INT "$pid"
wait "$pid"
kill_rc=$?
"$bin/mergekit-yaml" "$recipe" "$m/out_killed" 2>"$m/resume.err"
resume_rc=$?
"$bin/mergekit-yaml" "$recipe" "$m/out_straight" 2>"$m/straight.err"
set -e
{
  echo "== kill at FW t=1 (SIGINT), then the same command"
  echo "  killed: exit $kill_rc; $(grep -h 'pre-pass state is kept' "$log" | head -1)"
  echo "  re-run: exit $resume_rc; $(grep -h 'Resuming the pre-pass' "$m/resume.err" | head -1)"
  if cmp -s "$m/out_killed/model.safetensors" "$m/out_straight/model.safetensors"; then
    echo "  resumed output identical to an uninterrupted run: yes"
  else
    echo "  resumed output identical to an uninterrupted run: NO"
  fi
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$report"
cat "$report"
