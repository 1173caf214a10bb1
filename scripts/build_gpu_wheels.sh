#!/usr/bin/env bash
# Build the wheels the GPU image lacks (fvcore and its source-only dependencies) into .whl/, here, on a
# machine that reaches the package registry. gpu_check.sh installs them there when fvcore is missing.
# Pure-Python, about 120 KB in all; .whl/ is git-ignored and travels with the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip wheel -q --no-deps fvcore iopath yacs termcolor -w .whl
ls .whl
