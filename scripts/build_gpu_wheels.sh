#!/usr/bin/env bash
# Build the wheels the GPU image lacks into .whl/, here, on a machine that reaches the package registry:
# fvcore and its source-only dependencies (pure Python, about 120 KB in all). gpu_check.sh and gpu_settle.sh
# install them there when fvcore is missing. .whl/ is git-ignored and travels with the device tool's `carry`.
#
# torchao (fp8 training) is not in the GPU image either, and its wheels are built for one torch release: to
# carry it, name the torchao release made for the image's torch (2.11 as of 2026-11) in TORCHAO_VERSION, and
# its binary wheel for the image's python 3.12 on x86-64 is downloaded too:
#   TORCHAO_VERSION=X.Y.Z scripts/build_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip wheel -q --no-deps fvcore iopath yacs termcolor -w .whl
if [ -n "${TORCHAO_VERSION:-}" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "torchao==$TORCHAO_VERSION"
fi
ls .whl
