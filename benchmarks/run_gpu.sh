#!/usr/bin/env bash
# Every GPU check of the project in one run, for a lent CUDA machine: the CUDA tests, then the GPU
# benchmarks (bench_gpu.py, then bench_models.py --device cuda --standard). One log, results beside it.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]     # default OUT_DIR: benchmarks/results
#
# Each step has its own time limit, so that one slow step cannot cost the others; the log records
# the device, the versions and each step's exit status.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/gpu_run.log"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
{
  echo "# $(date -u +%FT%TZ) commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi -L
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$LOG" 2>&1
step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "## $name: $*" >> "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "## $name: exit $? after $((SECONDS - start)) s" >> "$LOG"
}
step 80 gpu_tests "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
step 90 cuda_paths "$PY" -m pytest -q -p no:cacheprovider tests/robustness/test_gpu.py \
  tests/robustness/test_acceleration.py tests/attacks/test_early_stop.py tests/attacks/test_contract.py
step 220 bench_gpu "$PY" benchmarks/bench_gpu.py --repeats 2 --no-art-apgd --out "$OUT"
step 140 bench_models "$PY" benchmarks/bench_models.py --device cuda --standard --out "$OUT"
