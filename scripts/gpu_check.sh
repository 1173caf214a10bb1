#!/usr/bin/env bash
# GPU validation in one call of at most 10 minutes (one GPU):
#   the GPU tests (pytest -m gpu), the detected GPU and its peaks, then `flopbench run` for gpt2 and gpt2-xl at
#   T=1024, B=8, bf16, checkpointing none and full (eager, with the GEMM ceiling), gpt2 compiled, and a
#   Llama-shaped run (llama3-8b cut to 4 layers: GQA, SwiGLU, RMSNorm, RoPE; T=4096, B=1), and the newer
#   families cut to 2 layers with every checkpointing mode (none, full, selective): qwen3-30b-a3b (128 experts,
#   top 8, QK-norm, head_dim 128; T=4096) and gemma2-9b (a sliding and a full layer, soft caps, sandwich norms;
#   T=8192, past the 4096 window). Compiled gpt2-xl is gpu_perf.sh's: compiling its forward and backward took
#   over 100 s on an H200.
#
#   bash scripts/gpu_check.sh WORK_DIR [TARBALL]
#
# Time: every step runs under its own `timeout`, and all steps under a budget (GPU_CHECK_BUDGET_S, default
# 500 s): a step gets min(its limit, what is left of the budget), so with the summary (30 s at most) the script
# ends by itself inside a 10-minute call. Limits (s): pytest 120, gpus 20, gpt2 50, gpt2-xl 80, gpt2 compiled 90,
# llama 50, each family 60 (sum 530; the budget stops the last one early if the others ran long). Measured on
# an H200 (2026-11): pytest 50-70, gpus 5, gpt2 20, gpt2-xl 27, gpt2 compiled 56, llama 21: about 3.5 minutes
# (an H100 is a little slower); the family runs have not run on a GPU yet.
#
# Nothing finished is lost: after every step WORK_DIR is packed into TARBALL (default WORK_DIR.tgz; written to
# a temporary name, then renamed), so a kill from outside still leaves every finished step in the tarball.
# WORK_DIR holds env.txt (nvidia-smi, versions), pytest.log, gpus.json, one folder per run (rows.jsonl,
# rows.csv, environment.json; names of [A-Za-z0-9._-] only), runs.log and summary.md.
#
# Through this workplace's device tool (one H100, 10 minutes per call, 15 per session; at most 8 files come
# back from $OUT, so only the tarball goes there):
#   scripts/build_gpu_wheels.sh   # here, once: fvcore and its source-only dependencies as wheels in .whl/
#   run(command="bash scripts/gpu_check.sh /tmp/gc $OUT/gpu_check.tgz", carry=[".whl"], timeout_s=600)
# then unpack the tarball into results/<gpu-name>/ and commit it.
#
# CPU smoke test:  GPU_CHECK_DEVICE=cpu GPU_CHECK_MODELS=tiny GPU_CHECK_SEQ_LEN=64 GPU_CHECK_COMPILE_MODEL= GPU_CHECK_LLAMA_ARGS= \
#                  GPU_CHECK_PYTEST=0 GPU_CHECK_FAMILIES="--model qwen3-30b-a3b --n-layer 1 --seq-len 64 \
#                  --d-model 256 --vocab-size 1024 --warmup 1 --iters 2" bash scripts/gpu_check.sh /tmp/gc
set -uo pipefail
work=${1:?usage: gpu_check.sh WORK_DIR [TARBALL]}
tarball=${2:-${work%/}.tgz}
device=${GPU_CHECK_DEVICE:-cuda}
models=${GPU_CHECK_MODELS:-gpt2 gpt2-xl}
compile_model=${GPU_CHECK_COMPILE_MODEL-gpt2}
seq=${GPU_CHECK_SEQ_LEN:-1024}
batch=${GPU_CHECK_BATCH:-8}
llama_args=${GPU_CHECK_LLAMA_ARGS-"--model llama3-8b --n-layer 4 --seq-len 4096 --batch-size 1"}
families=${GPU_CHECK_FAMILIES-"--model qwen3-30b-a3b --n-layer 2 --seq-len 4096 --batch-size 1;--model gemma2-9b \
--n-layer 2 --seq-len 8192 --batch-size 1"}  # ';'-separated argument strings, one run each
budget=${GPU_CHECK_BUDGET_S:-500}
cd "$(dirname "$0")/.."
mkdir -p "$work" "$(dirname "$tarball")"
work=$(cd "$work" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c "import fvcore" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/flopbench-site \
    .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/flopbench-site"
fi

# shellcheck source=scripts/gpu_steps.sh
source scripts/gpu_steps.sh  # pack, step, failures: one budgeted, packed step each

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  python3 -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, \
    'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|fvcore|iopath|pandas|nvidia-ml-py|triton|numpy) "
  git rev-parse HEAD 2>/dev/null || true
} > "$work/env.txt" 2>&1
pack

if [ "${GPU_CHECK_PYTEST:-1}" = 1 ]; then
  step "pytest -m gpu" 120 bash -c "python3 -m pytest -q -p no:cacheprovider -m gpu -ra > '$work/pytest.log' 2>&1"
  tail -3 "$work/pytest.log"
fi
step gpus 20 bash -c "python3 -m flopbench gpus --json > '$work/gpus.json'"
for model in $models; do
  limit=50; [ "$model" = gpt2-xl ] && limit=80
  step "run $model" "$limit" python3 -m flopbench run --model "$model" --device "$device" --seq-len "$seq" \
    --batch-size "$batch" --checkpointing both --pad-vocab 64 --out "$work"
done
if [ -n "$compile_model" ]; then
  step "run $compile_model compiled" 90 python3 -m flopbench run --model "$compile_model" --device "$device" \
    --seq-len "$seq" --batch-size "$batch" --checkpointing none --pad-vocab 64 --compile --no-gemm --out "$work"
fi
if [ -n "$llama_args" ]; then
  # shellcheck disable=SC2086  # word splitting of the argument string is intended
  step "run $llama_args" 50 python3 -m flopbench run $llama_args --device "$device" --checkpointing both --no-gemm \
    --out "$work"
fi

IFS=';' read -ra family_runs <<< "$families"
for args in "${family_runs[@]}"; do
  # shellcheck disable=SC2086  # word splitting of the argument string is intended
  step "run $args" 60 python3 -m flopbench run $args --device "$device" --checkpointing all --no-gemm --out "$work"
done

timeout 30 python3 - "$work" <<'PY' > "$work/summary.md"
import sys
from flopbench.output.records import read_rows
df = read_rows(sys.argv[1])
cols = ["model", "compile", "mode", "checkpointing", "status", "time_ms.median_ms", "tokens_per_s", "achieved_tflops",
        "mfu", "hfu", "hfu_causal", "mfu_simple", "hfu_simple", "mfu_vs_clock", "mfu_vs_gemm", "gemm_tflops",
        "telemetry.sm_clock_mhz.median", "telemetry.power_w", "throttled", "telemetry.joules_per_token",
        "peak_memory_bytes", "hardware_flops_note"]
print("# gpu_check summary\n\n```")
print(df[[c for c in cols if c in df.columns]].to_string(index=False))
print("```")
PY
pack
cat "$work/summary.md"
echo "gpu_check: $failures failed step(s) in $SECONDS s; results in $work, packed in $tarball"
exit $((failures > 0))
