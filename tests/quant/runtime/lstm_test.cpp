// The runtime's LSTM: the static integer cell against a plain recomputation
// of the rule in lstm.h, equal on every kernel level and thread count, close
// to a float LSTM; the dynamic mode close to float; the checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>

#include "core/error.h"
#include "core/parallel.h"
#include "core/archive.h"
#include "tests/quant/runtime/model_file_util.h"
#include "quant/runtime/lstm.h"
#include "quant/runtime/model.h"

namespace qforge::quant::runtime {
namespace {

struct FloatLstm {
  int64_t I, H;
  Tensor w_ih, w_hh, b_ih, b_hh;
};

FloatLstm random_lstm(int64_t I, int64_t H, std::mt19937& rng, float wscale = 0.4f) {
  std::uniform_real_distribution<float> u(-wscale, wscale);
  FloatLstm f{I, H, Tensor::empty({4 * H, I}), Tensor::empty({4 * H, H}), Tensor::empty({4 * H}),
              Tensor::empty({4 * H})};
  for (Tensor* t : {&f.w_ih, &f.w_hh, &f.b_ih, &f.b_hh})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = u(rng);
  return f;
}

/// Float LSTM in double, zero initial state: [N, T, I] -> [N, T, H].
std::vector<double> float_lstm(const FloatLstm& f, const std::vector<double>& x, int64_t N, int64_t T) {
  const int64_t I = f.I, H = f.H;
  std::vector<double> out(N * T * H);
  auto sig = [](double v) { return 1 / (1 + std::exp(-v)); };
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> h(H, 0), c(H, 0), g(4 * H);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t r = 0; r < 4 * H; ++r) {
        double s = f.b_ih.data<float>()[r] + f.b_hh.data<float>()[r];
        for (int64_t k = 0; k < I; ++k) s += f.w_ih.data<float>()[r * I + k] * x[(n * T + t) * I + k];
        for (int64_t k = 0; k < H; ++k) s += f.w_hh.data<float>()[r * H + k] * h[k];
        g[r] = s;
      }
      for (int64_t j = 0; j < H; ++j) {
        c[j] = sig(g[H + j]) * c[j] + sig(g[j]) * std::tanh(g[2 * H + j]);
        h[j] = sig(g[3 * H + j]) * std::tanh(c[j]);
        out[(n * T + t) * H + j] = h[j];
      }
    }
  }
  return out;
}

ActQParams act(float lo, float hi) {
  ActQParams q;
  q.scale = (hi - lo) / 255.f;
  q.zero_point = static_cast<int32_t>(std::nearbyint(-lo / q.scale));
  return q;
}

WeightQParams weight_q(const Tensor& w) {
  WeightQParams q;
  const int64_t R = w.size(0), K = w.size(1);
  for (int64_t r = 0; r < R; ++r) {
    float m = 0;
    for (int64_t k = 0; k < K; ++k) m = std::max(m, std::fabs(w.data<float>()[r * K + k]));
    q.scale.push_back(m / 127.f);
  }
  return q;
}

QLstmLayer quantize_layer(const FloatLstm& f, const ActQParams& in, int32_t e = 12) {
  const ActQParams hidden = act(-1.f, 1.f);
  const std::array<ActQParams, 4> gates = {act(-6, 6), act(-6, 6), act(-5, 5), act(-6, 6)};
  return make_qlstm_layer(f.w_ih, f.w_hh, f.b_ih, f.b_hh, weight_q(f.w_ih), weight_q(f.w_hh), in, hidden, gates, e);
}

/// The rule of lstm.h recomputed with plain loops (no kernels, no batching).
std::vector<uint8_t> plain_qlstm(const QLstmLayer& L, const std::vector<uint8_t>& x, int64_t N, int64_t T) {
  const int64_t I = L.input_size, H = L.hidden_size;
  std::vector<uint8_t> out(N * T * H);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int32_t> h(H, L.hidden.zero_point), c(H, 0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> v(4 * H);
      for (int64_t r = 0; r < 4 * H; ++r) {
        int64_t ax = L.ih.bias[r], ah = 0;
        for (int64_t k = 0; k < I; ++k) ax += (x[(n * T + t) * I + k] - L.ih.input.zero_point) * L.ih.weight[r * I + k];
        for (int64_t k = 0; k < H; ++k) ah += (h[k] - L.hidden.zero_point) * L.hh.weight[r * H + k];
        const ActQParams& q = L.gate[r / H];
        const AddMultipliers& m = L.gate_mult[r];
        int64_t code = rounding_shift(ax * m.a + ah * m.b, m.shift) + q.zero_point;
        code = std::clamp<int64_t>(code, q.qmin, q.qmax);
        v[r] = L.gate_table[r / H][code];
      }
      const int e = L.cell_frac_bits;
      for (int64_t j = 0; j < H; ++j) {
        const int64_t s = static_cast<int64_t>(v[H + j]) * c[j] * (int64_t{1} << (15 - e)) + int64_t{v[j]} * v[2 * H + j];
        c[j] = static_cast<int32_t>(std::clamp<int64_t>(rounding_shift(s, 30 - e), -32768, 32767));
        const int32_t th = (*L.cell_tanh)[c[j] + 32768];
        h[j] = requantize(v[3 * H + j] * th, L.hidden_mult, L.hidden.zero_point, L.hidden.qmin, L.hidden.qmax);
        out[(n * T + t) * H + j] = static_cast<uint8_t>(h[j]);
      }
    }
  }
  return out;
}

std::vector<uint8_t> bytes(const Tensor& t) { return {t.data<uint8_t>(), t.data<uint8_t>() + t.numel()}; }

TEST(RuntimeLstm, TablesAndCellFormat) {
  std::mt19937 rng(1);
  const QLstmLayer L = quantize_layer(random_lstm(3, 4, rng), act(-1, 1));
  // sigmoid(0) = 1/2 and tanh(0) = 0 at the gates' zero points.
  EXPECT_EQ(L.gate_table[0][L.gate[0].zero_point], 16384);
  EXPECT_EQ(L.gate_table[2][L.gate[2].zero_point], 0);
  // The saturated ends stay inside Q0.15.
  const ActQParams& qf = L.gate[1];
  EXPECT_EQ(L.gate_table[1][255],
            std::nearbyint(32768 / (1 + std::exp(-static_cast<double>(dequantize_value(255, qf.scale, qf.zero_point))))));
  EXPECT_GE(L.gate_table[1][0], 0);
  EXPECT_EQ((*L.cell_tanh)[32768], 0);
  EXPECT_EQ((*L.cell_tanh)[65535], 32767);
  EXPECT_EQ((*L.cell_tanh)[0], -32767);
  EXPECT_EQ(lstm_cell_frac_bits(0.f), 15);
  EXPECT_EQ(lstm_cell_frac_bits(1.0f), 14);   // 2^14 <= 32767 < 2^15
  EXPECT_EQ(lstm_cell_frac_bits(3.9f), 13);
  EXPECT_EQ(lstm_cell_frac_bits(20.f), 10);
  EXPECT_EQ(lstm_cell_frac_bits(1e9f), 0);
  EXPECT_THROW(lstm_cell_frac_bits(-1.f), ValueError);
}

TEST(RuntimeLstm, EqualsThePlainRuleOnEveryKernelLevel) {
  std::mt19937 rng(2);
  for (auto [I, H, N, T] : std::vector<std::array<int64_t, 4>>{{3, 5, 2, 4}, {28, 16, 5, 7}, {17, 33, 3, 6}}) {
    const FloatLstm f = random_lstm(I, H, rng);
    const ActQParams in = act(-0.5f, 2.0f);
    const QLstmLayer L = quantize_layer(f, in);
    std::vector<uint8_t> x(N * T * I);
    for (auto& v : x) v = static_cast<uint8_t>(rng() % 256);
    Tensor xt = Tensor::from_vector(std::vector<uint8_t>(x), {N, T, I});
    const auto expect = plain_qlstm(L, x, N, T);
    int levels = 0;
    for (kernels::Isa isa : kernels::kAllIsas) {
      if (!kernels::cpu_has(isa)) continue;
      kernels::KernelTable t;
      try {
        t = kernels::kernels_for(isa);
      } catch (const ValueError&) {
        continue;
      }
      ++levels;
      ASSERT_EQ(bytes(qlstm({L}, xt, &t)), expect) << kernels::isa_name(isa) << " I=" << I << " H=" << H;
    }
    EXPECT_GE(levels, 1);
    // [N, 1, T, I] (a one-channel image) reads the same.
    EXPECT_EQ(bytes(qlstm({L}, xt.reshape({N, 1, T, I}))), expect);
  }
}

TEST(RuntimeLstm, ThreadCountDoesNotChangeCodes) {
  std::mt19937 rng(3);
  const QLstmLayer L = quantize_layer(random_lstm(6, 8, rng), act(0, 1));
  Tensor x = Tensor::empty({9, 5, 6}, DType::u8);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<uint8_t>()[i] = static_cast<uint8_t>(rng() % 256);
  const int before = num_threads();
  set_num_threads(1);
  const auto one = bytes(qlstm({L}, x));
  set_num_threads(2);
  const auto two = bytes(qlstm({L}, x));
  set_num_threads(before);
  EXPECT_EQ(one, two);
}

TEST(RuntimeLstm, StackedLayersAndCloseToFloat) {
  std::mt19937 rng(4);
  const int64_t N = 4, T = 12, I = 10, H = 24;
  const FloatLstm f1 = random_lstm(I, H, rng, 0.3f), f2 = random_lstm(H, H, rng, 0.3f);
  const ActQParams in = act(-1, 1);
  const QLstmLayer L1 = quantize_layer(f1, in);
  const QLstmLayer L2 = quantize_layer(f2, L1.hidden);
  std::vector<double> xf(N * T * I);
  Tensor x = Tensor::empty({N, T, I}, DType::u8);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const auto code = static_cast<uint8_t>(rng() % 256);
    x.data<uint8_t>()[i] = code;
    xf[i] = dequantize_value(code, in.scale, in.zero_point);
  }
  const Tensor y = qlstm({L1, L2}, x);
  ASSERT_EQ(y.shape(), Shape({N, T, H}));
  // Layer 2 reads layer 1's codes: the same as running them one by one.
  EXPECT_EQ(bytes(y), bytes(qlstm({L2}, qlstm({L1}, x))));
  // Against the float LSTM on the same (dequantized) input: a few code steps.
  const auto r1 = float_lstm(f1, xf, N, T);
  const auto r2 = float_lstm(f2, r1, N, T);
  double worst = 0;
  for (int64_t i = 0; i < y.numel(); ++i)
    worst = std::max(worst, std::fabs(dequantize_value(y.data<uint8_t>()[i], L2.hidden.scale, L2.hidden.zero_point) - r2[i]));
  EXPECT_LT(worst, 0.06) << "worst |int8 - float| over " << y.numel() << " outputs";
  // A layer that does not read the previous one's codes is refused.
  EXPECT_THROW(qlstm({L1, quantize_layer(f2, act(-2, 2))}, x), ValueError);
}

TEST(RuntimeLstm, ChecksInputs) {
  std::mt19937 rng(5);
  const FloatLstm f = random_lstm(4, 3, rng);
  const QLstmLayer L = quantize_layer(f, act(0, 1));
  EXPECT_THROW(qlstm({L}, Tensor::zeros({2, 3, 5}, DType::u8)), ShapeError);
  EXPECT_THROW(qlstm({L}, Tensor::zeros({2, 3, 4}, DType::f32)), DTypeError);
  EXPECT_THROW(qlstm({L}, Tensor::zeros({2, 2, 3, 4}, DType::u8)), ShapeError);
  EXPECT_THROW(qlstm({}, Tensor::zeros({2, 3, 4}, DType::u8)), ValueError);
  EXPECT_THROW(quantize_layer(f, act(0, 1), 16), ValueError);
  EXPECT_THROW(make_qlstm_layer(f.w_ih, f.w_ih, f.b_ih, f.b_hh, weight_q(f.w_ih), weight_q(f.w_ih), act(0, 1),
                                act(-1, 1), {act(-1, 1), act(-1, 1), act(-1, 1), act(-1, 1)}, 10),
               ShapeError);
  // A gate scale so far above the accumulators' scales that the ratios fall
  // below 2^-31 is refused.
  ActQParams tiny = act(-1e9f, 1e9f);
  EXPECT_THROW(make_qlstm_layer(f.w_ih, f.w_hh, f.b_ih, f.b_hh, weight_q(f.w_ih), weight_q(f.w_hh), act(0, 1),
                                act(-1, 1), {tiny, tiny, tiny, tiny}, 10),
               ValueError);
}

TEST(RuntimeLstm, DynamicModeIsCloseToFloat) {
  std::mt19937 rng(6);
  const int64_t N = 3, T = 9, I = 7, H = 20;
  const FloatLstm f1 = random_lstm(I, H, rng, 0.3f), f2 = random_lstm(H, H, rng, 0.3f);
  std::vector<DynamicLstmLayer> layers = {make_dynamic_lstm_layer(f1.w_ih, f1.w_hh, f1.b_ih, f1.b_hh),
                                          make_dynamic_lstm_layer(f2.w_ih, f2.w_hh, f2.b_ih, f2.b_hh)};
  Tensor x = Tensor::empty({N, T, I});
  std::vector<double> xf(N * T * I);
  std::normal_distribution<float> g(0, 1);
  for (int64_t i = 0; i < x.numel(); ++i) xf[i] = x.data<float>()[i] = g(rng);
  Tensor hn, cn;
  const Tensor y = dynamic_lstm(layers, x, Tensor(), Tensor(), &hn, &cn);
  const auto ref = float_lstm(f2, float_lstm(f1, xf, N, T), N, T);
  double worst = 0;
  for (int64_t i = 0; i < y.numel(); ++i) worst = std::max(worst, std::fabs(y.data<float>()[i] - ref[i]));
  EXPECT_LT(worst, 0.03);
  ASSERT_EQ(hn.shape(), Shape({2, N, H}));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j)
      EXPECT_EQ(hn.data<float>()[(N + n) * H + j], y.data<float>()[(n * T + T - 1) * H + j]);
  // Initial states: zeros given explicitly equal the default.
  const Tensor z = Tensor::zeros({2, N, H});
  const Tensor y0 = dynamic_lstm(layers, x, z, z);
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y0.data<float>()[i], y.data<float>()[i]);
  EXPECT_THROW(dynamic_lstm(layers, x, Tensor::zeros({1, N, H})), ShapeError);
  // Final states [L, N, H] need one hidden size; the output alone does not.
  const FloatLstm f3 = random_lstm(H, 2 * H, rng, 0.3f);
  const std::vector<DynamicLstmLayer> mixed = {layers[0], make_dynamic_lstm_layer(f3.w_ih, f3.w_hh, f3.b_ih, f3.b_hh)};
  EXPECT_EQ(dynamic_lstm(mixed, x).shape(), Shape({N, T, 2 * H}));
  EXPECT_THROW(dynamic_lstm(mixed, x, Tensor(), Tensor(), &hn), ShapeError);
  EXPECT_EQ(bytes(last_step(qlstm({quantize_layer(f1, act(-3, 3))}, Tensor::zeros({N, T, I}, DType::u8)))).size(),
            static_cast<size_t>(N * H));
  EXPECT_THROW(dynamic_lstm(layers, Tensor::zeros({N, T, I + 1})), ShapeError);

  // The dynamic linear layer.
  const Tensor w = f1.w_ih, b = f1.b_ih;
  const DynamicLinear D = make_dynamic_linear(w, b);
  Tensor xi = Tensor::empty({2, I});
  for (int64_t i = 0; i < xi.numel(); ++i) xi.data<float>()[i] = g(rng);
  const Tensor yl = dynamic_linear(D, xi);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t o = 0; o < 4 * H; ++o) {
      double s = b.data<float>()[o];
      for (int64_t k = 0; k < I; ++k) s += w.data<float>()[o * I + k] * xi.data<float>()[n * I + k];
      EXPECT_NEAR(yl.data<float>()[n * 4 * H + o], s, 0.03);
    }
}

}  // namespace
}  // namespace qforge::quant::runtime

namespace qforge::quant::runtime {
namespace {

/// quantize -> 2-layer lstm (sequence) -> dequantize over [1, T=5, I=6] inputs.
Model lstm_model() {
  std::mt19937 rng(8);
  const ActQParams in = act(-1, 1);
  const QLstmLayer l1 = quantize_layer(random_lstm(6, 4, rng), in);
  const QLstmLayer l2 = quantize_layer(random_lstm(4, 4, rng), l1.hidden);
  Model m;
  m.input_shape = {1, 5, 6};
  Op q;
  q.kind = OpKind::quantize;
  q.q = in;
  m.ops.push_back(q);
  Op l;
  l.kind = OpKind::lstm;
  l.name = "lstm";
  l.lstm = {l1, l2};
  m.ops.push_back(l);
  Op d;
  d.kind = OpKind::dequantize;
  d.q = l2.hidden;
  m.ops.push_back(d);
  return m;
}

TEST(RuntimeLstm, ModelFilesRoundTripAndRejectBadLstmEntries) {
  const std::string p = ::testing::TempDir() + "/lstm_model.h5";
  const Model m = lstm_model();
  EXPECT_EQ(m.validate(), (std::vector<int64_t>{1, 5, 4}));
  save_model(p, m);
  EXPECT_EQ(load_archive(p).get_int("format_version"), 4);
  Tensor x = Tensor::empty({3, 1, 5, 6});
  std::mt19937 rng(9);
  std::normal_distribution<float> g(0, 0.5);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = g(rng);
  const Tensor y = m.run(x), y2 = load_model(p).run(x);
  ASSERT_EQ(y.shape(), Shape({3, 1, 5, 4}));
  EXPECT_EQ(std::memcmp(y.raw(), y2.raw(), y.nbytes()), 0);
  // The sequence output equals qlstm on the codes.
  EXPECT_EQ(bytes(quantize(y, m.ops[2].q)),
            bytes(qlstm(m.ops[1].lstm, quantize(x, m.ops[0].q)).reshape({3, 1, 5, 4})));
  auto expect_bad = [&](const std::function<void(Archive&)>& edit, const std::string& needle) {
    testing::expect_load_error(p, m, edit, needle);
  };
  expect_bad([](Archive& a) { a.ints["format_version"] = 3; }, "lstm came in version 4");
  expect_bad([](Archive& a) { a.tensors["op/0001/lstm1_weight_hh"] = Tensor::zeros({4, 16}, DType::i8); },
             "lstm1_weight_hh");
  expect_bad([](Archive& a) { a.tensors.erase("op/0001/lstm0_bias"); }, "lstm0_bias");
  expect_bad([](Archive& a) { a.tensors["op/0001/params"].data<int32_t>()[1] = 0; }, "LSTM layers");
  expect_bad([](Archive& a) { a.tensors["op/0001/params"].data<int32_t>()[4] = 16; }, "cell_frac_bits");
  expect_bad([](Archive& a) { a.tensors["op/0001/scales"].data<float>()[6] = 0.5f; }, "does not read");
  // A model without an lstm op stays version 3 (older builds read it).
  Model plain;
  plain.input_shape = {1, 2, 2};
  plain.ops = {m.ops[0], m.ops[0]};
  plain.ops[1].kind = OpKind::dequantize;
  save_model(p, plain);
  EXPECT_EQ(load_archive(p).get_int("format_version"), 3);
  std::remove(p.c_str());
}

}  // namespace
}  // namespace qforge::quant::runtime
