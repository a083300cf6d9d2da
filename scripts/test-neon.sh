#!/usr/bin/env bash
# Cross-compiles the int8 kernels and their tests for AArch64 and runs them
# under qemu-aarch64: every NEON kernel against the scalar reference. Needs
# g++-aarch64-linux-gnu and qemu-user (scripts/install-deps.sh --neon).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --neon
cmake -S tests/neon -B build-neon -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" >/dev/null
cmake --build build-neon -j"$(nproc)" --target test_quant_kernels_neon
qemu-aarch64 build-neon/test_quant_kernels_neon "$@"
