#!/usr/bin/env bash
# Installs missing dependencies, builds qforge, and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
# The demo: quantization-aware training of mnist_cnn on the MNIST files
# committed in data/mnist: 2 FP32 epochs, prepare_qat (Conv-BN-ReLU fused,
# int8 per-channel weights, uint8 activations), 1 QAT epoch, then export to
# an int8 HDF5 file, reload, and evaluate the exported model on the test set,
# counting the logits where it differs from the QAT model (0). About 4 minutes
# on 2 cores.
./build/examples/mnist_qat "$@"
# The exported file evaluated again by the int8 runtime alone (a binary that
# links no autograd, nn or trainers). With custom arguments, run it yourself
# with --model <out>/mnist_cnn_int8.h5.
if [[ $# -eq 0 ]]; then
  ./build/examples/mnist_int8_eval --model out/mnist_qat/mnist_cnn_int8.h5
fi
