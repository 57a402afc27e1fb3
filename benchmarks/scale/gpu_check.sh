#!/usr/bin/env bash
# The CUDA path end to end, for a machine with a GPU (not run by CI or `make test`).
# From the repository root, with the venv built (`make install`, a CUDA build of torch):
#   bash benchmarks/scale/gpu_check.sh [LAYERS ...]      (default: 8 32)
# For each depth: a bf16 forward + backward, stock mergekit TIES, and frank_wolfe in memory
# and out of core (2 iterations, step: quadratic) with the math on cuda; peak
# torch.cuda.max_memory_allocated, host peak RSS and seconds per run go to
# benchmarks/results/scale_gpu.json (one JSON line per run).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/scale_gpu.json
export PYTHONPATH=. SCALE_DEVICE=cuda HF_HUB_OFFLINE=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
: > "$OUT"
DEPTHS=${*:-8 32}
for layers in $DEPTHS; do
  for run in "fwdbwd" "ties" \
      "fw prepass=in_memory step=quadratic init=base iterations=2" \
      "fw prepass=out_of_core step=quadratic init=base iterations=2"; do
    set -- $run
    mode=$1
    shift
    "$PY" -m benchmarks.scale.child "$mode" "$layers" "$@" 2>/dev/null | sed -n 's/^RESULT //p' | tee -a "$OUT"
  done
done
echo "wrote $OUT"
