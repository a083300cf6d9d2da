#pragma once
// QATLSTM: what prepare_qat() swaps an nn::LSTM for.
//
// It shares the float LSTM's parameters and simulates the runtime's static
// int8 LSTM (quant/runtime/lstm.h) per layer l:
//   - the weights through "weight_ih_fake_quant_l{l}" and
//     "weight_hh_fake_quant_l{l}" (the weight config: per gate row);
//   - the four gate pre-activations through "gate_fake_quant_l{l}_{i,f,g,o}"
//     and the hidden state, at every step, through "hidden_fake_quant_l{l}"
//     (the activation config, STE or LSQ), so the recurrent input is the
//     quantized h as in the runtime;
//   - the cell state's range in buffer "cell_absmax_l{l}" (the largest |c|
//     seen while the hidden quantizer observes), from which the int16 cell
//     format is chosen (lstm_cell_frac_bits). Gate outputs (Q0.15) and the
//     int16 cell are not simulated: they are finer than the 8-bit streams.
// The input is the codes of the quantizer that feeds the module (linked by
// prepare_qat along Sequential chains); the output is the last layer's
// hidden codes, so the next layer links to output_fake_quant().
// In eval mode it runs runtime::qlstm() on the input codes (exactly what the
// exported model computes), unless int8 eval is off or impossible
// (int8_blocker()), when it runs the float simulation.
#include <memory>
#include <string>
#include <vector>

#include "nn/rnn.h"
#include "quant/fake_quantize.h"
#include "quant/qconfig.h"
#include "quant/runtime/lstm.h"

namespace qforge::quant {

class QATLSTM : public nn::Module {
 public:
  /// Shares lstm's parameters (same names). ValueError when q is invalid or
  /// its weight config is per channel along an axis other than 0.
  QATLSTM(const nn::LSTM& lstm, const QConfig& q);
  /// As nn::LSTM::forward (zero initial states).
  autograd::Variable forward(const autograd::Variable& x) override;
  std::string extra_repr() const override;
  const nn::LSTMSpec& spec() const { return spec_; }
  const QConfig& qconfig() const { return qconfig_; }
  /// The last layer's hidden quantizer (the module's output codes), valid
  /// while that child is not replaced.
  FakeQuantize& output_fake_quant() const;
  /// Layer l's quantizers by role: "weight_ih", "weight_hh", "gate_i",
  /// "gate_f", "gate_g", "gate_o", "hidden". IndexError for others.
  FakeQuantize& quantizer(int64_t l, const std::string& role) const;
  /// The quantizer whose codes the input carries (held weakly; null: unknown).
  void set_input_quantizer(const std::shared_ptr<FakeQuantize>& q) { input_q_ = q; }
  std::shared_ptr<FakeQuantize> input_quantizer() const { return input_q_.lock(); }
  /// Eval through the int8 LSTM when possible (the default), else float.
  void set_int8_eval(bool on) { int8_eval_ = on; }
  /// "" when eval mode runs the int8 LSTM, else the reason it cannot.
  std::string int8_blocker();
  /// The runtime layers with the current weights and qparams (ValueError
  /// with int8_blocker()'s reason when there are none).
  std::vector<runtime::QLstmLayer> to_qlayers();

 private:
  autograd::Variable float_forward(const autograd::Variable& x);
  nn::LSTMSpec spec_;
  QConfig qconfig_;
  std::weak_ptr<FakeQuantize> input_q_;
  bool int8_eval_ = true;
};

}  // namespace qforge::quant
