#!/usr/bin/env bash
# The package test: installs the build tree to a temporary prefix, builds an
# outside project against it with find_package(qforge) and runs it (the
# runtime-only program, deploy, custom_loop, and every public header alone),
# checks that the runtime-only binaries hold no autograd, nn, trainer or
# yaml-cpp code, then builds the runtime-only part again with
# add_subdirectory(qforge).
#   run.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d /tmp/qforge-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
jobs=$(nproc)

echo "== cmake --install $build --prefix $work/prefix"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
echo "== find_package(qforge): configure and build the consumer"
cmake -S "$src/tests/package/consumer" -B "$work/consumer" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DQFORGE_EXAMPLES="$src/examples" -DQFORGE_DATA_ROOT="$src" | grep header_check
cmake --build "$work/consumer" -j"$jobs" >/dev/null
"$work/consumer/runtime_only" "$work/tiny.h5"
head -c 784 /dev/urandom >"$work/image.raw"
"$work/consumer/deploy" "$work/tiny.h5" "$work/image.raw"
if "$work/consumer/deploy" "$work/tiny.h5" "$src/README.md" 2>/dev/null; then
  echo "deploy accepted a file that is not an image" >&2
  exit 1
fi
for bin in runtime_only deploy; do
  leaked=$(nm -C "$work/consumer/$bin" | grep -E -c 'qforge::(autograd|nn|trainers|cli)::|YAML::' || true)
  echo "$bin: $leaked symbols from autograd, nn, trainers or yaml-cpp"
  [ "$leaked" -eq 0 ]
done
"$work/consumer/custom_loop" --fp32-steps 60 --qat-steps 40 --out "$work/custom_loop.h5"

echo "== add_subdirectory(qforge): the runtime-only part"
cmake -S "$src/tests/package/consumer" -B "$work/subdir" -DCMAKE_BUILD_TYPE=Release \
  -DQFORGE_SOURCE="$src" -DQFORGE_EXAMPLES="$src/examples" >/dev/null
cmake --build "$work/subdir" -j"$jobs" >/dev/null
"$work/subdir/runtime_only" "$work/tiny2.h5"
"$work/subdir/deploy" "$work/tiny2.h5" "$work/image.raw"
echo "package test passed"
