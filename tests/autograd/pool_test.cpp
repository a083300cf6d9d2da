#include <gtest/gtest.h>

#include <cmath>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

namespace {
Pool2dOptions pool(int64_t k, int64_t s, int64_t p, bool include_pad = true) {
  Pool2dOptions o;
  o.kernel = {k, k};
  o.stride = {s, s};
  o.padding = {p, p};
  o.count_include_pad = include_pad;
  return o;
}
}  // namespace

TEST(PoolGrad, MaxPool2d) {
  Generator g(31);
  for (auto [shape, o] : std::vector<std::pair<Shape, Pool2dOptions>>{
           {{1, 1, 2, 2}, pool(2, 2, 0)}, {{2, 3, 5, 4}, pool(2, 2, 0)}, {{1, 2, 5, 5}, pool(3, 2, 1)},
           {{2, 1, 4, 4}, pool(2, 1, 0)}}) {
    SCOPED_TRACE(shape_str(shape));
    const Pool2dOptions opt = o;
    expect_jacobian([opt](const std::vector<Variable>& v) { return max_pool2d(v[0], opt); }, {rand64(shape, g)});
  }
}

TEST(PoolGrad, AvgPool2d) {
  Generator g(32);
  for (bool inc : {true, false})
    for (auto [shape, o] : std::vector<std::pair<Shape, Pool2dOptions>>{
             {{1, 1, 2, 2}, pool(2, 2, 0, inc)}, {{2, 3, 5, 4}, pool(2, 2, 0, inc)},
             {{1, 2, 5, 5}, pool(3, 2, 1, inc)}}) {
      SCOPED_TRACE(shape_str(shape));
      const Pool2dOptions opt = o;
      expect_jacobian([opt](const std::vector<Variable>& v) { return avg_pool2d(v[0], opt); }, {rand64(shape, g)});
    }
}

TEST(PoolGrad, AdaptiveAvgPool2d) {
  Generator g(33);
  expect_jacobian([](const std::vector<Variable>& v) { return adaptive_avg_pool2d(v[0], 2, 3); },
                  {rand64({2, 2, 5, 7}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return adaptive_avg_pool2d(v[0], 3, 3); },
                  {rand64({1, 1, 3, 3}, g)});
}

TEST(PoolGrad, GlobalAvgPool2d) {
  Generator g(34);
  expect_jacobian([](const std::vector<Variable>& v) { return global_avg_pool2d(v[0]); },
                  {rand64({2, 3, 4, 5}, g)});
}

TEST(Pool, Values) {
  Tensor x = Tensor::from_vector<float>({1, 5, 2, 0, 3, 4, 8, 1, 0, 6, 2, 2, 7, 1, 3, 9}, {1, 1, 4, 4});
  EXPECT_EQ(max_pool2d(Variable(x), pool(2, 2, 0)).value().to_vector(), (std::vector<double>{5, 8, 7, 9}));
  EXPECT_EQ(avg_pool2d(Variable(x), pool(2, 2, 0)).value().to_vector(),
            (std::vector<double>{13.0 / 4, 11.0 / 4, 14.0 / 4, 16.0 / 4}));
  // With padding, count_include_pad divides corner windows by the full area.
  Tensor ones = Tensor::ones({1, 1, 3, 3});
  EXPECT_NEAR(avg_pool2d(Variable(ones), pool(3, 1, 1, true)).value().item(0), 4.0 / 9.0, 1e-6);
  EXPECT_NEAR(avg_pool2d(Variable(ones), pool(3, 1, 1, false)).value().item(0), 1.0, 1e-6);
  // Adaptive pooling of 5 into 3 uses PyTorch's overlapping windows [0,2) [1,4) [3,5).
  Tensor r = Tensor::from_vector<float>({0, 1, 2, 3, 4}, {1, 1, 1, 5});
  EXPECT_EQ(adaptive_avg_pool2d(Variable(r), 1, 3).value().to_vector(), (std::vector<double>{0.5, 2, 3.5}));
  EXPECT_THROW(max_pool2d(Variable(Tensor::zeros({1, 1, 1, 1})), pool(2, 2, 0)), ShapeError);
}

TEST(Pool, MaxPool2x2FastPathMatchesTheGeneralWindow) {
  // 2x2 windows with stride 2 take a dedicated loop: ties keep the first
  // maximum and NaN propagates, as in the general loop and in PyTorch.
  const float nan = std::nanf("");
  Tensor x = Tensor::from_vector<float>({1, 3, 3, 0, 2, 2, nan, 5, 3, 1, 9, 9, 0, 3, 9, 9}, {1, 1, 4, 4});
  Variable v(x, true);
  Variable y = max_pool2d(v, pool(2, 2, 0));
  const auto out = y.value().to_vector();
  EXPECT_EQ(out[0], 3);  // first of the tied 3s
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_EQ(out[2], 3);
  EXPECT_EQ(out[3], 9);
  y.backward(Tensor::ones({1, 1, 2, 2}));
  const auto g = v.grad().to_vector();
  const std::vector<double> want = {0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0};
  EXPECT_EQ(g, want);
  // Random input: every output is the maximum of its window.
  Tensor r = Tensor::empty({2, 3, 6, 8});
  Generator gen(3);
  normal_(r, 0, 1, gen);
  Tensor fast = max_pool2d(Variable(r), pool(2, 2, 0)).value();
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t oh = 0; oh < 3; ++oh)
      for (int64_t ow = 0; ow < 4; ++ow) {
        float best = -INFINITY;
        for (int dh = 0; dh < 2; ++dh)
          for (int dw = 0; dw < 2; ++dw) best = std::max(best, r.data<float>()[p * 48 + (2 * oh + dh) * 8 + 2 * ow + dw]);
        EXPECT_EQ(fast.data<float>()[p * 12 + oh * 4 + ow], best);
      }
}
