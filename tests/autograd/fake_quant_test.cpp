#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"

using namespace qforge;
using namespace qforge::autograd;

namespace {

Tensor f32(std::vector<float> v, Shape s) { return Tensor::from_vector(v, s); }
Tensor scales(std::vector<float> v) { return Tensor::from_vector(v, {(int64_t)v.size()}); }
Tensor zps(std::vector<int32_t> v) { return Tensor::from_vector(v, {(int64_t)v.size()}); }

// Reference fake-quant of one value, in double.
double fq(double x, double s, double z, double lo, double hi) {
  const double q = std::nearbyint(static_cast<float>(x) * static_cast<float>(1.0f / static_cast<float>(s))) + z;
  return (std::fmin(std::fmax(q, lo), hi) - z) * s;
}

}  // namespace

TEST(FakeQuant, ForwardRoundsHalfToEvenAndClamps) {
  // scale 0.5, zero point 0, int8: x/s = 2.5 -> 2 (even), 3.5 -> 4, -2.5 -> -2.
  Tensor x = f32({1.25f, 1.75f, -1.25f, 100.0f, -100.0f, 0.0f}, {6});
  auto y = fake_quantize(Variable(x), scales({0.5f}), zps({0}), -128, 127).value().to_vector();
  EXPECT_EQ(y, (std::vector<double>{1.0, 2.0, -1.0, 63.5, -64.0, 0.0}));
  // uint8 affine with zero point 10: 0 stays exactly 0.
  auto y2 = fake_quantize(Variable(x), scales({0.5f}), zps({10}), 0, 255).value().to_vector();
  EXPECT_EQ(y2[5], 0.0);
  EXPECT_EQ(y2[4], -5.0);  // clamps at q = 0 -> (0 - 10) * 0.5
}

TEST(FakeQuant, SteMaskInsideAndOutsideForEveryBitWidth) {
  for (int bits = 2; bits <= 8; ++bits) {
    const int64_t qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
    const float s = 0.1f;
    std::vector<float> xs;
    for (int i = -40; i <= 40; ++i) xs.push_back(0.0731f * i);
    Variable x(f32(xs, {(int64_t)xs.size()}), true);
    Variable y = fake_quantize(x, scales({s}), zps({0}), qmin, qmax);
    sum(y).backward();
    for (size_t i = 0; i < xs.size(); ++i) {
      const double q = std::nearbyint(xs[i] * (1.0f / s));
      const double want = (q >= qmin && q <= qmax) ? 1.0 : 0.0;
      EXPECT_EQ(x.grad().item(i), want) << "bits " << bits << " x " << xs[i];
      EXPECT_FLOAT_EQ(y.value().item(i), fq(xs[i], s, 0, qmin, qmax));
    }
  }
}

TEST(FakeQuant, PerChannelAlongAnyAxis) {
  Generator g(1);
  Tensor x = Tensor::empty({2, 3, 4});
  normal_(x, 0, 2, g);
  const std::vector<float> s = {0.05f, 0.2f, 0.5f};
  const std::vector<int32_t> z = {0, 3, -2};
  Tensor y = fake_quantize(Variable(x), scales(s), zps(z), -8, 7, 1).value();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 4; ++k) {
        const int64_t i = (n * 3 + c) * 4 + k;
        EXPECT_FLOAT_EQ(y.item(i), fq(x.item(i), s[c], z[c], -8, 7)) << i;
      }
  Tensor y0 = fake_quantize(Variable(x), scales({0.1f, 0.3f}), zps({0, 0}), -128, 127, 0).value();
  EXPECT_FLOAT_EQ(y0.item(13), fq(x.item(13), 0.3, 0, -128, 127));
  EXPECT_THROW(fake_quantize(Variable(x), scales(s), zps(z), -8, 7, 2), ShapeError);
  EXPECT_THROW(fake_quantize(Variable(x), scales({0.0f}), zps({0}), -8, 7), ValueError);
  EXPECT_THROW(fake_quantize(Variable(x), scales({0.1f}), zps({9}), -8, 7), ValueError);
  EXPECT_THROW(fake_quantize(Variable(x), scales({0.1f}), zps({0}), 7, -8), ValueError);
  EXPECT_THROW(fake_quantize(Variable(x), scales({0.1f}), zps({0}), -8, 7, 3), IndexError);
}

TEST(LsqFakeQuant, ClosedFormGradientsInsideAndOutside) {
  // 4-bit signed: qmin -8, qmax 7; s = 0.5, learnable offset z = 1.3 -> 1.
  const double s = 0.5, zraw = 1.3, z = 1, lo = -8, hi = 7;
  const std::vector<double> xs = {0.3, -0.7, 2.2, 3.1, 10.0, -6.0, -4.4, 0.0};
  Variable x(Tensor::from_vector(xs, {(int64_t)xs.size()}), true);
  Variable sv(Tensor::from_vector<double>({s}, {1}), true);
  Variable zv(Tensor::from_vector<double>({zraw}, {1}), true);
  const double gscale = 0.25;
  Variable y = lsq_fake_quantize(x, sv, zv, -8, 7, -1, gscale);
  // Weighted sum so that every element's upstream gradient differs.
  std::vector<double> w;
  for (size_t i = 0; i < xs.size(); ++i) w.push_back(1.0 + 0.5 * i);
  sum(mul(y, Variable(Tensor::from_vector(w, {(int64_t)w.size()})))).backward();
  double ds = 0, dz = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i] / s, q = std::nearbyint(v) + z;
    const bool below = q < lo, above = q > hi;
    EXPECT_DOUBLE_EQ(y.value().item(i), (std::fmin(std::fmax(q, lo), hi) - z) * s) << i;
    EXPECT_DOUBLE_EQ(x.grad().item(i), (below || above) ? 0.0 : w[i]) << i;
    ds += w[i] * (below ? lo - z : above ? hi - z : (q - z) - v);
    dz += (below || above) ? -w[i] * s : 0.0;
  }
  EXPECT_NEAR(sv.grad().item(0), ds * gscale, 1e-12);
  EXPECT_NEAR(zv.grad().item(0), dz * gscale, 1e-12);
  // The data covers both clip sides and the inside.
  EXPECT_NE(dz, 0.0);
}

TEST(LsqFakeQuant, PerChannelGradientsAndBitWidths) {
  for (int bits = 2; bits <= 8; ++bits) {
    const int64_t qmin = 0, qmax = (1 << bits) - 1;  // unsigned, no offset
    Generator g(bits);
    Tensor xt = Tensor::empty({3, 2, 5}, DType::f64);
    normal_(xt, 0.5, 2.0, g);
    Variable x(xt, true);
    const std::vector<double> s = {0.1, 0.3};
    Variable sv(Tensor::from_vector(s, {2}), true);
    Variable y = lsq_fake_quantize(x, sv, Variable(), qmin, qmax, 1, 1.0);
    sum(y).backward();
    std::vector<double> ds(2, 0.0);
    for (int n = 0; n < 3; ++n)
      for (int c = 0; c < 2; ++c)
        for (int k = 0; k < 5; ++k) {
          const int64_t i = (n * 2 + c) * 5 + k;
          const double v = xt.item(i) / s[c], q = std::nearbyint(v);
          const bool out = q < qmin || q > qmax;
          ds[c] += q < qmin ? qmin : q > qmax ? qmax : q - v;
          EXPECT_DOUBLE_EQ(x.grad().item(i), out ? 0.0 : 1.0);
        }
    EXPECT_NEAR(sv.grad().item(0), ds[0], 1e-9) << bits;
    EXPECT_NEAR(sv.grad().item(1), ds[1], 1e-9) << bits;
  }
}

TEST(LsqFakeQuant, MatchesFakeQuantizeForwardAndKeepsTheStepPositive) {
  Generator g(4);
  Tensor x = Tensor::empty({64});
  normal_(x, 0, 1, g);
  Variable s(Tensor::from_vector<float>({0.037f}, {1}), true);
  Tensor a = lsq_fake_quantize(Variable(x), s, Variable(), -128, 127).value();
  Tensor b = fake_quantize(Variable(x), scales({0.037f}), zps({0}), -128, 127).value();
  EXPECT_EQ(a.to_vector(), b.to_vector());
  // A step pushed below eps is used as eps and receives no gradient.
  Variable neg(Tensor::from_vector<float>({-0.5f}, {1}), true);
  Variable y = lsq_fake_quantize(Variable(x), neg, Variable(), -128, 127);
  for (double v : y.value().to_vector()) EXPECT_TRUE(std::isfinite(v));
  sum(y).backward();
  EXPECT_EQ(neg.grad().item(0), 0.0);
  EXPECT_THROW(lsq_fake_quantize(Variable(x), s, Variable(), -128, 127, -1, 0.0), ValueError);
}

TEST(LsqFakeQuant, Float32GradientsOnLongRunsMatchADoubleReference) {
  // The f32 backward runs a vectorized loop with per-lane accumulators, on
  // runs longer than the lane count (with remainders) and per-tensor over
  // more than one block; check it against sums in double, with and without
  // the input's gradient.
  struct Case {
    Shape shape;
    int axis;
    std::vector<float> s, z;
    int64_t qmin, qmax;
  };
  const std::vector<Case> cases = {
      {{3, 4, 37}, 1, {0.11f, 0.2f, 0.05f, 0.3f}, {0, 0, 0, 0}, -8, 7},
      {{2, 2, 1000}, 1, {0.4f, 0.07f}, {3, 9}, 0, 15},
      {{40000}, -1, {0.21f}, {2}, 0, 15},
  };
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& k = cases[ci];
    for (bool with_dx : {true, false}) {
      Generator g(17 + ci);
      Tensor xt = Tensor::empty(k.shape);
      normal_(xt, 0.5, 1.5, g);
      Tensor wt = Tensor::empty(k.shape);
      normal_(wt, 0, 1, g);
      Variable x(xt, with_dx);
      Variable sv(Tensor::from_vector(k.s, {(int64_t)k.s.size()}), true);
      Variable zv(Tensor::from_vector(k.z, {(int64_t)k.z.size()}), true);
      sum(mul(lsq_fake_quantize(x, sv, zv, k.qmin, k.qmax, k.axis, 0.5), Variable(wt))).backward();
      const int64_t C = static_cast<int64_t>(k.s.size());
      const int64_t inner = k.axis < 0 ? xt.numel() : k.shape[2];
      std::vector<double> ds(C, 0.0), dz(C, 0.0);
      const float* px = xt.data<float>();
      const float* pw = wt.data<float>();
      int64_t dx_wrong = 0;
      for (int64_t i = 0; i < xt.numel(); ++i) {
        const int64_t c = (i / inner) % C;
        const float inv = 1.0f / k.s[c];
        const float xs = px[i] * inv;
        const float q = std::nearbyint(xs) + k.z[c];
        const bool below = q < k.qmin, above = q > k.qmax;
        ds[c] += static_cast<double>(pw[i]) *
                 (below ? k.qmin - k.z[c] : above ? k.qmax - k.z[c] : static_cast<double>((q - k.z[c]) - xs));
        if (below || above) dz[c] -= static_cast<double>(pw[i]) * k.s[c];
        if (with_dx) dx_wrong += x.grad().data<float>()[i] != ((below || above) ? 0.0f : pw[i]);
      }
      EXPECT_EQ(dx_wrong, 0) << ci;
      for (int64_t c = 0; c < C; ++c) {
        EXPECT_NEAR(sv.grad().item(c), 0.5 * ds[c], 1e-5 * (1 + std::fabs(ds[c]))) << ci << " " << c;
        EXPECT_NEAR(zv.grad().item(c), 0.5 * dz[c], 1e-5 * (1 + std::fabs(dz[c]))) << ci << " " << c;
        EXPECT_NE(dz[c], 0.0) << "case " << ci << " channel " << c << " never clamps";
      }
    }
  }
}
