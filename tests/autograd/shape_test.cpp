#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

TEST(ShapeGrad, Reshape) {
  Generator g(41);
  expect_jacobian([](const std::vector<Variable>& v) { return reshape(v[0], {3, -1}); }, {rand64({2, 3, 2}, g)});
}

TEST(ShapeGrad, Flatten) {
  Generator g(42);
  expect_jacobian([](const std::vector<Variable>& v) { return flatten(v[0]); }, {rand64({2, 3, 2, 1}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return flatten(v[0], 0, 1); }, {rand64({2, 3, 2}, g)});
}

TEST(ShapeGrad, Permute) {
  Generator g(43);
  expect_jacobian([](const std::vector<Variable>& v) { return permute(v[0], {2, 0, 1}); }, {rand64({2, 3, 4}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return permute(v[0], {1, 0}); }, {rand64({1, 5}, g)});
}

TEST(ShapeGrad, Concat) {
  Generator g(44);
  for (int ax : {0, 1, -1}) {
    SCOPED_TRACE(ax);
    Shape a{2, 3, 2}, b{2, 3, 2}, c{2, 3, 2};
    const int n = ax < 0 ? 2 : ax;
    a[n] = 1;
    b[n] = 3;
    c[n] = 2;
    expect_jacobian([ax](const std::vector<Variable>& v) { return concat({v[0], v[1], v[2]}, ax); },
                    {rand64(a, g), rand64(b, g), rand64(c, g)});
  }
}

TEST(ShapeGrad, Slice) {
  Generator g(45);
  expect_jacobian([](const std::vector<Variable>& v) { return slice(v[0], 1, 1, 5, 2); }, {rand64({2, 6, 3}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return slice(v[0], -1, 0, 1); }, {rand64({3, 4}, g)});
}

TEST(Shape, ValuesAndErrors) {
  Tensor x = Tensor::arange(6).reshape({2, 3});
  EXPECT_EQ(permute(Variable(x), {1, 0}).value().to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(slice(Variable(x), 1, 1, 3).value().to_vector(), (std::vector<double>{1, 2, 4, 5}));
  EXPECT_EQ(concat({Variable(x), Variable(x)}, 0).value().shape(), (Shape{4, 3}));
  EXPECT_EQ(flatten(Variable(Tensor::zeros({2, 3, 4, 5}))).value().shape(), (Shape{2, 60}));
  // reshape is a view
  Variable v(x);
  EXPECT_TRUE(reshape(v, {3, 2}).value().shares_storage(x));
  EXPECT_THROW(reshape(v, {4, 2}), ShapeError);
  EXPECT_THROW(permute(v, {0, 0}), IndexError);
  EXPECT_THROW(concat({Variable(x), Variable(Tensor::zeros({2, 2}))}, 0), ShapeError);
  EXPECT_THROW(slice(v, 2, 0, 1), IndexError);
}
