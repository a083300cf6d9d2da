#include <gtest/gtest.h>

#include <cmath>

#include "nn/layers.h"

namespace qforge::nn {
namespace {

using autograd::Variable;

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  normal_(t, 0, 1, g);
  return t;
}

TEST(Linear, ShapesValuesAndPyTorchInitBounds) {
  Generator g(0);
  Linear fc(50, 7, true, g);
  const double bound = 1 / std::sqrt(50.0);
  for (double w : fc.weight().value().to_vector()) EXPECT_LE(std::abs(w), bound);
  for (double b : fc.bias().value().to_vector()) EXPECT_LE(std::abs(b), bound);
  Tensor x = randn({3, 50}, 1);
  Tensor y = fc.forward(Variable(x)).value();
  ASSERT_EQ(y.shape(), (Shape{3, 7}));
  auto W = fc.weight().value().mat<float>();
  auto X = x.mat<float>();
  for (int i = 0; i < 3; ++i)
    for (int o = 0; o < 7; ++o) {
      double s = fc.bias().value().item(o);
      for (int k = 0; k < 50; ++k) s += static_cast<double>(X(i, k)) * W(o, k);
      EXPECT_NEAR(y.item(i * 7 + o), s, 1e-4);
    }
  Linear nobias(4, 2, false);
  EXPECT_FALSE(nobias.bias().defined());
  EXPECT_EQ(nobias.parameters().size(), 1u);
  EXPECT_THROW(fc.forward(Variable(randn({3, 49}, 0))), ShapeError);
  EXPECT_THROW(Linear(0, 3), ValueError);
}

TEST(Conv2d, ShapesGroupsAndChecks) {
  Conv2d c(Conv2dSpec{4, 8, {3, 3}, {2, 2}, {1, 1}, {1, 1}, 2, true});
  EXPECT_EQ(c.weight().shape(), (Shape{8, 2, 3, 3}));
  const double bound = 1 / std::sqrt(2.0 * 9);
  for (double w : c.weight().value().to_vector()) EXPECT_LE(std::abs(w), bound);
  EXPECT_EQ(c.forward(Variable(randn({2, 4, 9, 9}, 0))).shape(), (Shape{2, 8, 5, 5}));
  Conv2d dw(6, 6, 3, 1, 1, false, 6);
  EXPECT_EQ(dw.weight().shape(), (Shape{6, 1, 3, 3}));
  EXPECT_EQ(dw.forward(Variable(randn({1, 6, 5, 5}, 0))).shape(), (Shape{1, 6, 5, 5}));
  EXPECT_THROW(Conv2d(4, 6, 3, 1, 0, true, 4), ValueError);  // 6 % 4
  EXPECT_THROW(Conv2d(4, 4, 0), ValueError);
  EXPECT_THROW(c.forward(Variable(randn({2, 3, 9, 9}, 0))), ShapeError);
}

TEST(BatchNorm, TrainUpdatesRunningStatsEvalUsesThem) {
  BatchNorm2d bn(3, 1e-5, 0.1);
  Tensor x = randn({4, 3, 5, 5}, 2);
  Tensor y = bn.forward(Variable(x)).value();
  // Training: each channel of the output has mean 0 and variance 1.
  for (int c = 0; c < 3; ++c) {
    double s = 0, q = 0;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) s += y.item((n * 3 + c) * 25 + i);
    const double mean = s / 100;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) q += std::pow(y.item((n * 3 + c) * 25 + i) - mean, 2);
    EXPECT_NEAR(mean, 0, 1e-5);
    EXPECT_NEAR(q / 100, 1, 1e-3);
  }
  // running = 0.9 * init + 0.1 * batch statistic (unbiased variance).
  for (int c = 0; c < 3; ++c) {
    double s = 0, q = 0;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) s += x.item((n * 3 + c) * 25 + i);
    const double mean = s / 100;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) q += std::pow(x.item((n * 3 + c) * 25 + i) - mean, 2);
    EXPECT_NEAR(bn.running_mean().item(c), 0.1 * mean, 1e-6);
    EXPECT_NEAR(bn.running_var().item(c), 0.9 + 0.1 * q / 99, 1e-5);
  }
  bn.eval();
  const auto rm = bn.running_mean().to_vector();
  Tensor ye = bn.forward(Variable(x)).value();
  EXPECT_EQ(bn.running_mean().to_vector(), rm);  // eval does not update
  const double v0 = bn.running_var().item(0);
  EXPECT_NEAR(ye.item(0), (x.item(0) - rm[0]) / std::sqrt(v0 + 1e-5), 1e-5);
  // Frozen in training mode behaves as eval.
  bn.train();
  bn.set_frozen(true);
  EXPECT_EQ(bn.forward(Variable(x)).value().to_vector(), ye.to_vector());
  EXPECT_EQ(bn.running_mean().to_vector(), rm);
  EXPECT_EQ(bn.state_dict().size(), 4u);
}

TEST(BatchNorm, OneDNoAffineAndNoRunningStats) {
  BatchNorm1d bn(4, 1e-5, 0.1, /*affine=*/false, /*track_running_stats=*/false);
  EXPECT_TRUE(bn.parameters().empty());
  EXPECT_TRUE(bn.state_dict().empty());
  Tensor x = randn({6, 4}, 3);
  bn.eval();  // no running statistics: eval normalizes with the batch's
  Tensor y = bn.forward(Variable(x)).value();
  double s = 0;
  for (int n = 0; n < 6; ++n) s += y.item(n * 4);
  EXPECT_NEAR(s, 0, 1e-5);
  EXPECT_THROW(bn.forward(Variable(randn({6, 4, 2, 2}, 0))), ShapeError);
  EXPECT_THROW(BatchNorm2d(0), ValueError);
  EXPECT_THROW(BatchNorm2d(3, 0.0), ValueError);
}

// Sequential runs a BatchNorm directly followed by a ReLU as one fused op: the
// same outputs, gradients and running statistics as the two modules one by
// one (a ReLU6 after the BatchNorm is left alone, and is equally exact).
TEST(Sequential, FusedBatchNormReluMatchesModulesOneByOne) {
  for (bool training : {true, false}) {
    for (int variant = 0; variant < 3; ++variant) {  // BN2d + ReLU, BN2d + ReLU6, BN1d + ReLU
      auto make = [variant] {
        Generator g(3);
        auto seq = std::make_shared<Sequential>();
        if (variant == 2) {
          seq->push_back("fc", std::make_shared<Linear>(6, 4, true, g));
          seq->push_back("bn", std::make_shared<BatchNorm1d>(4));
        } else {
          seq->push_back("conv", std::make_shared<Conv2d>(2, 4, 3, 1, 1, true, 1, g));
          seq->push_back("bn", std::make_shared<BatchNorm2d>(4));
        }
        if (variant == 1) seq->push_back("relu6", std::make_shared<ReLU6>());
        else seq->push_back("relu", std::make_shared<ReLU>());
        return seq;
      };
      auto fused = make(), plain = make();
      fused->train(training);
      plain->train(training);
      Tensor x = variant == 2 ? randn({5, 6}, 9) : randn({3, 2, 5, 5}, 9);
      Tensor gy = variant == 2 ? randn({5, 4}, 10) : randn({3, 4, 5, 5}, 10);
      Variable xf(x.clone(), true), xp(x.clone(), true);
      Variable yf = fused->forward(xf);
      Variable yp = xp;
      for (size_t i = 0; i < plain->size(); ++i) yp = (*plain)[i].forward(yp);
      // The fused op ran (or, for ReLU6, did not).
      EXPECT_STREQ(yf.node()->name, variant == 1 ? "relu6" : "batch_norm_relu");
      yf.backward(gy);
      yp.backward(gy);
      EXPECT_EQ(yf.value().to_vector(), yp.value().to_vector());
      EXPECT_EQ(xf.grad().to_vector(), xp.grad().to_vector());
      const auto pf = fused->named_parameters(), pp = plain->named_parameters();
      ASSERT_EQ(pf.size(), pp.size());
      for (size_t i = 0; i < pf.size(); ++i)
        EXPECT_EQ(pf[i].second.grad().to_vector(), pp[i].second.grad().to_vector()) << pf[i].first;
      for (const char* buf : {"bn.running_mean", "bn.running_var"})
        EXPECT_EQ(fused->state_dict().at(buf).to_vector(), plain->state_dict().at(buf).to_vector()) << buf;
    }
  }
}

TEST(Activations, ReLUReLU6IdentityFlatten) {
  Tensor x = Tensor::from_vector<float>({-1, 0.5, 7, 3}, {1, 1, 2, 2});
  EXPECT_EQ(ReLU().forward(Variable(x)).value().to_vector(), (std::vector<double>{0, 0.5, 7, 3}));
  EXPECT_EQ(ReLU6().forward(Variable(x)).value().to_vector(), (std::vector<double>{0, 0.5, 6, 3}));
  EXPECT_EQ(Identity().forward(Variable(x)).value().to_vector(), x.to_vector());
  EXPECT_EQ(Flatten().forward(Variable(x)).shape(), (Shape{1, 4}));
}

TEST(Pools, MaxAvgAdaptive) {
  Tensor x = Tensor::arange(16).reshape({1, 1, 4, 4});
  EXPECT_EQ(MaxPool2d(2).forward(Variable(x)).value().to_vector(), (std::vector<double>{5, 7, 13, 15}));
  EXPECT_EQ(AvgPool2d(2).forward(Variable(x)).value().to_vector(), (std::vector<double>{2.5, 4.5, 10.5, 12.5}));
  EXPECT_EQ(MaxPool2d(3, 1).forward(Variable(x)).shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(AdaptiveAvgPool2d(1).forward(Variable(x)).value().to_vector(), (std::vector<double>{7.5}));
  EXPECT_EQ(AdaptiveAvgPool2d(2).forward(Variable(x)).value().to_vector(),
            (std::vector<double>{2.5, 4.5, 10.5, 12.5}));
  EXPECT_THROW(MaxPool2d(0), ValueError);
  EXPECT_THROW(MaxPool2d(2, 1, 2), ValueError);
}

TEST(Dropout, TrainZeroesAndScalesEvalIsIdentity) {
  Dropout d(0.25);
  Tensor x = Tensor::ones({1000});
  manual_seed(5);
  auto y = d.forward(Variable(x)).value().to_vector();
  int zeros = 0;
  for (double v : y) {
    if (v == 0) {
      ++zeros;
    } else {
      EXPECT_NEAR(v, 1 / 0.75, 1e-6);
    }
  }
  EXPECT_GT(zeros, 200);
  EXPECT_LT(zeros, 300);
  d.eval();
  EXPECT_EQ(d.forward(Variable(x)).value().to_vector(), x.to_vector());
  EXPECT_THROW(Dropout(1.0), ValueError);
}

TEST(Sequential, NamesIndexingAndGradientsFlow) {
  Sequential s{std::make_shared<Linear>(3, 4), std::make_shared<ReLU>(), std::make_shared<Linear>(4, 2)};
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s[1].type_name(), "ReLU");
  EXPECT_EQ(s.named_parameters()[2].first, "2.weight");
  EXPECT_THROW(s[3], IndexError);
  Variable y = s.forward(Variable(randn({5, 3}, 1)));
  autograd::sum(y).backward();
  for (auto& p : s.parameters()) EXPECT_TRUE(p.has_grad());
}

}  // namespace
}  // namespace qforge::nn
