#!/usr/bin/env bash
# Every GPU check of the project in one run, for a lent CUDA machine: the CUDA tests, then the GPU
# benchmarks (bench_models.py --device cuda --standard, bench_gpu.py). One log, results beside it.
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
{
  echo "# $(date -u +%FT%TZ) commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi -L
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$LOG" 2>&1
step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "## $name: $*" >> "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "## $name: exit $? after $((SECONDS - start)) s" >> "$LOG"
}
step 120 gpu_tests python -m pytest -q -p no:cacheprovider -m gpu tests
step 150 cuda_paths python -m pytest -q -p no:cacheprovider tests/robustness/test_gpu.py \
  tests/robustness/test_acceleration.py tests/attacks/test_early_stop.py tests/attacks/test_contract.py
step 200 bench_models python benchmarks/bench_models.py --device cuda --standard --out "$OUT"
step 300 bench_gpu python benchmarks/bench_gpu.py --out "$OUT"
