#!/usr/bin/env bash
# Every GPU check of the project in one run, for a lent CUDA machine: the CUDA tests, then the GPU
# benchmarks (bench_gpu.py, then bench_models.py --device cuda --standard). One log, results beside it.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]     # default OUT_DIR: benchmarks/results
#   STEPS="bench_models bench_models_standard" bash benchmarks/run_gpu.sh   # only those steps
#
# All steps together take up to 11 minutes, more than one 10-minute device call: with a short
# device budget, run the steps a task needs (STEPS), the others in a second call.
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
STEPS=${STEPS:-gpu_tests cuda_paths bench_gpu bench_models bench_models_standard}
step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) echo "## $name: not in STEPS, skipped" >> "$LOG"; return ;; esac
  echo "## $name: $*" >> "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "## $name: exit $? after $((SECONDS - start)) s" >> "$LOG"
}
step 80 gpu_tests "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
step 90 cuda_paths "$PY" -m pytest -q -p no:cacheprovider tests/robustness/test_gpu.py \
  tests/robustness/test_acceleration.py tests/attacks/test_early_stop.py tests/attacks/test_contract.py
step 220 bench_gpu "$PY" benchmarks/bench_gpu.py --repeats 2 --no-art-apgd --out "$OUT"
# PGD-10 against the floor and memory: both architectures, bare and as the robustbench:/timm: sources return them
step 120 bench_models "$PY" benchmarks/bench_models.py --device cuda --out "$OUT" \
  --models preact-resnet18,robustbench:Wong2020Fast,timm-resnet50,timm:resnet50.a1_in1k
# the standard preset's images per second (AutoAttack's standard version, cascaded), written as models_cuda_standard
step 200 bench_models_standard "$PY" benchmarks/bench_models.py --device cuda --standard --repeats 1 \
  --models preact-resnet18,timm-resnet50 --tag standard --out "$OUT"
