#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

namespace {
// Shape pairs that exercise broadcasting: equal, scalar, trailing, middle, leading.
const std::vector<std::pair<Shape, Shape>> kPairs = {
    {{3, 4}, {3, 4}}, {{2, 3, 5}, {}},     {{2, 3, 5}, {5}},    {{4, 1, 3}, {1, 2, 1}},
    {{1}, {3, 1}},    {{2, 1, 3}, {2, 4, 3}}, {{1, 1}, {1, 1}}, {{5, 3}, {1, 3}}};

void check_binary(Variable (*op)(const Variable&, const Variable&), bool positive_b) {
  Generator g(7);
  for (const auto& [sa, sb] : kPairs) {
    SCOPED_TRACE(shape_str(sa) + " op " + shape_str(sb));
    Tensor a = rand64(sa, g);
    Tensor b = positive_b ? rand64(sb, g, 0.5, 2.0) : rand64(sb, g);
    expect_jacobian([op](const std::vector<Variable>& v) { return op(v[0], v[1]); }, {a, b});
  }
}
}  // namespace

TEST(ElementwiseGrad, Add) { check_binary(&add, false); }
TEST(ElementwiseGrad, Sub) { check_binary(&sub, false); }
TEST(ElementwiseGrad, Mul) { check_binary(&mul, false); }
TEST(ElementwiseGrad, Div) { check_binary(&qforge::autograd::div, true); }

TEST(ElementwiseGrad, ScaleAddScalarNeg) {
  Generator g(1);
  Tensor a = rand64({3, 5}, g);
  expect_jacobian([](const std::vector<Variable>& v) { return scale(v[0], -2.5); }, {a});
  expect_jacobian([](const std::vector<Variable>& v) { return add_scalar(v[0], 3.0); }, {a});
  expect_jacobian([](const std::vector<Variable>& v) { return neg(v[0]); }, {a});
}

TEST(Elementwise, BroadcastValues) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({10, 20, 30}, {3});
  Tensor c = Tensor::from_vector<float>({100, 200}, {2, 1});
  EXPECT_EQ(add(Variable(a), Variable(b)).value().to_vector(), (std::vector<double>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ(mul(Variable(a), Variable(c)).value().to_vector(),
            (std::vector<double>{100, 200, 300, 800, 1000, 1200}));
  EXPECT_EQ(broadcast_shapes({4, 1, 3}, {2, 1}), (Shape{4, 2, 3}));
}

TEST(Elementwise, ShapeAndDtypeErrors) {
  Variable a(Tensor::zeros({2, 3}));
  Variable b(Tensor::zeros({4}));
  EXPECT_THROW(add(a, b), ShapeError);
  try {
    add(a, b);
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4]"), std::string::npos) << e.what();
  }
  Variable d(Tensor::zeros({2, 3}, DType::f64));
  EXPECT_THROW(add(a, d), DTypeError);
  Variable i(Tensor::zeros({2, 3}, DType::i32));
  EXPECT_THROW(add(i, i), DTypeError);
}

TEST(Elementwise, SumToShape) {
  Tensor t = Tensor::ones({2, 3, 4}, DType::f64);
  EXPECT_EQ(sum_to_shape(t, {3, 1}).to_vector(), (std::vector<double>{8, 8, 8}));
  EXPECT_EQ(sum_to_shape(t, {}).to_vector(), (std::vector<double>{24}));
  EXPECT_EQ(sum_to_shape(t, {2, 1, 4}).shape(), (Shape{2, 1, 4}));
}
