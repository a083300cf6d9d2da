#include <gtest/gtest.h>

#include "autograd/ops.h"

using namespace qforge;
using namespace qforge::autograd;

TEST(Variable, BackwardAccumulatesAndZeroGrad) {
  Variable x(Tensor::from_vector<double>({1, 2, 3}, {3}), true);
  Variable y = sum(mul(x, x));  // d/dx = 2x
  y.backward(/*retain_graph=*/true);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 4, 6}));
  y.backward();  // accumulates
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{4, 8, 12}));
  x.zero_grad();
  EXPECT_FALSE(x.has_grad());
}

TEST(Variable, SharedInputGetsBothPaths) {
  // y = x*x + x: a node used twice must receive both gradients.
  Variable x(Tensor::from_vector<double>({3}, {1}), true);
  Variable y = add(mul(x, x), x);
  y.backward();
  EXPECT_EQ(x.grad().item(), 7.0);
}

TEST(Variable, AccumulatingNeverWritesIntoASharedGradient) {
  // add() hands one gradient tensor to both its inputs, so two nodes (and a
  // pending consumer) can hold the same tensor. Here, after s = U + V runs,
  // U's and V's gradients are r's pending tensor; w then sends U a second
  // gradient before q's and V's turn. Summing it into U's tensor in place
  // would change V's and q's too (the total would be 156, not 36).
  Variable x(Tensor::from_vector<double>({1}, {1}), true);
  Variable u = scale(x, 2), v = scale(x, 3);
  Variable s = add(u, v);
  Variable w = scale(u, 5), q = scale(v, 7);
  Variable r = add(q, w);
  Variable z = add(r, s);  // z = 21x + 10x + 2x + 3x
  z.backward();
  EXPECT_EQ(x.grad().item(), 36.0);
}

TEST(Variable, SecondBackwardWithoutRetainIsAnError) {
  Variable x(Tensor::from_vector<double>({1, 2}, {2}), true);
  Variable y = sum(relu(x));
  y.backward();
  EXPECT_THROW(y.backward(), Error);
}

TEST(Variable, NoGradRecordsNothing) {
  Variable x(Tensor::ones({2}), true);
  Variable y;
  {
    NoGradGuard ng;
    y = mul(x, x);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(grad_enabled());
  Variable z = mul(x, Variable(Tensor::ones({2})));
  EXPECT_TRUE(z.requires_grad());
  EXPECT_FALSE(mul(Variable(Tensor::ones({2})), Variable(Tensor::ones({2}))).requires_grad());
}

TEST(Variable, OnlyInputsThatNeedGradReceiveIt) {
  Variable a(Tensor::ones({2, 2}), true), b(Tensor::ones({2, 2}), false);
  sum(matmul(a, b)).backward();
  EXPECT_TRUE(a.has_grad());
  EXPECT_FALSE(b.has_grad());
}

TEST(Variable, DeepGraphIsWalkedIteratively) {
  // 200k chained ops would overflow the stack with a recursive walk.
  Variable x(Tensor::from_vector<double>({1.0}, {1}), true);
  Variable y = x;
  for (int i = 0; i < 200000; ++i) y = add_scalar(y, 1e-6);
  sum(y).backward();
  EXPECT_EQ(x.grad().item(), 1.0);
}

TEST(Variable, DeepGraphIsDestroyedIteratively) {
  // A long graph that is never backpropagated must still be released without
  // recursing once per node.
  Variable x(Tensor::from_vector<double>({1.0}, {1}), true);
  Variable y = x;
  for (int i = 0; i < 300000; ++i) y = add_scalar(y, 1e-6);
  y = Variable();
  SUCCEED();
}

TEST(Variable, GraphIsFreedAfterBackward) {
  Tensor big = Tensor::ones({1000});
  std::weak_ptr<Node> weak;
  Variable x(Tensor::ones({1000}), true);
  {
    Variable y = mul(x, Variable(big));
    weak = y.node();
    sum(y).backward();
    // y still holds its node, but the node released its closure and inputs.
    EXPECT_TRUE(y.node()->inputs.empty());
  }
  EXPECT_TRUE(weak.expired());
}

TEST(Variable, DetachAndErrors) {
  Variable x(Tensor::ones({2}), true);
  Variable d = mul(x, x).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_THROW(mul(x, x).set_requires_grad(false), ValueError);
  EXPECT_THROW(Variable(Tensor::zeros({2}, DType::i32), true), DTypeError);
  EXPECT_THROW(mul(x, x).backward(), ShapeError);  // not a scalar
}
