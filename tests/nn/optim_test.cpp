#include "nn/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <numbers>

namespace qforge::nn {
namespace {

using autograd::Variable;

Variable param(std::vector<double> v) { return Variable(Tensor::from_vector<double>(v, {(int64_t)v.size()}), true); }
void grad(Variable& p, std::vector<double> g) { p.set_grad(Tensor::from_vector<double>(g, {(int64_t)g.size()})); }

TEST(SGD, PlainAndWeightDecay) {
  Variable p = param({1.0, -2.0});
  SGD opt({p}, {.lr = 0.1, .weight_decay = 0.01});
  grad(p, {0.5, 0.25});
  opt.step();
  EXPECT_DOUBLE_EQ(p.value().item(0), 1.0 - 0.1 * (0.5 + 0.01 * 1.0));
  EXPECT_DOUBLE_EQ(p.value().item(1), -2.0 - 0.1 * (0.25 + 0.01 * -2.0));
  EXPECT_EQ(opt.steps(), 1);
}

TEST(SGD, DecayVectorsFalseSkipsParametersOfDimensionOne) {
  // A vector (a bias or a norm's scale) gets no weight decay; a matrix does.
  for (bool adam : {false, true}) {
    Variable pv = param({1.0, -2.0});
    Variable pm(Tensor::from_vector<double>({1.0, -2.0}, {1, 2}), true);
    std::unique_ptr<Optimizer> opt;
    if (adam)
      opt = std::make_unique<Adam>(std::vector<Variable>{pv, pm},
                                   AdamOptions{.lr = 0.1, .weight_decay = 0.5, .decay_vectors = false});
    else
      opt = std::make_unique<SGD>(std::vector<Variable>{pv, pm},
                                  SGDOptions{.lr = 0.1, .weight_decay = 0.5, .decay_vectors = false});
    grad(pv, {0.5, 0.25});
    pm.set_grad(Tensor::from_vector<double>({0.5, 0.25}, {1, 2}));
    opt->step();
    if (!adam) {
      EXPECT_DOUBLE_EQ(pv.value().item(0), 1.0 - 0.1 * 0.5);
      EXPECT_DOUBLE_EQ(pv.value().item(1), -2.0 - 0.1 * 0.25);
      EXPECT_DOUBLE_EQ(pm.value().item(0), 1.0 - 0.1 * (0.5 + 0.5 * 1.0));
      EXPECT_DOUBLE_EQ(pm.value().item(1), -2.0 - 0.1 * (0.25 + 0.5 * -2.0));
    } else {
      // Adam's first step moves each value by lr * sign(g + wd * p): the
      // vector follows its gradient alone, the matrix's second entry turns
      // around (0.25 + 0.5 * -2 < 0).
      EXPECT_NEAR(pv.value().item(1), -2.0 - 0.1, 1e-6);
      EXPECT_NEAR(pm.value().item(1), -2.0 + 0.1, 1e-6);
    }
  }
}

TEST(SGD, MomentumDampeningNesterovByHand) {
  for (bool nesterov : {false, true}) {
    const double lr = 0.1, mu = 0.9, damp = nesterov ? 0.0 : 0.3;
    Variable p = param({1.0});
    SGD opt({p}, {.lr = lr, .momentum = mu, .dampening = damp, .nesterov = nesterov});
    double w = 1.0, buf = 0;
    const double gs[3] = {0.5, -0.2, 0.7};
    for (int t = 0; t < 3; ++t) {
      grad(p, {gs[t]});
      opt.step();
      buf = t == 0 ? gs[t] : mu * buf + (1 - damp) * gs[t];
      w -= lr * (nesterov ? gs[t] + mu * buf : buf);
      EXPECT_NEAR(p.value().item(0), w, 1e-15) << "nesterov " << nesterov << " step " << t;
    }
  }
  Variable p = param({1.0});
  EXPECT_THROW(SGD({p}, {.lr = 0.1, .momentum = 0, .nesterov = true}), ValueError);
  EXPECT_THROW(SGD({p}, {.lr = -1}), ValueError);
  EXPECT_THROW(SGD({p, p}, {.lr = 0.1}), ValueError);
}

TEST(Adam, TwoStepsByHandAndAdamW) {
  for (bool decoupled : {false, true}) {
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    Variable p = param({0.5, -1.5});
    Adam opt({p}, {.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd}, decoupled);
    EXPECT_EQ(opt.name(), decoupled ? "AdamW" : "Adam");
    double w[2] = {0.5, -1.5}, m[2] = {0, 0}, v[2] = {0, 0};
    const double gs[2][2] = {{0.3, -0.1}, {-0.6, 0.2}};
    for (int t = 1; t <= 2; ++t) {
      grad(p, {gs[t - 1][0], gs[t - 1][1]});
      opt.step();
      for (int k = 0; k < 2; ++k) {
        double g = gs[t - 1][k];
        if (decoupled) {
          w[k] *= 1 - lr * wd;
        } else {
          g += wd * w[k];
        }
        m[k] = b1 * m[k] + (1 - b1) * g;
        v[k] = b2 * v[k] + (1 - b2) * g * g;
        const double mhat = m[k] / (1 - std::pow(b1, t)), vhat = v[k] / (1 - std::pow(b2, t));
        w[k] -= lr * mhat / (std::sqrt(vhat) + eps);
        EXPECT_NEAR(p.value().item(k), w[k], 1e-12) << "decoupled " << decoupled << " t " << t;
      }
    }
  }
}

TEST(Optimizer, SkipsParametersWithoutGradient) {
  Variable a = param({1.0}), b = param({2.0});
  Adam opt({a, b}, {.lr = 0.1});
  grad(a, {1.0});
  opt.step();
  EXPECT_NE(a.value().item(0), 1.0);
  EXPECT_EQ(b.value().item(0), 2.0);
  opt.zero_grad();
  EXPECT_FALSE(a.has_grad());
}

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  auto run = [](bool reload) {
    Variable p = param({0.5, -1.5, 2.0});
    auto opt = std::make_unique<Adam>(std::vector<Variable>{p}, AdamOptions{.lr = 0.05});
    for (int t = 0; t < 5; ++t) {
      if (reload && t == 3) {
        auto sd = opt->state_dict();
        opt = std::make_unique<Adam>(std::vector<Variable>{p}, AdamOptions{.lr = 0.05});
        opt->load_state_dict(sd);
        EXPECT_EQ(opt->steps(), 3);
      }
      grad(p, {std::sin(t + 1.0), std::cos(t * 2.0), 0.1 * t});
      opt->step();
    }
    return p.value().to_vector();
  };
  EXPECT_EQ(run(false), run(true));

  Variable p = param({1.0}), q = param({1.0, 2.0});
  SGD s1({p}, {.lr = 0.1, .momentum = 0.9});
  grad(p, {1.0});
  s1.step();
  SGD s2({q}, {.lr = 0.1, .momentum = 0.9});
  EXPECT_THROW(s2.load_state_dict(s1.state_dict()), ShapeError);
  auto sd = s1.state_dict();
  sd["7.momentum_buffer"] = Tensor::zeros({1}, DType::f64);
  EXPECT_THROW(s1.load_state_dict(sd), ValueError);
  // A 0-d tensor in a per-element slot would overflow the next update.
  auto scalar_slot = s1.state_dict();
  scalar_slot["0.momentum_buffer"] = Tensor::scalar(1.0, DType::f64);
  EXPECT_THROW(s1.load_state_dict(scalar_slot), ShapeError);
  auto bogus = s1.state_dict();
  bogus["0.bogus"] = Tensor::zeros({1}, DType::f64);
  EXPECT_THROW(s1.load_state_dict(bogus), ValueError);
  auto neg = s1.state_dict();
  neg["step"] = Tensor::scalar(-3.0, DType::f64);
  EXPECT_THROW(s1.load_state_dict(neg), ValueError);
  neg["step"] = Tensor::scalar(std::nan(""), DType::f64);
  EXPECT_THROW(s1.load_state_dict(neg), ValueError);
  EXPECT_EQ(s1.steps(), 1);  // failed loads changed nothing
}

TEST(ClipGradNorm, ScalesOnlyAboveTheLimit) {
  Variable a = param({3.0}), b = param({4.0}), c = param({1.0});
  grad(a, {3.0});
  grad(b, {4.0});
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b, c}, 10.0), 5.0);
  EXPECT_EQ(a.grad().item(0), 3.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b, c}, 1.0), 5.0);
  EXPECT_NEAR(a.grad().item(0), 0.6, 1e-6);
  EXPECT_NEAR(b.grad().item(0), 0.8, 1e-6);
  grad(a, {std::nan("")});
  EXPECT_THROW(clip_grad_norm({a}, 1.0), ValueError);
}

TEST(Schedules, MatchPyTorchFormulas) {
  StepLr step(0.1, 10, 0.5);
  EXPECT_DOUBLE_EQ(step.lr_at(9), 0.1);
  EXPECT_DOUBLE_EQ(step.lr_at(10), 0.05);
  EXPECT_DOUBLE_EQ(step.lr_at(25), 0.025);
  MultiStepLr ms(1.0, {3, 6}, 0.1);
  EXPECT_DOUBLE_EQ(ms.lr_at(2), 1.0);
  EXPECT_DOUBLE_EQ(ms.lr_at(3), 0.1);
  EXPECT_NEAR(ms.lr_at(100), 0.01, 1e-15);
  CosineLr cos(1.0, 100, 0.1);
  EXPECT_DOUBLE_EQ(cos.lr_at(0), 1.0);
  EXPECT_NEAR(cos.lr_at(50), 0.55, 1e-12);
  EXPECT_DOUBLE_EQ(cos.lr_at(100), 0.1);
  EXPECT_DOUBLE_EQ(cos.lr_at(1000), 0.1);
  // OneCycleLR(max_lr=1, total_steps=100): starts at 1/25, peaks at step 29,
  // ends at 1/25/1e4 on step 99.
  OneCycleLr oc(1.0, 100);
  EXPECT_NEAR(oc.lr_at(0), 0.04, 1e-12);
  EXPECT_NEAR(oc.lr_at(29), 1.0, 1e-12);
  EXPECT_NEAR(oc.lr_at(99), 0.04 / 1e4, 1e-15);
  const double mid_up = 1.0 + (0.04 - 1.0) / 2 * (1 + std::cos(std::numbers::pi * 14.0 / 29.0));
  EXPECT_NEAR(oc.lr_at(14), mid_up, 1e-12);
  for (int s = 1; s < 29; ++s) EXPECT_GT(oc.lr_at(s), oc.lr_at(s - 1));
  for (int s = 30; s < 100; ++s) EXPECT_LT(oc.lr_at(s), oc.lr_at(s - 1));
  WarmupLr warm(std::make_shared<ConstantLr>(0.2), 4, 0.5);
  EXPECT_DOUBLE_EQ(warm.lr_at(0), 0.1);
  EXPECT_DOUBLE_EQ(warm.lr_at(2), 0.15);
  EXPECT_DOUBLE_EQ(warm.lr_at(4), 0.2);
  EXPECT_THROW(WarmupLr(std::make_shared<ConstantLr>(0.2), 4, 0.0), ValueError);
  EXPECT_THROW(CosineLr(0.1, 0), ValueError);
  EXPECT_THROW(OneCycleLr(0.1, 10, 1.5), ValueError);
  EXPECT_THROW(ConstantLr(0), ValueError);
}

}  // namespace
}  // namespace qforge::nn
