#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

TEST(ReduceGrad, Sum) {
  Generator g(51);
  expect_jacobian([](const std::vector<Variable>& v) { return sum(v[0]); }, {rand64({3, 4}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return sum(v[0], {1}); }, {rand64({2, 3, 4}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return sum(v[0], {0, 2}, true); }, {rand64({2, 3, 1}, g)});
}

TEST(ReduceGrad, Mean) {
  Generator g(52);
  expect_jacobian([](const std::vector<Variable>& v) { return mean(v[0]); }, {rand64({5}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return mean(v[0], {-1}, true); }, {rand64({2, 3, 4}, g)});
}

TEST(Reduce, Values) {
  Tensor x = Tensor::arange(6).reshape({2, 3});
  EXPECT_EQ(sum(Variable(x)).value().item(), 15);
  EXPECT_EQ(sum(Variable(x), {0}).value().to_vector(), (std::vector<double>{3, 5, 7}));
  EXPECT_EQ(mean(Variable(x), {1}, true).value().shape(), (Shape{2, 1}));
  EXPECT_EQ(mean(Variable(x), {1}).value().to_vector(), (std::vector<double>{1, 4}));
  EXPECT_THROW(sum(Variable(x), {0, 0}), IndexError);
}
