#!/usr/bin/env bash
# Installs missing dependencies, builds qforge, and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
# The demo: quantization-aware training of mnist_cnn on the MNIST files
# committed in data/mnist: 2 FP32 epochs, prepare_qat (Conv-BN-ReLU fused,
# int8 per-channel weights, uint8 activations), 1 QAT epoch, and the
# fake-quant (int8-simulated) test accuracy. About 3 minutes on 2 cores.
# The int8 export and its evaluation join when the int8 runtime lands.
./build/examples/mnist_qat "$@"
