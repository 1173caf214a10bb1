#!/usr/bin/env bash
# The GPU-path figures (compiled MFU, checkpointed HFU, decode MBU, kernels), in one call of at most 8 minutes
# on one H100 or H200, compiles included.
#
#   bash scripts/gpu_settle.sh OUT_DIR [TARBALL]
#
# Steps, most valuable first (name: what; limit in s). Each runs under its own `timeout`, all under a budget
# (GPU_SETTLE_BUDGET_S, default 450 s, plus about 10 s for the summary): a step gets min(its limit, what is
# left), so the script ends by itself inside 8 minutes; a step the budget cannot reach is "skipped".
#   env                 nvidia-smi, python / torch / CUDA versions, git commit -> env.txt         30
#   gpus                flopbench gpus --json                                                     30
#   sdpa_probe          benchmarks/sdpa_probe.py: causal and band masks x MHA and GQA at T=8192:
#                       backend, kernel names, time, peak memory                                  60
#   train_compiled_b8   gpt2-xl B=8 T=1024, compiled, train_step, no checkpointing (MFU >= 50 %) 200
#   train_full_eager    gpt2-xl B=8 T=1024, eager, full checkpointing (HFU >= 50 %)               60
#   infer_gpt2xl        infer --compile gpt2-xl B=8 P=512 G=64 (decode MBU >= 70 %)              120
#   infer_llama3_8l     infer --compile llama3-8b cut to 8 layers, B=1 P=2048 G=64                 90
#   moe_qwen3_2l        qwen3-30b-a3b cut to 2 layers (experts), T=4096, every checkpointing       60
#   gemma2_2l           gemma2-9b cut to 2 layers (windows, soft caps), T=8192                      60
#   explain             flopbench explain of the compiled step, only where that command exists     90
#   fp8_tensorwise_b8   gpt2-xl B=8, compiled, train_step, --dtype fp8 --fp8-recipe tensorwise     120
#   fp8_rowwise_b8      the same with the rowwise recipe (beside train_compiled_b8's bf16)       120
#   train_compiled_b16  gpt2-xl B=16, compiled, train_step, bf16                                 200
#   fp8_tensorwise_b16  gpt2-xl B=16, compiled, fp8 tensorwise (beside train_compiled_b16)         120
#   fp8_rowwise_b16     the same, rowwise; each fp8 step only where torchao imports               120
# The fp8 steps need torchao (TORCHAO_VERSION=... scripts/build_gpu_wheels.sh); without it each is "skipped".
# GPU_SETTLE_STEPS (comma-separated names) runs only those steps.
#
# Nothing finished is lost: after every step OUT_DIR is packed into TARBALL (default OUT_DIR.tgz; written to a
# temporary name, then renamed). OUT_DIR ends with steps.tsv (per step: status, wall s, exit code), runs.log,
# one <step>.json per step that prints a JSON document, the run folders, and summary.md (per step: status,
# wall time, and from its JSON the MFU, HFU, MBU, attention backend and kernel names;
# scripts/settle_summary.py). Through this workplace's device tool (only what is under $OUT comes back, at
# most 8 files: so only the tarball goes there):
#   scripts/build_gpu_wheels.sh   # here, once: the wheels the GPU image lacks, into .whl/
#   run(command="bash scripts/gpu_settle.sh /tmp/settle $OUT/settle.tgz", carry=[".whl"], timeout_s=560)
# then unpack the tarball into results/<gpu-name>/ and write the outcomes beside the targets in
# results/NOTES-gpu-perf.md.
#
# CPU smoke mode (FLOPBENCH_SMOKE=1): the same steps on the CPU with tiny shapes (overrides), no compiles, one
# checkpointing mode;
# tests/cli/test_gpu_settle.py runs it to prove the plumbing.
set -uo pipefail
work=${1:?usage: gpu_settle.sh OUT_DIR [TARBALL]}
tarball=${2:-${work%/}.tgz}
budget=${GPU_SETTLE_BUDGET_S:-450}
only=${GPU_SETTLE_STEPS:-}
cd "$(dirname "$0")/.."
mkdir -p "$work" "$(dirname "$tarball")"
work=$(cd "$work" && pwd)
: > "$work/steps.tsv"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# The python that imports torch and flopbench (the GPU image's python3 is /opt/torch/.venv/bin/python3).
PY=
for candidate in ${PYTHON:-} python3 python /opt/torch/.venv/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch, flopbench.cli" 2>/dev/null; then
    PY=$(command -v "$candidate"); break
  fi
done
if [ -z "$PY" ]; then echo "gpu_settle: no python here imports torch and flopbench" >&2; exit 2; fi
if ! "$PY" -c "import fvcore" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/flopbench-site \
    .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/flopbench-site"
fi

# shellcheck source=scripts/gpu_steps.sh
source scripts/gpu_steps.sh  # pack, step, failures: one budgeted, packed step each

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
jstep() {  # jstep NAME LIMIT_S COMMAND...: a step whose stdout (a JSON document) goes to OUT_DIR/NAME.json
  local name=$1 limit=$2; shift 2
  want "$name" && step "$name" "$limit" bash -c 'out=$1; shift; exec "$@" > "$out"' _ "$work/$name.json" "$@"
}
unavailable() {  # a placeholder step whose command this flopbench lacks
  want "$1" && printf '%s\t%s\t0\t-\n' "$1" "skipped (not in this flopbench)" >> "$work/steps.tsv"
}

fb=("$PY" -m flopbench)
if [ "${FLOPBENCH_SMOKE:-0}" = 1 ]; then
  device=cpu; compile=(); gemm=(--no-gemm); every_ckpt=(--checkpointing none)  # 1 row of each, not 7
  small=(--n-layer 2 --d-model 64 --n-head 2 --n-kv-head 1 --head-dim 32 --d-ff 128 --vocab-size 256)
  xl=("${small[@]}" --seq-len 32 --warmup 0 --iters 1); b8=(--batch-size 2); b16=(--batch-size 4)
  infer_xl=("${small[@]}" --batch-size 2 --prompt-len 16 --gen-len 4 --warmup 0 --iters 1 --no-ceilings)
  infer_llama=("${small[@]}" --batch-size 1 --prompt-len 16 --gen-len 4 --warmup 0 --iters 1 --no-ceilings)
  moe=("${small[@]}" --n-experts 4 --top-k 2 --d-ff-expert 32 --seq-len 32 --warmup 0 --iters 1)
  gemma=("${small[@]}" --sliding-window 16 --seq-len 32 --warmup 0 --iters 1)
  probe=(--device cpu --seq-len 64 --window 16 --n-head 4 --n-kv-head 2 --head-dim 16 --iters 1)
else
  device=cuda; compile=(--compile); gemm=(); every_ckpt=(--checkpointing all)
  xl=(--seq-len 1024); b8=(--batch-size 8); b16=(--batch-size 16)
  infer_xl=(--batch-size 8 --prompt-len 512 --gen-len 64)
  infer_llama=(--n-layer 8 --batch-size 1 --prompt-len 2048 --gen-len 64 --no-ceilings)
  moe=(--n-layer 2 --seq-len 4096 --batch-size 1)
  gemma=(--n-layer 2 --seq-len 8192 --batch-size 1)
  probe=(--device cuda --seq-len 8192)
fi

if want env; then
  step env 30 bash -c '{ date -u +%Y-%m-%dT%H:%M:%SZ; nvidia-smi || echo "nvidia-smi: not available"
    "$0" -c "import sys, torch; print(\"python\", sys.version.split()[0], sys.executable); print(\"torch\", \
torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())"
    "$0" -m pip list 2>/dev/null | grep -iE "^(torch|triton|fvcore|torchao|pandas|nvidia-ml-py|numpy) "
    git rev-parse HEAD 2>/dev/null; } > "$1/env.txt" 2>&1' "$PY" "$work"
fi
jstep gpus 30 "${fb[@]}" gpus --json
jstep sdpa_probe 60 "$PY" benchmarks/sdpa_probe.py "${probe[@]}"
train=("${fb[@]}" run --model gpt2-xl --device "$device" "${xl[@]}" --json --out "$work")
jstep train_compiled_b8 200 "${train[@]}" "${compile[@]}" --modes train_step --checkpointing none "${b8[@]}" \
  "${gemm[@]}"
jstep train_full_eager 60 "${train[@]}" --checkpointing full "${b8[@]}" --no-gemm
jstep infer_gpt2xl 120 "${fb[@]}" infer --model gpt2-xl --device "$device" "${compile[@]}" "${infer_xl[@]}" \
  --json --out "$work"
jstep infer_llama3_8l 90 "${fb[@]}" infer --model llama3-8b --device "$device" "${compile[@]}" "${infer_llama[@]}" \
  --json --out "$work"
jstep moe_qwen3_2l 60 "${fb[@]}" run --model qwen3-30b-a3b --device "$device" "${moe[@]}" "${every_ckpt[@]}" \
  --no-gemm --json --out "$work"
jstep gemma2_2l 60 "${fb[@]}" run --model gemma2-9b --device "$device" "${gemma[@]}" "${every_ckpt[@]}" \
  --no-gemm --json --out "$work"
if "${fb[@]}" explain --help >/dev/null 2>&1; then
  jstep explain 90 "${fb[@]}" explain --model gpt2-xl --device "$device" "${xl[@]}" "${b8[@]}" "${compile[@]}" \
    --mode train_step --checkpointing none --json --out "$work"
else
  unavailable explain
fi
fp8_step() {  # fp8_step NAME RECIPE BATCH...: gpt2-xl's compiled train step in float8 (torchao), beside bf16's
  local name=$1 recipe=$2; shift 2
  if "$PY" -c "import torchao.float8" >/dev/null 2>&1; then
    jstep "$name" 120 "${train[@]}" "${compile[@]}" --dtype fp8 --fp8-recipe "$recipe" --modes train_step \
      --checkpointing none "$@" --no-gemm
  else
    unavailable "$name"
  fi
}
fp8_step fp8_tensorwise_b8 tensorwise "${b8[@]}"
fp8_step fp8_rowwise_b8 rowwise "${b8[@]}"
jstep train_compiled_b16 200 "${train[@]}" "${compile[@]}" --modes train_step --checkpointing none "${b16[@]}" \
  --no-gemm
fp8_step fp8_tensorwise_b16 tensorwise "${b16[@]}"
fp8_step fp8_rowwise_b16 rowwise "${b16[@]}"

timeout 30 "$PY" scripts/settle_summary.py "$work" > "$work/summary.md"
pack
cat "$work/summary.md"
echo "gpu_settle: $failures failed step(s) in $SECONDS s; results in $work, packed in $tarball"
exit $((failures > 0))
