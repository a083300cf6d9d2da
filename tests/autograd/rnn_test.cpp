// lstm_layer: central-difference Jacobians in double through several steps,
// for one layer (every input, all three outputs) and two stacked layers, and
// the forward against the cell written out with primitive ops.
#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

namespace {

/// output, h_n and c_n side by side: [N, T*H + 2H].
Variable all_outputs(const LstmOutput& o) {
  const int64_t N = o.output.size(0);
  return concat({reshape(o.output, {N, -1}), o.h_n, o.c_n}, 1);
}

}  // namespace

TEST(RnnGrad, OneLayerEveryInput) {
  Generator g(21);
  const int64_t N = 2, T = 4, I = 3, H = 3;
  expect_jacobian(
      [](const std::vector<Variable>& v) { return all_outputs(lstm_layer(v[0], v[1], v[2], v[3], v[4], v[5], v[6])); },
      {rand64({N, T, I}, g), rand64({N, H}, g), rand64({N, H}, g), rand64({4 * H, I}, g), rand64({4 * H, H}, g),
       rand64({4 * H}, g), rand64({4 * H}, g)});
}

TEST(RnnGrad, TwoLayersThroughTime) {
  Generator g(22);
  const int64_t N = 2, T = 5, I = 2, H = 3;
  expect_jacobian(
      [](const std::vector<Variable>& v) {
        const LstmOutput a = lstm_layer(v[0], Variable(), Variable(), v[1], v[2], v[3], Variable());
        const LstmOutput b = lstm_layer(a.output, Variable(), Variable(), v[4], v[5], Variable(), v[6]);
        return all_outputs(b);
      },
      {rand64({N, T, I}, g), rand64({4 * H, I}, g), rand64({4 * H, H}, g), rand64({4 * H}, g),
       rand64({4 * H, H}, g), rand64({4 * H, H}, g), rand64({4 * H}, g)});
}

TEST(Rnn, ForwardEqualsTheCellWrittenWithPrimitiveOps) {
  Generator g(23);
  const int64_t N = 3, T = 6, I = 4, H = 5;
  Variable x(rand64({N, T, I}, g)), h0(rand64({N, H}, g)), c0(rand64({N, H}, g)), wi(rand64({4 * H, I}, g)),
      wh(rand64({4 * H, H}, g)), bi(rand64({4 * H}, g)), bh(rand64({4 * H}, g));
  const LstmOutput o = lstm_layer(x, h0, c0, wi, wh, bi, bh);
  Variable h = h0, c = c0;
  for (int64_t t = 0; t < T; ++t) {
    Variable xt = reshape(slice(x, 1, t, t + 1), {N, I});
    Variable gates = linear(xt, wi, bi) + linear(h, wh, bh);
    Variable i = sigmoid(slice(gates, 1, 0, H)), f = sigmoid(slice(gates, 1, H, 2 * H)),
             gg = tanh(slice(gates, 1, 2 * H, 3 * H)), og = sigmoid(slice(gates, 1, 3 * H, 4 * H));
    c = f * c + i * gg;
    h = og * tanh(c);
    const auto got = reshape(slice(o.output, 1, t, t + 1), {N, H}).value().to_vector();
    const auto want = h.value().to_vector();
    for (size_t k = 0; k < got.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-12) << "step " << t;
  }
  const auto hn = o.h_n.value().to_vector(), cn = o.c_n.value().to_vector();
  const auto hw = h.value().to_vector(), cw = c.value().to_vector();
  for (size_t k = 0; k < hn.size(); ++k) {
    EXPECT_NEAR(hn[k], hw[k], 1e-12);
    EXPECT_NEAR(cn[k], cw[k], 1e-12);
  }
}

TEST(Rnn, ChecksShapesAndDtypes) {
  Generator g(24);
  Variable x(rand64({2, 3, 4}, g)), wi(rand64({8, 4}, g)), wh(rand64({8, 2}, g));
  EXPECT_NO_THROW(lstm_layer(x, Variable(), Variable(), wi, wh, Variable(), Variable()));
  EXPECT_THROW(lstm_layer(x, Variable(), Variable(), Variable(rand64({8, 3}, g)), wh, Variable(), Variable()),
               ShapeError);
  EXPECT_THROW(lstm_layer(x, Variable(), Variable(), wi, Variable(rand64({8, 3}, g)), Variable(), Variable()),
               ShapeError);
  EXPECT_THROW(lstm_layer(x, Variable(rand64({3, 2}, g)), Variable(), wi, wh, Variable(), Variable()), ShapeError);
  EXPECT_THROW(lstm_layer(x, Variable(), Variable(), wi, wh, Variable(rand64({7}, g)), Variable()), ShapeError);
  EXPECT_THROW(lstm_layer(Variable(rand64({2, 0, 4}, g)), Variable(), Variable(), wi, wh, Variable(), Variable()),
               ShapeError);
  EXPECT_THROW(lstm_layer(Variable(Tensor::zeros({2, 3, 4})), Variable(), Variable(), wi, wh, Variable(), Variable()),
               DTypeError);
}
