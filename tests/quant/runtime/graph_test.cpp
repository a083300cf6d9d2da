// The runtime's non-GEMM ops (max and average pools, add, concat) against
// direct references, and models that are graphs (residual adds, concat):
// run, export, reload, and the loader's checks of graph references.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <unistd.h>

#include "core/archive.h"
#include "core/error.h"
#include "core/rng.h"
#include "quant/runtime/model.h"

namespace qforge::quant::runtime {
namespace {

namespace fs = std::filesystem;

Tensor random_codes(const Shape& s, std::mt19937& rng, int lo = 0, int hi = 255) {
  Tensor t = Tensor::empty(s, DType::u8);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(lo + rng() % (hi - lo + 1));
  return t;
}

uint8_t at(const Tensor& t, int64_t n, int64_t h, int64_t w, int64_t c) {
  return t.data<uint8_t>()[((n * t.size(1) + h) * t.size(2) + w) * t.size(3) + c];
}

TEST(QQuantize, EqualsTheScalarRuleOnEveryValue) {
  // quantize() has a vector path; it must give quantize_value() exactly:
  // ties (half to even), values far outside the range, infinities, NaN and
  // lengths that leave a tail.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-40, 40);
  for (const ActQParams q : {ActQParams{0.1f, 128, 0, 255}, ActQParams{0.5f, 0, 0, 255}, ActQParams{0.25f, 3, 2, 200}}) {
    for (int64_t n : {1, 3, 4, 7, 64, 1001}) {
      Tensor x = Tensor::empty({n});
      float* px = x.data<float>();
      for (int64_t i = 0; i < n; ++i) px[i] = u(rng);
      const float specials[] = {0.05f, 0.15f, -0.05f, 0.25f, 0.75f, -1.25f, 1e30f, -1e30f,
                                std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN(), -0.0f, 3e9f};
      for (int64_t i = 0; i < n && i < 13; ++i) px[i] = specials[(i * 5) % 13];
      const Tensor c = quantize(x, q);
      const float inv = 1.0f / q.scale;
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(c.data<uint8_t>()[i], quantize_value(px[i], inv, q.zero_point, q.qmin, q.qmax))
            << "x=" << px[i] << " scale " << q.scale << " zp " << q.zero_point;
    }
  }
}

TEST(QPool, MaxPoolMatchesADirectReference) {
  std::mt19937 rng(1);
  for (int64_t C : {1, 5, 16, 17, 40}) {
    for (auto [k, s, p] : {std::array<int64_t, 3>{2, 0, 0}, {3, 2, 1}, {3, 1, 1}}) {
      const Tensor x = random_codes({2, 7, 6, C}, rng);
      const Tensor y = qmax_pool2d(x, {k, k}, {s, s}, {p, p});
      const int64_t st = s ? s : k, OH = out_size(7, k, st, p, 1), OW = out_size(6, k, st, p, 1);
      ASSERT_EQ(y.shape(), (Shape{2, OH, OW, C}));
      for (int64_t n = 0; n < 2; ++n)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow)
            for (int64_t c = 0; c < C; ++c) {
              int best = -1;
              for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < k; ++j) {
                  const int64_t ih = oh * st - p + i, iw = ow * st - p + j;
                  if (ih >= 0 && ih < 7 && iw >= 0 && iw < 6) best = std::max<int>(best, at(x, n, ih, iw, c));
                }
              ASSERT_EQ(at(y, n, oh, ow, c), best) << "C " << C << " k " << k;
            }
    }
  }
}

TEST(QPool, AvgPoolFollowsTheRuleAndTracksTheFloatAverage) {
  std::mt19937 rng(2);
  const ActQParams in{0.05f, 20, 0, 255}, out{0.04f, 3, 0, 255};
  for (auto [k, s, p] : {std::array<int64_t, 3>{2, 0, 0}, {3, 2, 1}, {3, 1, 1}}) {
    const Tensor x = random_codes({2, 7, 6, 5}, rng);
    const Tensor y = qavg_pool2d(x, in, out, {k, k}, {s, s}, {p, p});
    const int64_t st = s ? s : k, OH = out_size(7, k, st, p, 1), OW = out_size(6, k, st, p, 1);
    ASSERT_EQ(y.shape(), (Shape{2, OH, OW, 5}));
    const QuantMultiplier m = rescale_multiplier(in.scale, out.scale, k * k);
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t c = 0; c < 5; ++c) {
            int32_t acc = 0;
            double real = 0;
            for (int64_t i = 0; i < k; ++i)
              for (int64_t j = 0; j < k; ++j) {
                const int64_t ih = oh * st - p + i, iw = ow * st - p + j;
                if (ih < 0 || ih >= 7 || iw < 0 || iw >= 6) continue;  // padding: real 0
                acc += at(x, n, ih, iw, c) - in.zero_point;
                real += (at(x, n, ih, iw, c) - in.zero_point) * static_cast<double>(in.scale);
              }
            const int got = at(y, n, oh, ow, c);
            ASSERT_EQ(got, requantize(acc, m, out.zero_point, out.qmin, out.qmax));
            const double want = std::clamp(std::nearbyint(real / (k * k) / out.scale) + out.zero_point, 0.0, 255.0);
            ASSERT_LE(std::abs(got - want), 1.0);
          }
  }
}

TEST(QPool, GlobalAvgPoolIsTheWholeMapWindow) {
  std::mt19937 rng(3);
  const ActQParams in{0.1f, 0, 0, 255}, out{0.02f, 0, 0, 255};
  const Tensor x = random_codes({3, 8, 8, 16}, rng);
  const Tensor g = qglobal_avg_pool(x, in, out);
  ASSERT_EQ(g.shape(), (Shape{3, 1, 1, 16}));
  const Tensor w = qavg_pool2d(x, in, out, {8, 8}, {8, 8}, {0, 0});
  EXPECT_EQ(std::memcmp(g.raw(), w.raw(), g.nbytes()), 0);
  // A constant map averages to itself (same scale in and out: the codes stay).
  Tensor c = Tensor::empty({1, 4, 4, 2}, DType::u8);
  std::memset(c.raw(), 77, c.nbytes());
  const Tensor gc = qglobal_avg_pool(c, in, in);
  EXPECT_EQ(gc.data<uint8_t>()[0], 77);
  EXPECT_EQ(gc.data<uint8_t>()[1], 77);
}

TEST(QAdd, EqualScalesAddExactlyAndOthersTrackTheFloatSum) {
  std::mt19937 rng(4);
  const Tensor a = random_codes({2, 3, 3, 7}, rng), b = random_codes({2, 3, 3, 7}, rng);
  // Same scale everywhere: out = (a - za) + (b - zb) + zo exactly, clamped.
  const ActQParams qa{0.1f, 100, 0, 255}, qb{0.1f, 130, 0, 255}, qo{0.1f, 128, 0, 255};
  const Tensor y = qadd(a, qa, b, qb, qo);
  for (int64_t i = 0; i < y.numel(); ++i) {
    const int want = std::clamp(a.data<uint8_t>()[i] - 100 + b.data<uint8_t>()[i] - 130 + 128, 0, 255);
    ASSERT_EQ(y.data<uint8_t>()[i], want);
  }
  // Different scales, ReLU: within one code of the float rule, and >= zo.
  const ActQParams ra{0.037f, 90, 0, 255}, rb{0.011f, 0, 0, 255}, ro{0.05f, 60, 0, 255};
  const Tensor z = qadd(a, ra, b, rb, ro, Activation::relu);
  for (int64_t i = 0; i < z.numel(); ++i) {
    const double real = (a.data<uint8_t>()[i] - 90) * 0.037 + b.data<uint8_t>()[i] * 0.011;
    const double want = std::clamp(std::nearbyint(std::max(real, 0.0) / 0.05) + 60, 60.0, 255.0);
    ASSERT_LE(std::abs(z.data<uint8_t>()[i] - want), 1.0) << i;
    ASSERT_GE(z.data<uint8_t>()[i], 60);
  }
  EXPECT_THROW(qadd(a, qa, random_codes({2, 3, 3, 6}, rng), qb, qo), ShapeError);
}

TEST(QMath, AddMultipliersShareOneShiftAndStayBelow2To31) {
  for (auto [sa, sb, so] : {std::array<float, 3>{0.1f, 0.1f, 0.1f}, {0.5f, 0.001f, 0.02f}, {1e-4f, 3e-4f, 0.9f},
                            {2.0f, 0.7f, 1e-3f}}) {
    const AddMultipliers m = add_multipliers(sa, sb, so);
    EXPECT_GE(m.shift, 1);
    EXPECT_LE(m.shift, 62);
    EXPECT_LT(std::max(m.a, m.b), int64_t{1} << 31);
    EXPECT_GE(std::max(m.a, m.b), int64_t{1} << 30);  // the larger ratio keeps 31 significant bits
    EXPECT_NEAR(std::ldexp(static_cast<double>(m.a), -m.shift), static_cast<double>(sa) / so, 1e-8 * sa / so + 1e-12);
  }
  EXPECT_THROW(add_multipliers(1.0f, 1.0f, 1e-12f), ValueError);
  // Ties round to even.
  const AddMultipliers half{1, 1, 1};  // (da + db) / 2
  EXPECT_EQ(requantize_add(1, 0, half, 0, -1000, 1000), 0);
  EXPECT_EQ(requantize_add(3, 0, half, 0, -1000, 1000), 2);
  EXPECT_EQ(requantize_add(-1, 0, half, 0, -1000, 1000), 0);
  EXPECT_EQ(requantize_add(-3, 0, half, 0, -1000, 1000), -2);
}

TEST(QConcat, CopiesMatchingQParamsAndRescalesOthers) {
  std::mt19937 rng(5);
  const Tensor a = random_codes({2, 3, 3, 4}, rng), b = random_codes({2, 3, 3, 5}, rng);
  const ActQParams qo{0.05f, 10, 0, 255}, qb{0.02f, 128, 0, 255};
  const Tensor y = qconcat({a, b}, {qo, qb}, qo);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 3, 9}));
  for (int64_t r = 0; r < 18; ++r) {
    for (int64_t c = 0; c < 4; ++c) ASSERT_EQ(y.data<uint8_t>()[r * 9 + c], a.data<uint8_t>()[r * 4 + c]);
    for (int64_t c = 0; c < 5; ++c) {
      const double real = (b.data<uint8_t>()[r * 5 + c] - 128) * 0.02;
      const double want = std::clamp(std::nearbyint(real / 0.05) + 10, 0.0, 255.0);
      ASSERT_LE(std::abs(y.data<uint8_t>()[r * 9 + 4 + c] - want), 1.0);
    }
  }
  EXPECT_THROW(qconcat({a, random_codes({2, 3, 4, 5}, rng)}, {qo, qb}, qo), ShapeError);
  EXPECT_THROW(qconcat({a, b}, {qo}, qo), ValueError);
}

Tensor randn(const Shape& s, uint64_t seed, double scale) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  normal_(t, 0, scale, g);
  return t;
}

/// quantize -> conv A (3->4, 3x3 pad 1, ReLU) -> conv B on A (4->4) -> add(A, B)
/// with ReLU -> concat(add, A) -> avg pool 2 -> global avg pool -> flatten ->
/// linear 8->3 -> dequantize.
Model residual_model() {
  const ActQParams in{0.03f, 128, 0, 255}, a{0.04f, 0, 0, 255}, b{0.05f, 100, 0, 255}, s{0.06f, 0, 0, 255},
      cat{0.05f, 0, 0, 255}, pool{0.045f, 0, 0, 255}, gp{0.03f, 0, 0, 255}, out{0.1f, 128, 0, 255};
  Model m;
  m.input_shape = {3, 6, 6};
  auto push = [&](Op op, std::vector<int32_t> inputs = {}) {
    op.inputs = std::move(inputs);
    m.ops.push_back(std::move(op));
    return static_cast<int32_t>(m.ops.size() - 1);
  };
  Op q;
  q.kind = OpKind::quantize;
  q.q = in;
  push(q);
  WeightQParams w4;
  w4.scale = {0.01f, 0.02f, 0.015f, 0.03f};
  Op ca;
  ca.kind = OpKind::conv2d;
  ca.name = "a";
  ca.layer = make_qlayer(randn({4, 3, 3, 3}, 1, 0.4), randn({4}, 2, 0.1), w4, in, a, Activation::relu, {1, 1}, {1, 1});
  const int32_t ia = push(ca);
  Op cb;
  cb.kind = OpKind::conv2d;
  cb.name = "b";
  cb.layer = make_qlayer(randn({4, 4, 3, 3}, 3, 0.4), randn({4}, 4, 0.1), w4, a, b, Activation::none, {1, 1}, {1, 1});
  const int32_t ib = push(cb);
  Op add;
  add.kind = OpKind::add;
  add.name = "add";
  add.in_q = {a, b};
  add.q = s;
  add.activation = Activation::relu;
  const int32_t is = push(add, {ia, ib});
  Op c;
  c.kind = OpKind::concat;
  c.in_q = {s, a};
  c.q = cat;
  push(c, {is, ia});
  Op ap;
  ap.kind = OpKind::avg_pool2d;
  ap.in_q = {cat};
  ap.q = pool;
  push(ap);
  Op g;
  g.kind = OpKind::global_avg_pool;
  g.in_q = {pool};
  g.q = gp;
  push(g);
  Op f;
  f.kind = OpKind::flatten;
  push(f);
  WeightQParams w3;
  w3.scale = {0.005f, 0.004f, 0.006f};
  Op l;
  l.kind = OpKind::linear;
  l.layer = make_qlayer(randn({3, 8}, 5, 0.3), randn({3}, 6, 0.1), w3, gp, out, Activation::none);
  push(l);
  Op d;
  d.kind = OpKind::dequantize;
  d.q = out;
  push(d);
  return m;
}

class GraphFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qforge_graph_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
};

TEST_F(GraphFile, ResidualGraphRunsOpByOpAndRoundTrips) {
  const Model m = residual_model();
  EXPECT_EQ(m.validate(), (std::vector<int64_t>{3}));
  const Tensor x = randn({4, 3, 6, 6}, 7, 1.0);
  const Tensor y = m.run(x);
  ASSERT_EQ(y.shape(), (Shape{4, 3}));
  // The same graph by hand with the ops.
  const auto& o = m.ops;
  const Tensor q = to_nhwc(quantize(x, o[0].q));
  const Tensor a = qconv2d(o[1].layer, q), b = qconv2d(o[2].layer, a);
  const Tensor s = qadd(a, o[3].in_q[0], b, o[3].in_q[1], o[3].q, Activation::relu);
  const Tensor c = qconcat({s, a}, o[4].in_q, o[4].q);
  const Tensor p = qavg_pool2d(c, o[5].in_q[0], o[5].q, {2, 2}, {0, 0}, {0, 0});
  const Tensor g = qglobal_avg_pool(p, o[6].in_q[0], o[6].q);
  const Tensor l = qlinear(o[8].layer, g.reshape({4, 8}));
  const Tensor want = dequantize(l, o[9].q);
  EXPECT_EQ(std::memcmp(y.raw(), want.raw(), y.nbytes()), 0);
  // The batch split into sub-batches (run) and op by op (a callback) agree,
  // and so do a table holding only a GEMM (the other ops fall back to the
  // reference kernels) and every kernel level.
  const Tensor whole = m.run(x, nullptr, [](size_t, const Tensor&) {});
  EXPECT_EQ(std::memcmp(y.raw(), whole.raw(), y.nbytes()), 0);
  kernels::KernelTable gemm_only;
  gemm_only.qgemm = &kernels::qu8s8_gemm_requant__ref;
  const Tensor partial = m.run(x, &gemm_only);
  EXPECT_EQ(std::memcmp(y.raw(), partial.raw(), y.nbytes()), 0);
  for (auto isa : kernels::kAllIsas) {
    if (!kernels::cpu_has(isa)) continue;
    const kernels::KernelTable t = kernels::kernels_for(isa);
    const Tensor yi = m.run(x, &t);
    EXPECT_EQ(std::memcmp(y.raw(), yi.raw(), y.nbytes()), 0) << kernels::isa_name(isa);
  }

  save_model(path("g.h5"), m);
  const Model back = load_model(path("g.h5"));
  ASSERT_EQ(back.ops.size(), m.ops.size());
  EXPECT_EQ(back.ops[3].inputs, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(back.ops[3].activation, Activation::relu);
  const Tensor y2 = back.run(x);
  EXPECT_EQ(std::memcmp(y.raw(), y2.raw(), y.nbytes()), 0);
}

TEST_F(GraphFile, AFlattenedOutputComesOutInTheFloatModelsChannelOrder) {
  // quantize -> conv -> flatten -> dequantize gives the conv output's NCHW
  // values, flattened as the float model's Flatten would (C, H, W).
  Model m = residual_model();
  m.ops.resize(2);  // quantize, conv A
  Op f;
  f.kind = OpKind::flatten;
  m.ops.push_back(f);
  Op d;
  d.kind = OpKind::dequantize;
  d.q = m.ops[1].layer.output;
  m.ops.push_back(d);
  Model map = m;
  map.ops.erase(map.ops.begin() + 2);  // without the flatten: an NCHW map
  const Tensor x = randn({2, 3, 6, 6}, 11, 1.0);
  const Tensor flat = m.run(x), nchw = map.run(x);
  ASSERT_EQ(flat.shape(), (Shape{2, 4 * 6 * 6}));
  ASSERT_EQ(nchw.shape(), (Shape{2, 4, 6, 6}));
  EXPECT_EQ(std::memcmp(flat.raw(), nchw.raw(), flat.nbytes()), 0);
}

TEST_F(GraphFile, BadGraphsGetClearErrors) {
  auto expect_bad = [](const Model& m, const std::string& needle) {
    try {
      m.validate();
      ADD_FAILURE() << "no error for: " << needle;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Model m = residual_model();
  m.ops[3].inputs = {1, 5};  // a later op
  expect_bad(m, "does not come before it");
  m = residual_model();
  m.ops[3].inputs = {1};
  expect_bad(m, "takes 2 input(s)");
  m = residual_model();
  m.ops[4].inputs = {3, 2};  // concat(add, b): b's qparams differ from what concat expects
  expect_bad(m, "qparams differ from what op 2 produces");
  m = residual_model();
  m.ops[3].in_q[1].scale = 0.07f;
  expect_bad(m, "input 1 qparams differ");
  m = residual_model();
  {
    Op dangling;  // a pool of conv A's output that nothing reads
    dangling.kind = OpKind::max_pool2d;
    dangling.inputs = {1};
    m.ops.insert(m.ops.end() - 1, dangling);
    m.ops.back().inputs = {8};
  }
  expect_bad(m, "op 9 (max_pool2d): its output is never read");
  m = residual_model();
  m.ops[3].inputs = {1, 0};  // conv A's output [4, 6, 6] + the input codes [3, 6, 6]
  m.ops[3].in_q[1] = m.ops[0].q;
  expect_bad(m, "different shapes");

  // In a file: an input index past the op.
  save_model(path("g.h5"), residual_model());
  Archive ar = load_archive(path("g.h5"));
  ar.tensors["op/0003/inputs"] = Tensor::from_vector<int32_t>({1, 9}, {2});
  save_archive(path("g.h5"), ar);
  try {
    load_model(path("g.h5"));
    ADD_FAILURE() << "a forward reference loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("does not come before it"), std::string::npos) << e.what();
  }
  ar.tensors["op/0003/inputs"] = Tensor::from_vector<float>({1, 2}, {2});
  save_archive(path("g.h5"), ar);
  EXPECT_THROW(load_model(path("g.h5")), FormatError);
  ar.tensors["op/0003/inputs"] = Tensor::from_vector<int32_t>({1, 2}, {2});
  ar.tensors["op/0004/params"] = Tensor::from_vector<int32_t>({1000000}, {1});
  save_archive(path("g.h5"), ar);
  EXPECT_THROW(load_model(path("g.h5")), FormatError);
}

}  // namespace
}  // namespace qforge::quant::runtime
