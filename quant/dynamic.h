#pragma once
// Dynamic int8 quantization of an FP32-trained model, as PyTorch's
// quantize_dynamic: LSTM and Linear layers get int8 weights (per row,
// symmetric) ahead of time, and quantize their input per call from its own
// range; everything else stays float. No calibration, no QAT. The layers run
// the runtime's dynamic kernels (quant/runtime/lstm.h) and are inference-only
// (no gradients).
#include <memory>

#include "nn/layers.h"
#include "nn/rnn.h"
#include "quant/runtime/lstm.h"

namespace qforge::quant {

/// An nn::LSTM with int8 weights, run by runtime::dynamic_lstm. Same inputs and
/// outputs as the LSTM it was made from (its spec).
class DynamicLSTM : public nn::Module {
 public:
  explicit DynamicLSTM(const nn::LSTM& lstm);
  autograd::Variable forward(const autograd::Variable& x) override;
  std::string extra_repr() const override { return nn::lstm_repr(spec_); }

 private:
  nn::LSTMSpec spec_;
  std::vector<runtime::DynamicLstmLayer> layers_;
};

/// An nn::Linear with int8 weights, run by runtime::dynamic_linear. Input [..., in].
class DynamicLinear : public nn::Module {
 public:
  explicit DynamicLinear(const nn::Linear& linear);
  autograd::Variable forward(const autograd::Variable& x) override;
  std::string extra_repr() const override;

 private:
  runtime::DynamicLinear layer_;
};

/// Replaces every nn::LSTM (and, with `linear`, every nn::Linear) in the tree
/// with its dynamic int8 version, from the current float weights. Returns the
/// number of layers replaced. The model is meant for eval: call eval() first.
int64_t quantize_dynamic(nn::Module& root, bool linear = true);

}  // namespace qforge::quant
