#!/usr/bin/env bash
# Installs missing dependencies, builds qforge with its tests, and runs the
# whole default test suite (everything not labelled "long"), then the NEON
# kernel tests cross-compiled for AArch64 under qemu (scripts/test-neon.sh).
# Exits non-zero when any test fails. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DQFORGE_BUILD_TESTS=ON >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build -j"$jobs" --output-on-failure --label-exclude long "$@"
bash scripts/test-neon.sh
