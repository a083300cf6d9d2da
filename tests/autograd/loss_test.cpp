#include <gtest/gtest.h>

#include <cmath>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

TEST(LossGrad, Softmax) {
  Generator g(61);
  for (int ax : {-1, 0, 1})
    expect_jacobian([ax](const std::vector<Variable>& v) { return softmax(v[0], ax); }, {rand64({3, 4, 2}, g, -2, 2)});
  expect_jacobian([](const std::vector<Variable>& v) { return softmax(v[0]); }, {rand64({1, 1}, g)});
}

TEST(LossGrad, LogSoftmax) {
  Generator g(62);
  for (int ax : {-1, 1})
    expect_jacobian([ax](const std::vector<Variable>& v) { return log_softmax(v[0], ax); },
                    {rand64({2, 5, 3}, g, -2, 2)});
}

TEST(LossGrad, CrossEntropy) {
  Generator g(63);
  Tensor t = Tensor::from_vector<int32_t>({2, 0, 4, 4, 1}, {5});
  expect_jacobian([t](const std::vector<Variable>& v) { return cross_entropy(v[0], t); }, {rand64({5, 5}, g, -3, 3)});
  Tensor t1 = Tensor::from_vector<int32_t>({0}, {1});
  expect_jacobian([t1](const std::vector<Variable>& v) { return cross_entropy(v[0], t1); }, {rand64({1, 1}, g)});
  for (double e : {0.1, 0.5, 0.95})
    expect_jacobian([t, e](const std::vector<Variable>& v) { return cross_entropy(v[0], t, e); },
                    {rand64({5, 5}, g, -3, 3)});
}

TEST(LossGrad, DistillationKl) {
  Generator g(64);
  for (double temp : {1.0, 4.0, 0.5}) {
    const Tensor teacher = rand64({4, 6}, g, -3, 3);
    expect_jacobian([teacher, temp](const std::vector<Variable>& v) { return distillation_kl(v[0], teacher, temp); },
                    {rand64({4, 6}, g, -3, 3)});
  }
}

TEST(Loss, DistillationKlValue) {
  // T^2 / N * sum_i sum_c q_ic (log q_ic - log p_ic), written out by hand.
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 0.5f, -1, 2}, {2, 3});
  Tensor t = Tensor::from_vector<float>({0, 2, 1, 3, 3, -2}, {2, 3});
  for (double temp : {1.0, 3.0}) {
    double expect = 0;
    for (int i = 0; i < 2; ++i) {
      double zx = 0, zt = 0;
      for (int c = 0; c < 3; ++c) {
        zx += std::exp(x.item(i * 3 + c) / temp);
        zt += std::exp(t.item(i * 3 + c) / temp);
      }
      for (int c = 0; c < 3; ++c) {
        const double q = std::exp(t.item(i * 3 + c) / temp) / zt, p = std::exp(x.item(i * 3 + c) / temp) / zx;
        expect += q * (std::log(q) - std::log(p));
      }
    }
    EXPECT_NEAR(distillation_kl(Variable(x), t, temp).value().item(), expect * temp * temp / 2, 1e-5);
  }
  // Equal logits: no loss and no gradient.
  Variable same(x.clone(), true);
  Variable l = distillation_kl(same, x, 2.0);
  EXPECT_NEAR(l.value().item(), 0, 1e-6);
  l.backward();
  for (int64_t i = 0; i < 6; ++i) EXPECT_NEAR(same.grad().item(i), 0, 1e-7);
  EXPECT_THROW(distillation_kl(Variable(x), Tensor::zeros({2, 4}), 1), ShapeError);
  EXPECT_THROW(distillation_kl(Variable(x), t, 0), ValueError);
  EXPECT_THROW(distillation_kl(Variable(x), t, -1), ValueError);
  EXPECT_THROW(distillation_kl(Variable(x), t, 1e-9), ValueError);  // 1 / T would overflow float
  Tensor bad = t.clone();
  bad.data<float>()[4] = NAN;
  EXPECT_THROW(distillation_kl(Variable(x), bad, 1), ValueError);
}

TEST(Loss, LabelSmoothingValue) {
  // -sum_c q_c log p_c with q = (1 - e)·onehot + e/C, written out by hand.
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 0.5f, -1, 2}, {2, 3});
  Tensor t = Tensor::from_vector<int32_t>({2, 0}, {2});
  const double e = 0.2;
  double expect = 0;
  for (int i = 0; i < 2; ++i) {
    double z = 0;
    for (int c = 0; c < 3; ++c) z += std::exp(double(x.item(i * 3 + c)));
    for (int c = 0; c < 3; ++c) {
      const double q = (c == t.data<int32_t>()[i] ? 1 - e : 0) + e / 3;
      expect -= q * (x.item(i * 3 + c) - std::log(z));
    }
  }
  EXPECT_NEAR(cross_entropy(Variable(x), t, e).value().item(), expect / 2, 1e-5);
  EXPECT_NEAR(cross_entropy(Variable(x), t, 0).value().item(), cross_entropy(Variable(x), t).value().item(), 0);
  EXPECT_THROW(cross_entropy(Variable(x), t, 1.0), ValueError);
  EXPECT_THROW(cross_entropy(Variable(x), t, -0.1), ValueError);
}

TEST(Loss, Values) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 1000, 0, -1000}, {2, 3});
  Tensor sm = softmax(Variable(x)).value();
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(sm.item(2), std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(sm.item(3), 1.0, 1e-6);  // stable for large logits
  Tensor t = Tensor::from_vector<int32_t>({2, 0}, {2});
  const double expect = (-(3.0 - std::log(z)) + 0.0) / 2.0;
  EXPECT_NEAR(cross_entropy(Variable(x), t).value().item(), expect, 1e-5);
}

TEST(Loss, BadTargets) {
  Variable x(Tensor::zeros({2, 3}));
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector<int32_t>({0, 3}, {2})), IndexError);
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector<int32_t>({-1, 0}, {2})), IndexError);
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector<int32_t>({0}, {1})), ShapeError);
  EXPECT_THROW(cross_entropy(x, Tensor::zeros({2})), DTypeError);
}
