#pragma once
// Recurrent layers: nn::LSTM, with PyTorch's parameter names and layout so
// that weights can be compared with or imported from torch.nn.LSTM.
#include <array>
#include <string>

#include "core/rng.h"
#include "nn/module.h"

namespace qforge::nn {

/// Settings of an LSTM. The constructor throws ValueError for values
/// outside the stated ranges.
struct LSTMSpec {
  /// Features per step and hidden size, >= 1.
  int64_t input_size = 1, hidden_size = 1;
  /// Stacked layers, >= 1: layer l + 1 reads layer l's hidden states.
  int64_t num_layers = 1;
  /// Whether the layers have bias_ih_l* and bias_hh_l*.
  bool bias = true;
  /// Input [N, T, I] and output [N, T, H] when true (a single-channel image
  /// [N, 1, T, I] is also read as [N, T, I]: rows are steps); [T, N, I] and
  /// [T, N, H] when false, PyTorch's default.
  bool batch_first = false;
  /// forward() returns only the last step's hidden state of the last layer
  /// ([N, H]), the usual input of a classifier head; otherwise the output
  /// sequence.
  bool last_step_only = false;
};

/// x as [N, T, I] (batch first: a view, or a permuted copy for the
/// sequence-first layout); ShapeError unless x is a sequence of
/// spec.input_size features in spec's layout.
Variable lstm_batch_first(const LSTMSpec& spec, const Variable& x);
/// "I, H[, num_layers=L][, bias=false][, batch_first][, last_step_only]".
std::string lstm_repr(const LSTMSpec& spec);

/// A multi-layer LSTM. Parameters per layer l, PyTorch's names and layout:
/// weight_ih_l{l} [4H, I or H], weight_hh_l{l} [4H, H], bias_ih_l{l} and
/// bias_hh_l{l} [4H], gate rows in order i, f, g, o; all drawn from
/// U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does. Each layer runs as one recorded
/// op (autograd::lstm_layer).
class LSTM : public Module {
 public:
  explicit LSTM(const LSTMSpec& spec, Generator& gen = default_generator());
  /// The output sequence, or with last_step_only the last hidden state [N, H].
  Variable forward(const Variable& x) override;
  /// Everything a sequence gives.
  struct Result {
    /// Every step's hidden state of the last layer ([N, T, H] batch first,
    /// else [T, N, H]).
    Variable output;
    /// Final hidden and cell states of every layer, [num_layers, N, H].
    Variable h_n, c_n;
  };
  /// Runs the sequence from initial states h0 and c0 ([num_layers, N, H]
  /// each, or undefined for zeros). ShapeError names a wrong input or state.
  Result forward_full(const Variable& x, const Variable& h0 = Variable(), const Variable& c0 = Variable());
  const LSTMSpec& spec() const { return spec_; }
  std::string extra_repr() const override;
  /// The parameters of layer l: {weight_ih, weight_hh, bias_ih, bias_hh} (biases
  /// undefined without bias).
  std::array<Variable, 4> layer_params(int64_t l) const;

 private:
  LSTMSpec spec_;
};

}  // namespace qforge::nn
