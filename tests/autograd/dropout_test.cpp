#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

TEST(DropoutGrad, Dropout) {
  Generator g(81);
  // Reseeding inside fn gives every evaluation the same mask.
  expect_jacobian(
      [](const std::vector<Variable>& v) {
        Generator mask_gen(99);
        return dropout(v[0], 0.4, true, mask_gen);
      },
      {rand64({4, 5}, g)});
}

TEST(Dropout, SeededMaskAndScaling) {
  Tensor x = Tensor::ones({10000});
  Generator a(5), b(5);
  Tensor ya = dropout(Variable(x), 0.3, true, a).value();
  Tensor yb = dropout(Variable(x), 0.3, true, b).value();
  EXPECT_EQ(ya.to_vector(), yb.to_vector());
  int zeros = 0;
  for (int64_t i = 0; i < ya.numel(); ++i) {
    const double v = ya.item(i);
    if (v == 0) ++zeros;
    else ASSERT_NEAR(v, 1.0 / 0.7, 1e-6);
  }
  EXPECT_NEAR(zeros / 10000.0, 0.3, 0.02);
  EXPECT_EQ(dropout(Variable(x), 0.3, false, a).value().to_vector(), x.to_vector());
  EXPECT_THROW(dropout(Variable(x), 1.0, true, a), ValueError);
}
