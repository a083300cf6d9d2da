// The runtime's LSTM: the static integer cell (QAT-matched) and the dynamic
// mode. The arithmetic is written out in lstm.h.
#include "quant/runtime/lstm.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "core/error.h"
#include "core/parallel.h"

namespace qforge::quant::runtime {

namespace {

constexpr int32_t kQ15Max = (1 << kLstmGateBits) - 1;  // 32767

int16_t q15(double v, int32_t lo) {
  const double r = std::nearbyint(std::ldexp(v, kLstmGateBits));
  return static_cast<int16_t>(std::clamp<double>(r, lo, kQ15Max));
}

double sigmoid_d(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

/// The shared tanh table of one cell format (built once per format).
std::shared_ptr<const std::vector<int16_t>> cell_tanh_table(int32_t e) {
  static std::mutex mutex;
  static std::map<int32_t, std::shared_ptr<const std::vector<int16_t>>> tables;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = tables[e];
  if (!slot) {
    auto t = std::make_shared<std::vector<int16_t>>(65536);
    for (int32_t c = -32768; c <= 32767; ++c) (*t)[c + 32768] = q15(std::tanh(std::ldexp(c, -e)), -kQ15Max);
    slot = std::move(t);
  }
  return slot;
}

/// Per-row symmetric int8 scales max|w| / 127 (a zero row gets scale 1).
WeightQParams symmetric_rows(const Tensor& w) {
  WeightQParams q;
  q.qmin = -127;
  q.qmax = 127;
  const int64_t R = w.size(0), K = w.numel() / std::max<int64_t>(1, R);
  const float* p = w.data<float>();
  for (int64_t r = 0; r < R; ++r) {
    float m = 0;
    for (int64_t k = 0; k < K; ++k) m = std::max(m, std::fabs(p[r * K + k]));
    QF_CHECK(std::isfinite(m)) << "dynamic quantization: weight row " << r << " is not finite";
    q.scale.push_back(m > 0 ? m / 127.0f : 1.0f);
  }
  return q;
}

/// A projection QLayer: codes, per-row scales and (optional) bias at s_in * s_w.
QLayer projection(const Tensor& w, const Tensor& bias, const WeightQParams& wq, const ActQParams& in) {
  return quantize_layer_weights(w, bias, wq, in);
}

/// The int32 accumulators stay exact below this depth (as qgemm's check()).
constexpr int64_t kMaxDepth = (int64_t{1} << 31) / (255 * 128);

/// The u8 codes [rows, K] and the int32 accumulators [rows, 4H] of one GEMM
/// in the int32 output mode.
void gemm32(const kernels::KernelTable& t, const QLayer& L, const uint8_t* a, int64_t rows, int32_t a_zero_point,
            int32_t* out, bool with_bias) {
  kernels::QGemmParams p;
  p.M = rows;
  p.N = L.out_channels;
  p.K = L.in_channels;
  p.a = a;
  p.lda = L.in_channels;
  p.a_zero_point = a_zero_point;
  p.b = L.weight.data();
  p.ldb = L.in_channels;
  p.bias = with_bias ? L.bias.data() : nullptr;
  p.c32 = out;
  p.ldc = L.out_channels;
  p.b_packed = L.packed_weights(t, 0);
  t.qgemm(p);
}

/// x as [N, T, I] (accepting [N, 1, T, I]); returns {N, T, I}.
std::array<int64_t, 3> sequence_dims(const Tensor& x, const char* who) {
  QF_CHECK_SHAPE(x.ndim() == 3 || (x.ndim() == 4 && x.size(1) == 1))
      << who << ": input must be [N, T, I] (or [N, 1, T, I]), got " << x.desc();
  const int o = x.ndim() - 3;
  return {x.size(0), x.size(o + 1), x.size(o + 2)};
}

}  // namespace

int32_t lstm_cell_frac_bits(float absmax) {
  QF_CHECK(std::isfinite(absmax) && absmax >= 0) << "LSTM cell range: |c| max must be finite and >= 0, got " << absmax;
  int32_t e = 15;
  while (e > 0 && static_cast<double>(absmax) * std::ldexp(1.0, e) > 32767.0) --e;
  return e;
}

QLstmLayer make_qlstm_layer(const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                            const WeightQParams& wq_ih, const WeightQParams& wq_hh, const ActQParams& input,
                            const ActQParams& hidden, const std::array<ActQParams, 4>& gates,
                            int32_t cell_frac_bits) {
  QF_CHECK_SHAPE(w_ih.ndim() == 2 && w_hh.ndim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0 &&
                 w_hh.size(0) == w_ih.size(0) && w_hh.size(1) * 4 == w_ih.size(0))
      << "make_qlstm_layer: weights must be [4H, I] and [4H, H], got " << w_ih.desc() << " and " << w_hh.desc();
  const int64_t H4 = w_ih.size(0);
  for (const Tensor* b : {&b_ih, &b_hh})
    QF_CHECK_SHAPE(!b->defined() || (b->dtype() == DType::f32 && b->numel() == H4))
        << "make_qlstm_layer: biases must be f32 [" << H4 << "], got " << b->desc();
  Tensor bias;
  if (b_ih.defined() || b_hh.defined()) {
    bias = Tensor::zeros({H4});
    float* pb = bias.data<float>();
    for (const Tensor* b : {&b_ih, &b_hh})
      if (b->defined())
        for (int64_t r = 0; r < H4; ++r) pb[r] += b->data<float>()[r];
  }
  QLstmLayer L;
  L.input_size = w_ih.size(1);
  L.hidden_size = H4 / 4;
  L.ih = projection(w_ih, bias, wq_ih, input);
  L.hh = projection(w_hh, Tensor(), wq_hh, hidden);
  L.hidden = hidden;
  L.gate = gates;
  L.cell_frac_bits = cell_frac_bits;
  finalize_qlstm_layer(L);
  return L;
}

void finalize_qlstm_layer(QLstmLayer& L) {
  const int64_t H = L.hidden_size, I = L.input_size, H4 = 4 * H;
  QF_CHECK(H >= 1 && I >= 1 && I < kMaxDepth && H < kMaxDepth)
      << "LSTM layer: sizes must be in [1, " << kMaxDepth << ") (exact int32 sums), got input " << I << ", hidden "
      << H;
  QF_CHECK(L.ih.in_channels == I && L.ih.out_channels == H4 && L.hh.in_channels == H && L.hh.out_channels == H4 &&
           static_cast<int64_t>(L.ih.weight.size()) == H4 * I && static_cast<int64_t>(L.hh.weight.size()) == H4 * H &&
           static_cast<int64_t>(L.ih.weight_scale.size()) == H4 &&
           static_cast<int64_t>(L.hh.weight_scale.size()) == H4 && static_cast<int64_t>(L.ih.bias.size()) == H4)
      << "LSTM layer: weight, scale or bias arrays do not match input " << I << " and hidden " << H;
  QF_CHECK(L.cell_frac_bits >= 0 && L.cell_frac_bits <= 15)
      << "LSTM layer: cell_frac_bits " << L.cell_frac_bits << " is outside [0, 15]";
  L.ih.input.check("LSTM input");
  L.hidden.check("LSTM hidden state");
  L.hh.input = L.hidden;
  L.hh.bias.assign(static_cast<size_t>(H4), 0);
  for (int k = 0; k < 4; ++k) L.gate[k].check("LSTM gate");
  L.gate_mult.clear();
  for (int64_t r = 0; r < H4; ++r) {
    const float sx = L.ih.weight_scale[r], sh = L.hh.weight_scale[r];
    QF_CHECK(std::isfinite(sx) && sx > 0 && std::isfinite(sh) && sh > 0)
        << "LSTM layer: weight scales of gate row " << r << " are " << sx << " and " << sh;
    const double sg = L.gate[r / H].scale;
    const AddMultipliers m = add_multipliers_for(static_cast<double>(L.ih.input.scale) * sx / sg,
                                                 static_cast<double>(L.hidden.scale) * sh / sg);
    // Both accumulators are int32 (saturated) and both multipliers below
    // 2^31: each product is below 2^62 and their sum fits int64.
    L.gate_mult.push_back(m);
  }
  for (int k = 0; k < 4; ++k) {
    const ActQParams& q = L.gate[k];
    for (int32_t c = 0; c < 256; ++c) {
      const int32_t cc = std::clamp(c, q.qmin, q.qmax);
      const double v = static_cast<double>(dequantize_value(cc, q.scale, q.zero_point));
      L.gate_table[k][c] = k == 2 ? q15(std::tanh(v), -kQ15Max) : q15(sigmoid_d(v), 0);
    }
  }
  L.cell_tanh = cell_tanh_table(L.cell_frac_bits);
  L.hidden_mult = quantize_multiplier(std::ldexp(1.0, -30) / static_cast<double>(L.hidden.scale));
}

namespace {

/// One static layer over codes [n, T, I] of batch rows [n0, n1), writing
/// hidden codes [n, T, H]. Scratch is per call.
void qlstm_rows(const QLstmLayer& L, const uint8_t* x, uint8_t* out, int64_t n_rows, int64_t T,
                const kernels::KernelTable& t) {
  const int64_t H = L.hidden_size, H4 = 4 * H, I = L.input_size;
  std::vector<int32_t> acc_x(static_cast<size_t>(n_rows * T * H4)), acc_h(static_cast<size_t>(n_rows * H4), 0);
  gemm32(t, L.ih, x, n_rows * T, L.ih.input.zero_point, acc_x.data(), true);
  (void)I;
  std::vector<uint8_t> h(static_cast<size_t>(n_rows * H), static_cast<uint8_t>(L.hidden.zero_point));
  std::vector<int32_t> c(static_cast<size_t>(n_rows * H), 0);
  const int32_t e = L.cell_frac_bits;
  const int16_t* th = L.cell_tanh->data() + 32768;
  for (int64_t s = 0; s < T; ++s) {
    // At step 0 every h code is the zero point: acc_h is exactly 0.
    if (s > 0) gemm32(t, L.hh, h.data(), n_rows, L.hidden.zero_point, acc_h.data(), false);
    for (int64_t n = 0; n < n_rows; ++n) {
      const int32_t* ax = acc_x.data() + (n * T + s) * H4;
      const int32_t* ah = acc_h.data() + n * H4;
      int32_t* cn = c.data() + n * H;
      uint8_t* hn = h.data() + n * H;
      uint8_t* on = out + (n * T + s) * H;
      for (int64_t j = 0; j < H; ++j) {
        int32_t v[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t r = k * H + j;
          const ActQParams& q = L.gate[k];
          const int32_t code = requantize_add(ax[r], ah[r], L.gate_mult[r], q.zero_point, q.qmin, q.qmax);
          v[k] = L.gate_table[k][code];
        }
        const int64_t sum = (static_cast<int64_t>(v[1]) * cn[j] << (15 - e)) + static_cast<int64_t>(v[0]) * v[2];
        const int64_t cell = std::clamp<int64_t>(rounding_shift(sum, 30 - e), -32768, 32767);
        cn[j] = static_cast<int32_t>(cell);
        const int32_t prod = v[3] * static_cast<int32_t>(th[cell]);
        const auto code = static_cast<uint8_t>(
            requantize(prod, L.hidden_mult, L.hidden.zero_point, L.hidden.qmin, L.hidden.qmax));
        hn[j] = code;
        on[j] = code;
      }
    }
  }
}

/// Splits the batch into contiguous pieces run in parallel (rows are
/// independent sequences); fn(n0, n1).
void over_batch(int64_t N, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t pieces = std::min<int64_t>(N, 4 * static_cast<int64_t>(num_threads()));
  if (pieces <= 1) {
    fn(0, N);
    return;
  }
  parallel_chunks(pieces, [&](int64_t p) { fn(N * p / pieces, N * (p + 1) / pieces); });
}

}  // namespace

Tensor qlstm(const std::vector<QLstmLayer>& layers, const Tensor& x, const kernels::KernelTable* k) {
  QF_CHECK(!layers.empty()) << "qlstm: no layers";
  QF_CHECK_DTYPE(x.dtype() == DType::u8) << "qlstm: expects u8 codes, got " << x.desc();
  const auto [N, T, I] = sequence_dims(x, "qlstm");
  QF_CHECK_SHAPE(I == layers[0].input_size) << "qlstm: input has " << I << " features per step, the layer takes "
                                            << layers[0].input_size;
  for (size_t l = 1; l < layers.size(); ++l) {
    const ActQParams &a = layers[l].ih.input, &b = layers[l - 1].hidden;
    QF_CHECK(layers[l].input_size == layers[l - 1].hidden_size && a.scale == b.scale &&
             a.zero_point == b.zero_point && a.qmin == b.qmin && a.qmax == b.qmax)
        << "qlstm: layer " << l << " does not read layer " << l - 1 << "'s hidden codes";
  }
  const kernels::KernelTable& t = k ? *k : kernels::kernels();
  const Tensor xc = x;
  Tensor out = Tensor::empty({N, T, layers.back().hidden_size}, DType::u8);
  over_batch(N, [&](int64_t n0, int64_t n1) {
    std::vector<uint8_t> cur(xc.data<uint8_t>() + n0 * T * I, xc.data<uint8_t>() + n1 * T * I), next;
    for (const QLstmLayer& L : layers) {
      next.resize(static_cast<size_t>((n1 - n0) * T * L.hidden_size));
      qlstm_rows(L, cur.data(), next.data(), n1 - n0, T, t);
      cur.swap(next);
    }
    std::copy(cur.begin(), cur.end(), out.data<uint8_t>() + n0 * T * layers.back().hidden_size);
  });
  return out;
}

Tensor last_step(const Tensor& seq) {
  QF_CHECK_SHAPE(seq.ndim() == 3 && seq.size(1) >= 1) << "last_step: needs [N, T, H], got " << seq.desc();
  const int64_t N = seq.size(0), T = seq.size(1), H = seq.size(2);
  const size_t row = static_cast<size_t>(H) * dtype_size(seq.dtype());
  Tensor out = Tensor::empty({N, H}, seq.dtype());
  const char* src = static_cast<const char*>(seq.raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t n = 0; n < N; ++n) std::memcpy(dst + n * row, src + (n * T + T - 1) * row, row);
  return out;
}

// ---- dynamic ------------------------------------------------------------------

ActQParams dynamic_qparams(float lo, float hi) {
  QF_CHECK(std::isfinite(lo) && std::isfinite(hi)) << "dynamic quantization: input range [" << lo << ", " << hi
                                                   << "] is not finite";
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  ActQParams q;
  q.scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
  q.zero_point = std::clamp(static_cast<int32_t>(std::nearbyint(-lo / q.scale)), 0, 255);
  return q;
}

DynamicLstmLayer make_dynamic_lstm_layer(const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                                         const Tensor& b_hh) {
  QF_CHECK_DTYPE(w_ih.dtype() == DType::f32 && w_hh.dtype() == DType::f32)
      << "make_dynamic_lstm_layer: weights must be f32";
  QF_CHECK_SHAPE(w_ih.ndim() == 2 && w_hh.ndim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0 &&
                 w_hh.size(0) == w_ih.size(0) && w_hh.size(1) * 4 == w_ih.size(0))
      << "make_dynamic_lstm_layer: weights must be [4H, I] and [4H, H], got " << w_ih.desc() << " and "
      << w_hh.desc();
  DynamicLstmLayer L;
  L.input_size = w_ih.size(1);
  L.hidden_size = w_ih.size(0) / 4;
  const ActQParams unit;  // placeholder input qparams: set per call
  L.ih = projection(w_ih, Tensor(), symmetric_rows(w_ih), unit);
  L.hh = projection(w_hh, Tensor(), symmetric_rows(w_hh), unit);
  L.bias.assign(static_cast<size_t>(w_ih.size(0)), 0.0f);
  for (const Tensor* b : {&b_ih, &b_hh})
    if (b->defined()) {
      QF_CHECK_SHAPE(b->dtype() == DType::f32 && b->numel() == w_ih.size(0))
          << "make_dynamic_lstm_layer: biases must be f32 [" << w_ih.size(0) << "], got " << b->desc();
      for (int64_t r = 0; r < w_ih.size(0); ++r) L.bias[r] += b->data<float>()[r];
    }
  return L;
}

namespace {

/// Dynamic u8 codes of a float array (its own min/max range).
ActQParams quantize_dynamic_into(const float* x, int64_t n, uint8_t* codes) {
  float lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const ActQParams q = dynamic_qparams(lo, hi);
  const float inv = 1.0f / q.scale;
  for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(quantize_value(x[i], inv, q.zero_point, 0, 255));
  return q;
}

/// e^x for the dynamic mode's gates, in plain float arithmetic that the
/// compiler vectorizes (glibc's expf is a call per element): 2^(x log2 e)
/// split into 2^n (exponent bits) and 2^f, f in [-1/2, 1/2], by a degree-6
/// Taylor polynomial. Relative error below 2e-7 for x in [-87, 88]; x is
/// clamped there.
inline float exp_approx(float x) {
  x = std::min(88.0f, std::max(-87.0f, x));
  const float t = x * 1.44269504089f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
  const float f = (t - n) * 0.69314718056f;          // in [-ln2/2, ln2/2]
  const float p =
      1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 + f * (1.0f / 720))))));
  return std::bit_cast<float>(std::bit_cast<int32_t>(p) + (static_cast<int32_t>(n) << 23));
}
/// 1 / (1 + e^-x).
inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
/// tanh as 2 sigmoid(2x) - 1 (absolute error about 2e-7).
inline float tanh_approx(float x) { return 2.0f * sigmoid_approx(2.0f * x) - 1.0f; }

}  // namespace

Tensor dynamic_lstm(const std::vector<DynamicLstmLayer>& layers, const Tensor& x, const Tensor& h0, const Tensor& c0,
                    Tensor* h_n, Tensor* c_n, const kernels::KernelTable* k) {
  QF_CHECK(!layers.empty()) << "dynamic_lstm: no layers";
  QF_CHECK_DTYPE(x.dtype() == DType::f32) << "dynamic_lstm: expects f32 input, got " << x.desc();
  const auto [N, T, I] = sequence_dims(x, "dynamic_lstm");
  const int64_t Lc = static_cast<int64_t>(layers.size());
  QF_CHECK_SHAPE(I == layers[0].input_size) << "dynamic_lstm: input has " << I << " features per step, the layer takes "
                                            << layers[0].input_size;
  for (int64_t l = 1; l < Lc; ++l)
    QF_CHECK_SHAPE(layers[l].input_size == layers[l - 1].hidden_size)
        << "dynamic_lstm: layer " << l << " takes " << layers[l].input_size << " features, layer " << l - 1
        << " gives " << layers[l - 1].hidden_size;
  const int64_t Hmax = layers.back().hidden_size;  // the output's; states need every layer at this size
  if (h0.defined() || c0.defined() || h_n || c_n)
    for (const auto& L : layers)
      QF_CHECK_SHAPE(L.hidden_size == Hmax) << "dynamic_lstm: initial or final states [" << Lc << ", N, H] need "
                                            << "equal hidden sizes in every layer";
  for (const Tensor* s : {&h0, &c0})
    if (s->defined()) {
      QF_CHECK_DTYPE(s->dtype() == DType::f32) << "dynamic_lstm: initial states must be f32";
      QF_CHECK_SHAPE(s->shape() == Shape({Lc, N, Hmax}))
          << "dynamic_lstm: initial states must be [" << Lc << ", " << N << ", " << Hmax << "], got " << s->desc();
    }
  const kernels::KernelTable& t = k ? *k : kernels::kernels();
  const Tensor h0c = h0.defined() ? h0 : Tensor(), c0c = c0.defined() ? c0 : Tensor();
  if (h_n) *h_n = Tensor::empty({Lc, N, Hmax});
  if (c_n) *c_n = Tensor::empty({Lc, N, Hmax});
  // Per-call activation ranges span the batch (as PyTorch's dynamic mode), so
  // the batch is not split: each GEMM covers all rows.
  std::vector<float> cur(x.data<float>(), x.data<float>() + N * T * I), next;
  for (int64_t l = 0; l < Lc; ++l) {
    const DynamicLstmLayer& L = layers[l];
    const int64_t H = L.hidden_size, H4 = 4 * H, In = L.input_size;
    std::vector<uint8_t> codes(static_cast<size_t>(N * T * In));
    const ActQParams qx = quantize_dynamic_into(cur.data(), N * T * In, codes.data());
    std::vector<int32_t> acc_x(static_cast<size_t>(N * T * H4)), acc_h(static_cast<size_t>(N * H4));
    gemm32(t, L.ih, codes.data(), N * T, qx.zero_point, acc_x.data(), false);
    std::vector<float> h(static_cast<size_t>(N * H), 0.f), c(static_cast<size_t>(N * H), 0.f);
    if (h0c.defined()) std::copy_n(h0c.data<float>() + l * N * H, N * H, h.data());
    if (c0c.defined()) std::copy_n(c0c.data<float>() + l * N * H, N * H, c.data());
    std::vector<uint8_t> hcodes(static_cast<size_t>(N * H));
    std::vector<float> gate(static_cast<size_t>(H4)), sx(static_cast<size_t>(H4));
    for (int64_t r = 0; r < H4; ++r) sx[r] = qx.scale * L.ih.weight_scale[r];
    next.resize(static_cast<size_t>(N * T * H));
    for (int64_t s = 0; s < T; ++s) {
      const ActQParams qh = quantize_dynamic_into(h.data(), N * H, hcodes.data());
      gemm32(t, L.hh, hcodes.data(), N, qh.zero_point, acc_h.data(), false);
      for (int64_t n = 0; n < N; ++n) {
        const int32_t* ax = acc_x.data() + (n * T + s) * H4;
        const int32_t* ah = acc_h.data() + n * H4;
        // Simple loops over arrays, so that they vectorize: pre-activations,
        // gate nonlinearities, then the cell.
        for (int64_t r = 0; r < H4; ++r)
          gate[r] = static_cast<float>(ax[r]) * sx[r] + static_cast<float>(ah[r]) * (qh.scale * L.hh.weight_scale[r]) +
                    L.bias[r];
        for (int64_t r = 0; r < 2 * H; ++r) gate[r] = sigmoid_approx(gate[r]);
        for (int64_t r = 2 * H; r < 3 * H; ++r) gate[r] = tanh_approx(gate[r]);
        for (int64_t r = 3 * H; r < H4; ++r) gate[r] = sigmoid_approx(gate[r]);
        float* cn = c.data() + n * H;
        float* hn = h.data() + n * H;
        for (int64_t j = 0; j < H; ++j) {
          cn[j] = gate[H + j] * cn[j] + gate[j] * gate[2 * H + j];
          hn[j] = gate[3 * H + j] * tanh_approx(cn[j]);
        }
        std::copy_n(hn, H, next.data() + (n * T + s) * H);
      }
    }
    if (h_n) std::copy(h.begin(), h.end(), h_n->data<float>() + l * N * Hmax);
    if (c_n) std::copy(c.begin(), c.end(), c_n->data<float>() + l * N * Hmax);
    cur.swap(next);
  }
  Tensor out = Tensor::empty({N, T, Hmax});
  std::copy(cur.begin(), cur.end(), out.data<float>());
  return out;
}

DynamicLinear make_dynamic_linear(const Tensor& weight, const Tensor& bias) {
  QF_CHECK_DTYPE(weight.dtype() == DType::f32) << "make_dynamic_linear: weight must be f32, got " << weight.desc();
  QF_CHECK_SHAPE(weight.ndim() == 2) << "make_dynamic_linear: weight must be [out, in], got " << weight.desc();
  DynamicLinear D;
  const Tensor w = weight;
  D.w = projection(w, Tensor(), symmetric_rows(w), ActQParams());
  D.bias.assign(static_cast<size_t>(w.size(0)), 0.f);
  if (bias.defined()) {
    QF_CHECK_SHAPE(bias.dtype() == DType::f32 && bias.numel() == w.size(0))
        << "make_dynamic_linear: bias must be f32 [" << w.size(0) << "], got " << bias.desc();
    std::copy_n(bias.data<float>(), w.size(0), D.bias.data());
  }
  return D;
}

Tensor dynamic_linear(const DynamicLinear& D, const Tensor& x, const kernels::KernelTable* k) {
  QF_CHECK_DTYPE(x.dtype() == DType::f32) << "dynamic_linear: expects f32 input, got " << x.desc();
  QF_CHECK_SHAPE(x.ndim() == 2 && x.size(1) == D.w.in_channels)
      << "dynamic_linear: input must be [N, " << D.w.in_channels << "], got " << x.desc();
  const kernels::KernelTable& t = k ? *k : kernels::kernels();
  const int64_t N = x.size(0), O = D.w.out_channels;
  const Tensor xc = x;
  std::vector<uint8_t> codes(static_cast<size_t>(N * D.w.in_channels));
  const ActQParams q = quantize_dynamic_into(xc.data<float>(), N * D.w.in_channels, codes.data());
  std::vector<int32_t> acc(static_cast<size_t>(N * O));
  gemm32(t, D.w, codes.data(), N, q.zero_point, acc.data(), false);
  Tensor y = Tensor::empty({N, O});
  float* py = y.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      py[n * O + o] = static_cast<float>(acc[n * O + o]) * (q.scale * D.w.weight_scale[o]) + D.bias[o];
  return y;
}

}  // namespace qforge::quant::runtime
