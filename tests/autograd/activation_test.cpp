#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::away_from;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

namespace {
void check_unary(const std::function<Variable(const Variable&)>& op, double lo, double hi,
                 std::vector<double> kinks) {
  Generator g(3);
  for (const Shape& s : std::vector<Shape>{{1}, {7}, {3, 5}, {2, 1, 3}}) {
    SCOPED_TRACE(shape_str(s));
    Tensor x = away_from(rand64(s, g, lo, hi), kinks);
    expect_jacobian([&](const std::vector<Variable>& v) { return op(v[0]); }, {x});
  }
}
}  // namespace

TEST(ActivationGrad, Relu) { check_unary([](const Variable& x) { return relu(x); }, -2, 2, {0}); }
TEST(ActivationGrad, Relu6) { check_unary([](const Variable& x) { return relu6(x); }, -2, 8, {0, 6}); }
TEST(ActivationGrad, LeakyRelu) {
  check_unary([](const Variable& x) { return leaky_relu(x, 0.1); }, -2, 2, {0});
}
TEST(ActivationGrad, Sigmoid) { check_unary([](const Variable& x) { return sigmoid(x); }, -6, 6, {}); }
TEST(ActivationGrad, Tanh) { check_unary([](const Variable& x) { return qforge::autograd::tanh(x); }, -3, 3, {}); }
TEST(ActivationGrad, Clamp) {
  check_unary([](const Variable& x) { return clamp(x, -0.5, 0.7); }, -2, 2, {-0.5, 0.7});
}

TEST(Activation, Values) {
  Variable x(Tensor::from_vector<float>({-3, -0.5f, 0, 2, 7}, {5}));
  EXPECT_EQ(relu(x).value().to_vector(), (std::vector<double>{0, 0, 0, 2, 7}));
  EXPECT_EQ(relu6(x).value().to_vector(), (std::vector<double>{0, 0, 0, 2, 6}));
  EXPECT_EQ(clamp(x, -1, 1).value().to_vector(), (std::vector<double>{-1, -0.5, 0, 1, 1}));
  EXPECT_NEAR(sigmoid(x).value().item(0), 1.0 / (1.0 + std::exp(3.0)), 1e-7);
  EXPECT_NEAR(leaky_relu(x, 0.2).value().item(0), -0.6, 1e-6);
  // sigmoid is stable for large magnitudes
  Variable big(Tensor::from_vector<float>({-200, 200}, {2}));
  EXPECT_EQ(sigmoid(big).value().to_vector(), (std::vector<double>{0, 1}));
  EXPECT_THROW(clamp(x, 1, -1), ValueError);
}
