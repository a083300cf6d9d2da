#include <gtest/gtest.h>

#include <bit>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

TEST(NormGrad, BatchNormTrain4d) {
  Generator g(71);
  for (const Shape& s : std::vector<Shape>{{2, 3, 2, 2}, {1, 2, 3, 1}, {3, 1, 1, 2}}) {
    SCOPED_TRACE(shape_str(s));
    const int64_t C = s[1];
    expect_jacobian(
        [C](const std::vector<Variable>& v) {
          BatchNormOptions o;
          o.training = true;
          return batch_norm(v[0], Tensor::zeros({C}, DType::f64), Tensor::ones({C}, DType::f64), v[1], v[2], o);
        },
        {rand64(s, g), rand64({C}, g, 0.5, 1.5), rand64({C}, g)});
  }
}

TEST(NormGrad, BatchNormTrain2dNoAffine) {
  Generator g(72);
  expect_jacobian(
      [](const std::vector<Variable>& v) {
        return batch_norm(v[0], Tensor(), Tensor(), Variable(), Variable(), BatchNormOptions{});
      },
      {rand64({4, 3}, g)});
}

TEST(NormGrad, BatchNormEval) {
  Generator g(73);
  Tensor rm = rand64({3}, g), rv = rand64({3}, g, 0.5, 2.0);
  expect_jacobian(
      [rm, rv](const std::vector<Variable>& v) {
        BatchNormOptions o;
        o.training = false;
        return batch_norm(v[0], rm.clone(), rv.clone(), v[1], v[2], o);
      },
      {rand64({2, 3, 2, 3}, g), rand64({3}, g), rand64({3}, g)});
}

// The fused ReLU: Jacobians in training and eval mode, with the bias moved so
// that some outputs are clipped and no pre-activation sits near the kink.
TEST(NormGrad, BatchNormReluTrainAndEval) {
  Generator g(76);
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "train" : "eval");
    Tensor rm = rand64({3}, g), rv = rand64({3}, g, 0.5, 2.0);
    std::vector<Tensor> in = {rand64({3, 3, 2, 3}, g), rand64({3}, g, 0.5, 1.5), rand64({3}, g, -0.3, 0.3)};
    auto fn = [rm, rv, training](const std::vector<Variable>& v, bool relu) {
      BatchNormOptions o;
      o.training = training;
      o.relu = relu;
      return batch_norm(v[0], rm.clone(), rv.clone(), v[1], v[2], o);
    };
    // Pre-activations away from 0 (the finite differences step far less).
    Tensor pre = fn({Variable(in[0]), Variable(in[1]), Variable(in[2])}, false).value();
    int64_t clipped = 0;
    for (int64_t i = 0; i < pre.numel(); ++i) {
      ASSERT_GT(std::abs(pre.item(i)), 1e-3) << "a pre-activation near the kink (" << pre.item(i) << " at " << i << "); pick another seed";
      clipped += pre.item(i) < 0;
    }
    ASSERT_GT(clipped, 0);
    ASSERT_LT(clipped, pre.numel());
    expect_jacobian([fn](const std::vector<Variable>& v) { return fn(v, true); }, in);
  }
}

// Fused and unfused give bit-identical outputs and gradients, in f32.
TEST(Norm, FusedReluMatchesBatchNormThenRelu) {
  Generator g(75);
  for (bool training : {true, false}) {
    Tensor x = Tensor::empty({4, 5, 6, 7}), w = Tensor::empty({5}), b = Tensor::empty({5}), gy = Tensor::empty({4, 5, 6, 7});
    normal_(x, 0, 1, g);
    uniform_(w, 0.5, 1.5, g);
    uniform_(b, -0.5, 0.5, g);
    normal_(gy, 0, 1, g);
    std::vector<std::vector<double>> outs, grads;
    for (bool fused : {false, true}) {
      Tensor rm = Tensor::zeros({5}), rv = Tensor::ones({5});
      Variable xv(x.clone(), true), wv(w.clone(), true), bv(b.clone(), true);
      BatchNormOptions o;
      o.training = training;
      o.relu = fused;
      Variable y = batch_norm(xv, rm, rv, wv, bv, o);
      if (!fused) y = relu(y);
      y.backward(gy);
      outs.push_back(y.value().to_vector());
      for (const Variable* v : {&xv, &wv, &bv}) grads.push_back(v->grad().to_vector());
      outs.push_back(rm.to_vector());
      outs.push_back(rv.to_vector());
    }
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(outs[i], outs[i + 3]) << "output " << i << " training " << training;
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(grads[i], grads[i + 3]) << "gradient " << i << " training " << training;
  }
}

TEST(Norm, RunningStatsFollowPyTorch) {
  // x over channel 0: {1, 3, 5, 7} -> mean 4, biased var 5, unbiased 20/3.
  Tensor x = Tensor::from_vector<float>({1, 3, 5, 7}, {4, 1});
  Tensor rm = Tensor::zeros({1}), rv = Tensor::ones({1});
  BatchNormOptions o;
  o.momentum = 0.1;
  Tensor y = batch_norm(Variable(x), rm, rv, Variable(), Variable(), o).value();
  EXPECT_NEAR(rm.item(), 0.4, 1e-6);
  EXPECT_NEAR(rv.item(), 0.9 + 0.1 * 20.0 / 3.0, 1e-6);
  EXPECT_NEAR(y.item(0), (1 - 4) / std::sqrt(5 + 1e-5), 1e-5);
  o.training = false;
  Tensor ye = batch_norm(Variable(x), rm, rv, Variable(), Variable(), o).value();
  EXPECT_NEAR(ye.item(0), (1 - 0.4) / std::sqrt(rv.item() + 1e-5), 1e-5);
  EXPECT_NEAR(rm.item(), 0.4, 1e-7);  // eval leaves the buffers alone
}

TEST(Norm, Errors) {
  BatchNormOptions o;
  EXPECT_THROW(batch_norm(Variable(Tensor::zeros({1, 3})), Tensor(), Tensor(), Variable(), Variable(), o),
               ShapeError);
  EXPECT_THROW(batch_norm(Variable(Tensor::zeros({2, 3})), Tensor::zeros({2}), Tensor::ones({2}), Variable(),
                          Variable(), o),
               ShapeError);
  EXPECT_THROW(batch_norm(Variable(Tensor::zeros({2, 3, 4})), Tensor(), Tensor(), Variable(), Variable(), o),
               ShapeError);
}

// Batch norm + ReLU + per-tensor fake quant in one op equals fake_quantize()
// after the fused batch norm + ReLU, bit for bit: the hook gets the exact
// range of the ReLU output, and the values, every gradient and the running
// statistics match, in f32 and f64, in training and eval statistics, with a
// scale that clips part of the values at the top (the STE mask matters).
namespace {
// The bit patterns of values: equal vectors with +0 and -0 differ here.
std::vector<uint64_t> bits(const std::vector<double>& v) {
  std::vector<uint64_t> b;
  for (double d : v) b.push_back(std::bit_cast<uint64_t>(d));
  return b;
}
}  // namespace

TEST(Norm, FusedFakeQuantMatchesBatchNormReluThenFakeQuantize) {
  Generator g(76);
  for (bool relu : {true, false})
  for (DType dt : {DType::f32, DType::f64})
    for (bool training : {true, false})
      for (float scale : {0.004f, 0.02f, 1.0f}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " training " + std::to_string(training) + " scale " +
                     std::to_string(scale) + " relu " + std::to_string(relu));
        Tensor x = rand64({4, 5, 6, 7}, g, -2, 2).to(dt), w = rand64({5}, g, -1.5, 1.5).to(dt),
               b = rand64({5}, g, -0.5, 0.5).to(dt), gy = rand64({4, 5, 6, 7}, g, -1, 1).to(dt);
        FakeQuantParams p;
        p.scale = scale;
        p.zero_point = 3;
        p.qmin = 0;
        p.qmax = 255;
        std::vector<std::vector<double>> res[2];
        double seen_lo = 0, seen_hi = 0;
        for (int fused = 0; fused < 2; ++fused) {
          Tensor rm = Tensor::zeros({5}, dt), rv = Tensor::ones({5}, dt);
          Variable xv(x.clone(), true), wv(w.clone(), true), bv(b.clone(), true);
          BatchNormOptions o;
          o.training = training;
          o.relu = relu;
          if (fused)
            o.output_fake_quant = [&](double lo, double hi) {
              seen_lo = lo;
              seen_hi = hi;
              return p;
            };
          Variable y = batch_norm(xv, rm, rv, wv, bv, o);
          if (!fused) {
            const std::vector<double> v = y.value().to_vector();
            EXPECT_GT(*std::max_element(v.begin(), v.end()), 0.0);
            // Without the ReLU, the small scales clip at the bottom too.
            if (!relu && scale < 0.5f) {
              EXPECT_LT(*std::min_element(v.begin(), v.end()), (p.qmin - p.zero_point) * static_cast<double>(scale));
            }
            res[0].push_back({*std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end())});
            Tensor s = Tensor::full({1}, p.scale), z = Tensor::full({1}, p.zero_point, DType::i32);
            y = fake_quantize(y, s, z, p.qmin, p.qmax);
          } else {
            res[1].push_back({seen_lo, seen_hi});
          }
          y.backward(gy);
          res[fused].push_back(y.value().to_vector());
          for (const Variable* v : {&xv, &wv, &bv}) res[fused].push_back(v->grad().to_vector());
          res[fused].push_back(rm.to_vector());
          res[fused].push_back(rv.to_vector());
        }
        ASSERT_EQ(res[0].size(), res[1].size());
        for (size_t i = 0; i < res[0].size(); ++i) EXPECT_EQ(bits(res[0][i]), bits(res[1][i])) << "item " << i;
      }
  // An empty batch (eval statistics): the hook hears of no values.
  {
    BatchNormOptions o;
    o.training = false;
    o.relu = true;
    double lo = 0, hi = 0;
    o.output_fake_quant = [&](double l, double h) {
      lo = l;
      hi = h;
      return FakeQuantParams{};
    };
    Variable y = batch_norm(Variable(Tensor::zeros({0, 3, 2, 2})), Tensor::zeros({3}), Tensor::ones({3}), Variable(),
                            Variable(), o);
    EXPECT_EQ(y.value().numel(), 0);
    EXPECT_GT(lo, hi);
  }
  // Without the ReLU, an inf or NaN output reaches the hook as a NaN lo.
  for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    BatchNormOptions o;
    o.training = false;
    double lo = 0;
    o.output_fake_quant = [&](double l, double) {
      lo = l;
      FakeQuantParams p;
      p.scale = 0.1f;
      return p;
    };
    Tensor x = Tensor::zeros({2, 3, 4, 5});
    x.data<float>()[37] = static_cast<float>(bad);
    batch_norm(Variable(x), Tensor::zeros({3}), Tensor::ones({3}), Variable(), Variable(), o);
    EXPECT_TRUE(std::isnan(lo)) << bad;
  }
}

// The STE's thresholds: the top one is the last value whose mask passes
// (the next one fails), the bottom one the first (the one before fails), for
// float and double and a spread of scales and zero points (zero points at
// qmin included).
namespace {
template <class T>
void check_ste_band(const FakeQuantParams& p, DType dt) {
  const T top = static_cast<T>(autograd::detail::ste_upper_bound(dt, p));
  const T bottom = static_cast<T>(autograd::detail::ste_lower_bound(dt, p));
  const T inv = T(1) / static_cast<T>(p.scale), z = static_cast<T>(p.zero_point);
  const T lo = static_cast<T>(p.qmin), hi = static_cast<T>(p.qmax), inf = std::numeric_limits<T>::infinity();
  auto code = [&](T x) { return std::nearbyint(x * inv) + z; };
  EXPECT_LE(code(top), hi) << p.scale;
  EXPECT_GT(code(std::nextafter(top, inf)), hi) << p.scale;
  EXPECT_LE(bottom, T(0));
  EXPECT_GE(code(bottom), lo) << p.scale << " " << p.zero_point;
  EXPECT_LT(code(std::nextafter(bottom, -inf)), lo) << p.scale << " " << p.zero_point;
}
}  // namespace

TEST(Norm, SteBoundsAreTheLastAndFirstPassingValues) {
  Generator g(77);
  for (int t = 0; t < 300; ++t) {
    FakeQuantParams p;
    p.scale = static_cast<float>(std::exp(g.uniform() * 12 - 9));
    p.qmin = t % 2 ? -128 : 0;
    p.qmax = t % 2 ? 127 : 255;
    p.zero_point = t % 7 == 0 ? p.qmin
                              : static_cast<int32_t>(p.qmin + g.below(static_cast<uint64_t>(p.qmax - p.qmin + 1)));
    check_ste_band<float>(p, DType::f32);
    check_ste_band<double>(p, DType::f64);
  }
  FakeQuantParams bad;
  bad.scale = 0;
  EXPECT_THROW(autograd::detail::ste_upper_bound(DType::f32, bad), ValueError);
  EXPECT_THROW(autograd::detail::ste_lower_bound(DType::f32, bad), ValueError);
}
