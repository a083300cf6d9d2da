#include <gtest/gtest.h>

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
