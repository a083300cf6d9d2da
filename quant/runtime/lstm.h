#pragma once
// The int8 LSTM of the runtime, in two modes.
//
// Static (QAT-matched): every value is an integer between the two GEMMs of a
// step, so the QAT model in eval mode (which calls qlstm()) and the exported
// model compute the same codes on every ISA. Per layer and step t:
//   acc_x = GEMM(x_t codes, W_ih codes) + bias      int32, scale s_x * s_wih[r]
//   acc_h = GEMM(h_t-1 codes, W_hh codes)           int32, scale s_h * s_whh[r]
//   gate code  = clamp(rounding_shift(acc_x * m_x[r] + acc_h * m_h[r], shift[r]) + zp_k, qmin_k, qmax_k)
//                (qmath's add rule with two accumulators, one shared shift)
//   i, f, o    = sigmoid table[gate code], g = tanh table[gate code]   (Q0.15)
//   c          = sat16(rounding_shift(f * c << (15 - e) + i * g, 30 - e))   (int16, scale 2^-e)
//   h code     = requantize(o * tanh_table[c], 2^-30 / s_h, zp_h, qmin_h, qmax_h)
// The gate tables hold round_half_even(2^15 * sigmoid or tanh of the gate
// code's real value), clamped to [0, 32767] (sigmoid) or [-32767, 32767]
// (tanh); the cell table the same tanh of c * 2^-e for every int16 c. The
// initial state is h = the zero point (real 0) and c = 0. docs/quantization.md
// gives the reasons and a worked step.
//
// Dynamic (PyTorch's quantize_dynamic): int8 weights, float biases and state;
// each call quantizes its input sequence, and each step the hidden state, to
// u8 with its own min/max range, and the gates run in float.
//
// Depends on core and the kernels only, like the rest of the runtime.
#include <array>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "quant/runtime/ops.h"

namespace qforge::quant::runtime {

/// Gate outputs and the cell update use Q0.15 fixed point.
constexpr int kLstmGateBits = 15;

/// One static int8 LSTM layer (gate order i, f, g, o, as PyTorch).
struct QLstmLayer {
  /// Input features I and hidden size H.
  int64_t input_size = 0, hidden_size = 0;
  /// The input projection: a linear QLayer [4H, I] whose input qparams are the
  /// layer input's and whose bias is b_ih + b_hh at scale s_x * s_wih[r].
  /// Its output, requant and bounds fields are unused (the gates combine the
  /// int32 accumulators).
  QLayer ih;
  /// The recurrent projection [4H, H], input qparams = `hidden`, no bias.
  QLayer hh;
  /// The hidden state's codes: the layer's output and the recurrent input.
  ActQParams hidden;
  /// The gate pre-activations' codes, in order i, f, g, o.
  std::array<ActQParams, 4> gate;
  /// The cell state is int16 at scale 2^-cell_frac_bits, in [0, 15].
  int32_t cell_frac_bits = 11;

  // ---- derived by finalize_qlstm_layer (files do not store them) ----
  /// Per gate row r of 4H: the two accumulators' multipliers over one shift.
  std::vector<AddMultipliers> gate_mult;
  /// Q0.15 sigmoid (i, f, o) or tanh (g) of each gate code's real value.
  std::array<std::array<int16_t, 256>, 4> gate_table{};
  /// Q0.15 tanh(c * 2^-cell_frac_bits) for c in [-32768, 32767] (index c +
  /// 32768), shared between layers with the same cell_frac_bits.
  std::shared_ptr<const std::vector<int16_t>> cell_tanh;
  /// The multiplier of 2^-30 / hidden.scale (o * tanh(c) is Q0.30).
  QuantMultiplier hidden_mult;
};

/// The cell_frac_bits that fit |c| <= absmax in int16: the largest e in
/// [0, 15] with absmax * 2^e <= 32767 (15 for absmax 0). ValueError for a
/// negative or non-finite absmax.
int32_t lstm_cell_frac_bits(float absmax);

/// Quantizes a float LSTM layer (PyTorch's layout: w_ih [4H, I], w_hh [4H, H],
/// b_ih and b_hh [4H] or undefined) with per-row weight qparams, the input,
/// hidden and gate activation qparams and the cell format, then
/// finalize_qlstm_layer(). ValueError/ShapeError for any inconsistency.
QLstmLayer make_qlstm_layer(const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                            const WeightQParams& wq_ih, const WeightQParams& wq_hh, const ActQParams& input,
                            const ActQParams& hidden, const std::array<ActQParams, 4>& gates,
                            int32_t cell_frac_bits);
/// Checks the stored fields (sizes, qparams, cell format, and that the gate
/// sums cannot overflow int64) and computes the derived ones. Throws
/// ValueError naming the problem.
void finalize_qlstm_layer(QLstmLayer& layer);

/// Runs stacked static layers over u8 codes [N, T, I] (a 4-D [N, 1, T, I] is
/// read the same way), layer l + 1 reading layer l's hidden codes. Returns the
/// last layer's hidden codes for every step, u8 [N, T, H]. Batches run in
/// parallel. ShapeError/DTypeError for a wrong input; ValueError when a
/// layer's input qparams are not the previous layer's hidden qparams.
Tensor qlstm(const std::vector<QLstmLayer>& layers, const Tensor& x, const kernels::KernelTable* k = nullptr);

/// The last step of a sequence [N, T, H] (any dtype), as a new [N, H] tensor.
Tensor last_step(const Tensor& seq);

/// One dynamic LSTM layer: int8 weights, float biases (b_ih + b_hh).
struct DynamicLstmLayer {
  int64_t input_size = 0, hidden_size = 0;
  /// int8 codes [4H, I] and [4H, H] with per-row scales (the QLayers' input
  /// qparams are set per call; their bias, requant and output are unused).
  QLayer ih, hh;
  /// b_ih + b_hh [4H], float.
  std::vector<float> bias;
};
/// Quantizes float weights per row (symmetric int8, scale max|w| / 127).
DynamicLstmLayer make_dynamic_lstm_layer(const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                                         const Tensor& b_hh);
/// The u8 qparams a dynamic quantization uses for values in [lo, hi] (the
/// range widened to include 0): scale (hi - lo) / 255, zero point round(-lo /
/// scale); a zero range gives scale 1.
ActQParams dynamic_qparams(float lo, float hi);
/// Runs stacked dynamic layers over f32 [N, T, I] (or [N, 1, T, I]) with zero
/// initial states (h0, c0 undefined) or the given [L, N, H] ones; returns f32
/// [N, T, H]. When h_n and c_n are non-null they receive the final states
/// [L, N, H].
Tensor dynamic_lstm(const std::vector<DynamicLstmLayer>& layers, const Tensor& x, const Tensor& h0 = Tensor(),
                    const Tensor& c0 = Tensor(), Tensor* h_n = nullptr, Tensor* c_n = nullptr,
                    const kernels::KernelTable* k = nullptr);

/// A dynamic int8 linear layer: y = dequant(GEMM(quant(x), W codes)) + b, x
/// quantized per call.
struct DynamicLinear {
  QLayer w;
  std::vector<float> bias;
};
/// weight f32 [out, in], bias [out] or undefined.
DynamicLinear make_dynamic_linear(const Tensor& weight, const Tensor& bias);
/// f32 [N, in] -> f32 [N, out].
Tensor dynamic_linear(const DynamicLinear& layer, const Tensor& x, const kernels::KernelTable* k = nullptr);

}  // namespace qforge::quant::runtime
