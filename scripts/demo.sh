#!/usr/bin/env bash
# Installs missing dependencies, builds qforge, and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
# The demo, one recipe (recipes/mnist_qat_int8.yaml): quantization-aware
# training of mnist_cnn on the MNIST files committed in data/mnist: 2 FP32
# epochs, prepare_qat (Conv-BN-ReLU fused, int8 per-channel weights, uint8
# activations), 1 QAT epoch, then export to an int8 HDF5 file, reload, and
# evaluate the exported model on the test set, counting the outputs where it
# differs from the QAT model (0). About 4 minutes on 2 cores. Extra arguments
# go to `qforge train` (for example --set training.epochs=1).
./build/cli/qforge train recipes/mnist_qat_int8.yaml --out out/mnist_qat_int8 "$@"
# The exported file evaluated again on its own.
./build/cli/qforge eval out/mnist_qat_int8/mnist_cnn_int8.h5
