#!/usr/bin/env bash
# Performance variant of gpu_check.sh: gpt2-xl, T=1024, bf16, on one GPU, best settings first.
#
#   bash scripts/gpu_perf.sh WORK_DIR [TARBALL]
#
# Time: every step runs under its own `timeout`, all of them under a budget (GPU_PERF_BUDGET_S, default 540 s),
# a step getting min(its limit, what is left), so the script ends by itself inside a 10-minute call. Limits (s):
# eager both 60, compiled none 200, compiled full 200, explain 80 (sum 540). Not yet run to the end:
# on an H200 the eager step took 27 s, and compiling gpt2-xl's forward and backward more than 100 s, so expect
# about 8-9 minutes, the two torch.compile runs dominating (the explain step may get what is left of the
# budget only). Run it in a session of its own (the device tool gives 15 minutes per session, 10 per call).
# After every step WORK_DIR is packed into TARBALL (default WORK_DIR.tgz), so a kill from outside keeps every
# finished step. Through the device tool:
#   run(command="bash scripts/gpu_perf.sh /tmp/gp $OUT/gpu_perf.tgz", carry=[".whl"], timeout_s=600)
# Each step's prediction is in results/NOTES-gpu-perf.md; write the outcome beside it afterwards.
set -uo pipefail
work=${1:?usage: gpu_perf.sh WORK_DIR [TARBALL]}
tarball=${2:-${work%/}.tgz}
model=${GPU_PERF_MODEL:-gpt2-xl}
device=${GPU_PERF_DEVICE:-cuda}
budget=${GPU_PERF_BUDGET_S:-540}
cd "$(dirname "$0")/.."
mkdir -p "$work" "$(dirname "$tarball")"
work=$(cd "$work" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# shellcheck source=scripts/gpu_steps.sh
source scripts/gpu_steps.sh  # pack, step, failures: one budgeted, packed step each
flop=(python3 -m flopbench run --model "$model" --device "$device" --seq-len 1024 --pad-vocab 64 --out "$work")

nvidia-smi > "$work/nvidia-smi.txt" 2>&1 || true
pack
# 1. eager, checkpointing none and full, B=8 (also measures the GEMM ceiling)
step "eager both" 60 "${flop[@]}" --batch-size 8 --checkpointing both
# 2. compiled, no checkpointing (the >= 50 % MFU target), then with full checkpointing (HFU >= 50 %)
step "compiled none" 200 "${flop[@]}" --batch-size 8 --checkpointing none --compile --no-gemm
step "compiled full" 200 "${flop[@]}" --batch-size 8 --checkpointing full --compile --no-gemm
# 3. where the time goes: `flopbench explain` of the compiled step, classes of kernels and the waterfall
#    (inductor's FX graph cache reuses step 2's graphs)
step "explain" 80 python3 -m flopbench explain --model "$model" --device "$device" --batch-size 8 --seq-len 1024 \
  --pad-vocab 64 --compile --out "$work"
echo "gpu_perf: $failures failed step(s) in $SECONDS s; results in $work, packed in $tarball"
exit $((failures > 0))
