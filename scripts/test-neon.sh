#!/usr/bin/env bash
# Cross-compiles for AArch64 and runs under qemu-aarch64:
#  1. the int8 kernels' tests: every NEON kernel against the scalar reference;
#  2. the runtime sample (tests/neon/runtime_sample.cpp): a whole int8 graph
#     through the runtime with the NEON kernels, whose output hash must equal
#     the x86 build's (build/tests/runtime_sample, built here if missing).
# Needs g++-aarch64-linux-gnu and qemu-user (scripts/install-deps.sh --neon).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --neon
cmake -S tests/neon -B build-neon -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" >/dev/null
cmake --build build-neon -j"$(nproc)" --target test_quant_kernels_neon runtime_sample
qemu-aarch64 build-neon/test_quant_kernels_neon "$@"

if [ ! -x build/tests/runtime_sample ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" --target runtime_sample
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
host=$(cd "$work" && "$OLDPWD/build/tests/runtime_sample")
arm=$(cd "$work" && qemu-aarch64 "$OLDPWD/build-neon/runtime_sample")
echo "x86:     ${host//$'\n'/ | }"
echo "aarch64: ${arm//$'\n'/ | }"
host_hash=$(grep '^output hash' <<<"$host")
arm_hash=$(grep '^output hash' <<<"$arm")
grep -q 'kernels neon equal the reference' <<<"$arm" || { echo "the NEON run did not use NEON kernels, or they differ" >&2; exit 1; }
[ -n "$host_hash" ] && [ "$host_hash" = "$arm_hash" ] || { echo "NEON runtime output differs from x86" >&2; exit 1; }
echo "runtime sample: the NEON build under qemu equals the x86 build ($arm_hash)"
