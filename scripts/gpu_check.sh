#!/usr/bin/env bash
# GPU validation in one call (single-GPU machine, about 6-8 minutes on an H100):
#   the test suite (GPU tests included), the peak table and detected GPU, then `flopbench run` for
#   gpt2 .. gpt2-xl at T=1024, bf16, checkpointing none and full (eager), gpt2-xl compiled, and a
#   Llama-shaped run (llama3-8b cut to 4 layers: GQA, SwiGLU, RMSNorm, RoPE; T=4096, B=1).
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# Writes under OUT_DIR: env.txt (nvidia-smi, pip versions), pytest.log, gpus.json, one folder per run
# (rows.jsonl, rows.csv, environment.json), runs.log and summary.md. Commit OUT_DIR as
# results/<gpu-name>/ afterwards.
#
# fvcore is source-only on PyPI, so a GPU image without it gets it from wheels built beforehand, on a
# machine with the registry:  pip wheel --no-deps fvcore iopath yacs termcolor -w .whl
# If .whl/ exists and fvcore is missing, they are installed into a private folder first.
#
# Through this workplace's device tool (it returns at most 8 files from $OUT, so pack the folder):
#   scripts/build_gpu_wheels.sh   # here, once
#   run(command="bash scripts/gpu_check.sh /tmp/gc; tar czf $OUT/gpu_check.tgz -C /tmp gc", carry=[".whl"], timeout_s=540)
# then unpack the tarball into results/<gpu-name>/ and commit it.
#
# For a CPU smoke test of this script:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_MODELS=tiny GPU_CHECK_LLAMA_ARGS= bash scripts/gpu_check.sh /tmp/gc
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR}
device=${GPU_CHECK_DEVICE:-cuda}
models=${GPU_CHECK_MODELS:-gpt2 gpt2-medium gpt2-large gpt2-xl}
compile_model=${GPU_CHECK_COMPILE_MODEL-gpt2-xl}
seq=${GPU_CHECK_SEQ_LEN:-1024}
batch=${GPU_CHECK_BATCH:-8}
llama_args=${GPU_CHECK_LLAMA_ARGS-"--model llama3-8b --n-layer 4 --seq-len 4096 --batch-size 1"}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c "import fvcore" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/flopbench-site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/flopbench-site"
fi

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  python3 -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|fvcore|iopath|pandas|nvidia-ml-py|triton|numpy) "
  git rev-parse HEAD 2>/dev/null || true
} > "$out/env.txt" 2>&1

failures=0
step() {  # step NAME COMMAND...: run, log, remember failures, go on
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/runs.log"
  local started=$SECONDS
  "$@" >>"$out/runs.log" 2>&1 || { echo "   FAILED (exit $?)" | tee -a "$out/runs.log"; failures=$((failures + 1)); }
  echo "   $((SECONDS - started)) s" | tee -a "$out/runs.log"
}

step pytest bash -c "python3 -m pytest -q -p no:cacheprovider > '$out/pytest.log' 2>&1"
tail -3 "$out/pytest.log"
step gpus bash -c "python3 -m flopbench gpus --json > '$out/gpus.json'"
for model in $models; do
  step "run $model" python3 -m flopbench run --model "$model" --device "$device" --seq-len "$seq" \
    --batch-size "$batch" --checkpointing both --pad-vocab 64 --out "$out"
done
if [ -n "$compile_model" ]; then
  step "run $compile_model compiled" python3 -m flopbench run --model "$compile_model" --device "$device" \
    --seq-len "$seq" --batch-size "$batch" --checkpointing none --pad-vocab 64 --compile --no-gemm --out "$out"
fi
if [ -n "$llama_args" ]; then
  # shellcheck disable=SC2086  # word splitting of the argument string is intended
  step "run $llama_args" python3 -m flopbench run $llama_args --device "$device" --checkpointing both --no-gemm --out "$out"
fi

python3 - "$out" <<'PY' > "$out/summary.md"
import sys
from flopbench.output.records import read_rows
df = read_rows(sys.argv[1])
cols = ["model", "compile", "mode", "checkpointing", "status", "time_ms.median_ms", "time_ms.iqr_ms", "tokens_per_s",
        "achieved_tflops", "mfu", "hfu", "mfu_simple", "gemm_tflops", "peak_tflops", "hardware_flops_note"]
print("# gpu_check summary\n\n```")
print(df[[c for c in cols if c in df.columns]].to_string(index=False))
print("```")
PY
cat "$out/summary.md"
echo "gpu_check: $failures failed step(s); results in $out"
exit $((failures > 0))
