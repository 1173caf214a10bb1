#!/usr/bin/env bash
# Shared by gpu_check.sh and gpu_perf.sh (sourced after `work`, `tarball` and `budget` are set):
#   pack: WORK_DIR -> TARBALL, atomically (a temporary name, then renamed), so a kill keeps what finished;
#   step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, budget left) with `timeout`, log to runs.log, pack;
#   a failure is counted in `failures` and does not stop the script. Each step appends one line to
#   WORK_DIR/steps.tsv: name, status (ok | failed | timed out | skipped), wall seconds, exit code.
pack() {  # WORK_DIR -> TARBALL, atomically
  tar czf "$tarball.part" -C "$(dirname "$work")" "$(basename "$work")" && mv -f "$tarball.part" "$tarball"
}

failures=0
step() {  # step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, budget left), log, pack; a failure does not stop
  local name=$1 limit=$2; shift 2
  local left=$((budget - SECONDS - 10))  # - the 10 s `timeout -k` may add
  if [ "$left" -lt 10 ]; then
    echo "== $name: SKIPPED (budget of ${budget} s spent)" | tee -a "$work/runs.log"; failures=$((failures + 1))
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 - >> "$work/steps.tsv"; pack; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s): $*" | tee -a "$work/runs.log"
  local started=$SECONDS code=0 status=ok
  timeout -k 10 "$limit" "$@" >>"$work/runs.log" 2>&1 || code=$?
  if [ "$code" -ne 0 ]; then
    status=failed
    if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
      status="timed out"; echo "   TIMED OUT after ${limit} s" | tee -a "$work/runs.log"
    fi
    echo "   FAILED (exit $code)" | tee -a "$work/runs.log"; failures=$((failures + 1))
  fi
  echo "   $((SECONDS - started)) s" | tee -a "$work/runs.log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - started))" "$code" >> "$work/steps.tsv"
  pack
}
