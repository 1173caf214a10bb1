#!/usr/bin/env bash
# Performance variant of gpu_check.sh (issue 9): gpt2-xl, T=1024, bf16, on one GPU, best settings first.
#   bash scripts/gpu_perf.sh OUT_DIR
# Not yet run anywhere: about 6-8 minutes on an H100 is an estimate (three torch.compile runs of gpt2-xl
# dominate). Run it in a session of its own, or after gpu_check.sh only if enough device time is left.
# Each step's prediction is in results/NOTES-gpu-perf.md; write the outcome beside it afterwards.
set -uo pipefail
out=${1:?usage: gpu_perf.sh OUT_DIR}
model=${GPU_PERF_MODEL:-gpt2-xl}
device=${GPU_PERF_DEVICE:-cuda}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run() { echo "== $*"; python3 -m flopbench run --model "$model" --device "$device" --seq-len 1024 --pad-vocab 64 \
        --out "$out" "$@" 2>>"$out/stderr.log" | tail -12; }
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
# 1. eager, checkpointing none and full, B=8 (also measures the GEMM ceiling)
run --batch-size 8 --checkpointing both
# 2. compiled, no checkpointing (the >= 50 % MFU target), then with full checkpointing (HFU >= 50 %)
run --batch-size 8 --checkpointing none --compile --no-gemm
run --batch-size 8 --checkpointing full --compile --no-gemm
# 3. where the time goes: kernel table of the compiled step (inductor's FX graph cache reuses step 2's graphs)
python3 benchmarks/profile_step.py --model "$model" --device "$device" --batch-size 8 --seq-len 1024 \
  --pad-vocab 64 --compile --top 30 --out "$out/profile_${model}_compiled.txt" > /dev/null 2>>"$out/stderr.log"
echo "gpu_perf: results in $out"
