// QConfig, the FakeQuantize module, fold_conv_bn, the QAT modules, fusion,
// prepare/prepare_qat and the QAT schedule.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>

#include "autograd/ops.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "core/archive.h"
#include "quant/convert.h"
#include "quant/fake_quantize.h"
#include "quant/fold.h"
#include "quant/prepare.h"
#include "quant/qat_modules.h"

namespace qforge::quant {
namespace {

using autograd::Variable;

Tensor randn(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(g.normal() * scale);
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.item(i) - b.item(i)));
  return m;
}

// ---- QConfig -------------------------------------------------------------------

TEST(QConfig, DefaultsAreInt8PerChannelWeightsAndUint8AffineActivations) {
  const QConfig q = default_qconfig();
  EXPECT_EQ(q.weight.spec.bits, 8);
  EXPECT_TRUE(q.weight.spec.is_signed);
  EXPECT_EQ(q.weight.spec.scheme, QScheme::symmetric);
  EXPECT_TRUE(q.weight.spec.per_channel);
  EXPECT_EQ(q.weight.spec.axis, 0);
  EXPECT_EQ(q.activation.spec.bits, 8);
  EXPECT_FALSE(q.activation.spec.is_signed);
  EXPECT_EQ(q.activation.spec.scheme, QScheme::affine);
  EXPECT_FALSE(q.activation.spec.per_channel);
  EXPECT_NO_THROW(q.validate("default"));
}

TEST(QConfig, ValidationNamesTheProblem) {
  QConfig q = default_qconfig();
  q.weight.observer = "moving_average";  // per-tensor observer on a per-channel spec
  try {
    q.validate("conv1");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("weight of conv1"), std::string::npos) << e.what();
  }
  q = default_qconfig();
  q.activation.observer = "kmeans";
  EXPECT_THROW(q.validate("x"), ValueError);
  q = default_qconfig();
  q.weight.spec.bits = 9;
  EXPECT_THROW(q.validate("x"), ValueError);
  q = default_qconfig();
  q.weight.lsq_learn_offset = true;  // needs LSQ and an affine scheme
  EXPECT_THROW(q.validate("x"), ValueError);
  EXPECT_THROW(QConfigMap().set_name("fc", q), ValueError);
}

TEST(QConfig, GlobMatching) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("fc", "fc"));
  EXPECT_FALSE(glob_match("fc", "fc1"));
  EXPECT_TRUE(glob_match("fc?", "fc1"));
  EXPECT_TRUE(glob_match("layers.*.conv1", "layers.3.conv1"));
  EXPECT_TRUE(glob_match("*conv*", "layers.3.conv1"));
  EXPECT_FALSE(glob_match("*conv", "layers.3.conv1"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYbc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYYb"));
}

TEST(QConfig, ResolutionOrderNameThenTypeThenGlobal) {
  QConfigMap m;
  QConfig four = default_qconfig();
  four.weight.spec.bits = 4;
  m.set_type("Linear", std::nullopt);
  m.set_name("fc2", four);
  m.set_name("conv*", std::nullopt);
  m.set_name("conv2", four);  // later globs win
  EXPECT_FALSE(m.resolve("fc1", "Linear").has_value());
  ASSERT_TRUE(m.resolve("fc2", "Linear").has_value());
  EXPECT_EQ(m.resolve("fc2", "Linear")->weight.spec.bits, 4);
  EXPECT_FALSE(m.resolve("conv1", "Conv2d").has_value());
  EXPECT_EQ(m.resolve("conv2", "Conv2d")->weight.spec.bits, 4);
  EXPECT_EQ(m.resolve("other", "Conv2d")->weight.spec.bits, 8);
}

// ---- FakeQuantize module ----------------------------------------------------------

TEST(FakeQuantizeModule, ObservesInTrainingOnlyAndMatchesTheOp) {
  FakeQuantize fq(default_activation_qconfig());
  const Tensor x = randn({4, 3, 5, 5}, 1);
  Variable y = fq(Variable(x));
  const QParams p = fq.observer().qparams();
  EXPECT_EQ(fq.qparams().scale, p.scale);
  EXPECT_EQ(fq.qparams().zero_point, p.zero_point);
  const Variable ref = autograd::fake_quantize(Variable(x), p.scale_tensor(), p.zero_point_tensor(), 0, 255);
  EXPECT_EQ(max_abs_diff(y.value(), ref.value()), 0.0);

  // Eval never moves the qparams.
  fq.eval();
  fq(Variable(randn({4, 3, 5, 5}, 2, 10.0)));
  EXPECT_EQ(fq.qparams().scale, p.scale);
  // ... unless calibrating.
  fq.set_calibrating(true);
  fq(Variable(randn({4, 3, 5, 5}, 2, 10.0)));
  EXPECT_NE(fq.qparams().scale, p.scale);
}

TEST(FakeQuantizeModule, SwitchesAndErrors) {
  FakeQuantize fq(default_activation_qconfig());
  const Tensor x = randn({64}, 3);
  fq.eval();
  try {
    fq(Variable(x));
    FAIL() << "fake quant without qparams must throw";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("no quantization parameters"), std::string::npos) << e.what();
  }
  fq.train();
  fq.enable_fake_quant(false);
  Variable y = fq(Variable(x));
  EXPECT_EQ(max_abs_diff(y.value(), x), 0.0);  // passes through, but observed
  EXPECT_TRUE(fq.has_qparams());
  const auto s0 = fq.qparams().scale;
  fq.enable_observer(false);
  fq(Variable(randn({64}, 4, 100.0)));
  EXPECT_EQ(fq.qparams().scale, s0);
  EXPECT_THROW(fq.set_lsq_learning(true), ValueError);
}

TEST(FakeQuantizeModule, PerChannelWeightsUseOneScalePerOutputChannel) {
  FakeQuantize fq(default_weight_qconfig(), 3);
  Tensor w = randn({3, 2, 3, 3}, 5);
  for (int64_t i = 18; i < 36; ++i) w.data<float>()[i] *= 10;  // channel 1 is wider
  fq(Variable(w));
  const QParams p = fq.qparams();
  ASSERT_EQ(p.scale.size(), 3u);
  EXPECT_GT(p.scale[1], 5 * p.scale[0]);
  EXPECT_EQ(p.zero_point, std::vector<int32_t>(3, 0));
  EXPECT_THROW(FakeQuantize(default_weight_qconfig(), 0), ValueError);
}

TEST(FakeQuantizeModule, LsqInitializesFromObserverThenLearnsAPositiveStep) {
  QConfig q = lsq_qconfig(4, 4);
  FakeQuantize fq(q.activation);
  ASSERT_TRUE(fq.is_lsq());
  const Tensor x = randn({256}, 6);
  fq.enable_fake_quant(true);
  fq.set_lsq_learning(false);
  fq(Variable(x));  // observer phase
  const QParams obs = fq.qparams();
  fq.set_lsq_learning(true);
  Variable y = fq(Variable(x));
  EXPECT_TRUE(fq.lsq_learning());
  EXPECT_EQ(fq.param("lsq_scale").value().data<float>()[0], obs.scale[0]);
  EXPECT_EQ(fq.qparams().zero_point, obs.zero_point);
  autograd::sum(y).backward();
  ASSERT_TRUE(fq.param("lsq_scale").has_grad());
  EXPECT_NE(fq.param("lsq_scale").grad().item(), 0.0);
  // A step pushed below zero is projected back to eps in the next forward.
  fq.param("lsq_scale").value().data<float>()[0] = -1.f;
  fq(Variable(x));
  EXPECT_EQ(fq.param("lsq_scale").value().data<float>()[0], kMinScale);
}

TEST(FakeQuantizeModule, LsqDataInitIsTwiceMeanAbsOverSqrtQp) {
  QConfig q = lsq_qconfig(4, 4);
  q.weight.lsq_init = LsqInit::data;
  FakeQuantize fq(q.weight, 2);
  Tensor w = Tensor::from_vector<float>({1, -1, 3, -3, 0.5, 0.5, -0.5, 0.5}, {2, 4});
  fq.set_lsq_learning(true);
  fq(Variable(w));
  const float* s = fq.param("lsq_scale").value().data<float>();
  EXPECT_NEAR(s[0], 2 * 2.0 / std::sqrt(7.0), 1e-6);  // Qp = 7 at 4 bits signed
  EXPECT_NEAR(s[1], 2 * 0.5 / std::sqrt(7.0), 1e-6);
}

// ---- fold_conv_bn and the QAT modules -----------------------------------------------

/// A conv + BN pair with non-trivial statistics and affine parameters.
struct ConvBn {
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
};

ConvBn make_conv_bn(bool bias, uint64_t seed) {
  Generator g(seed);
  ConvBn r;
  r.conv = std::make_shared<nn::Conv2d>(3, 4, 3, 1, 1, bias, 1, g);
  r.bn = std::make_shared<nn::BatchNorm2d>(4);
  r.bn->running_mean().copy_from(randn({4}, seed + 1, 0.3));
  Tensor v = randn({4}, seed + 2, 0.5);
  for (int64_t i = 0; i < 4; ++i) v.data<float>()[i] = 0.2f + std::fabs(v.data<float>()[i]);
  r.bn->running_var().copy_from(v);
  r.bn->weight().value().copy_from(randn({4}, seed + 3, 0.5));
  r.bn->bias().value().copy_from(randn({4}, seed + 4, 0.5));
  return r;
}

TEST(Fold, FoldedConvEqualsConvThenEvalBatchNorm) {
  for (bool bias : {false, true}) {
    ConvBn cb = make_conv_bn(bias, 10);
    cb.bn->eval();
    const Variable x(randn({2, 3, 6, 6}, 11));
    const Tensor ref = (*cb.bn)((*cb.conv)(x)).value();
    FoldedConvBn f = fold_conv_bn(cb.conv->weight(), cb.conv->bias(), *cb.bn);
    const Tensor got = autograd::conv2d(x, f.weight, f.bias, cb.conv->options()).value();
    EXPECT_LT(max_abs_diff(got, ref), 2e-5) << "bias " << bias;
  }
}

TEST(Fold, ZeroGammaFoldsToAZeroChannelAndNoGradientBlowUp) {
  ConvBn cb = make_conv_bn(false, 20);
  cb.bn->weight().value().data<float>()[2] = 0.f;
  auto q = std::make_shared<QATConvBn2d>(*cb.conv, cb.bn, default_qconfig());
  const Variable x(randn({2, 3, 6, 6}, 21), true);
  Variable y = (*q)(x);
  autograd::sum(y).backward();
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_TRUE(std::isfinite(y.value().item(i)));
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_TRUE(std::isfinite(x.grad().item(i)));
}

TEST(QATModules, ConvBnReLUWithFakeQuantOffMatchesTheFloatLayersInTrainingAndEval) {
  ConvBn a = make_conv_bn(true, 30);
  ConvBn b = make_conv_bn(true, 30);  // same numbers, separate objects
  auto q = std::make_shared<QATConvBnReLU2d>(*b.conv, b.bn, default_qconfig());
  enable_fake_quant(*q, false);
  const Variable x(randn({4, 3, 6, 6}, 31));
  const Tensor ref = autograd::relu((*a.bn)((*a.conv)(x))).value();
  const Tensor got = (*q)(x).value();
  EXPECT_LT(max_abs_diff(got, ref), 1e-4);
  // Both updated their running statistics the same way.
  EXPECT_LT(max_abs_diff(a.bn->running_mean(), b.bn->running_mean()), 1e-5);
  EXPECT_LT(max_abs_diff(a.bn->running_var(), b.bn->running_var()), 1e-5);
  a.bn->eval();
  q->eval();
  const Tensor ref_eval = autograd::relu((*a.bn)((*a.conv)(x))).value();
  EXPECT_LT(max_abs_diff((*q)(x).value(), ref_eval), 1e-4);
}

/// |a - b| <= tol * (1 + max |b|), elementwise.
::testing::AssertionResult close(const Tensor& a, const Tensor& b, double tol) {
  double scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, std::fabs(b.item(i)));
  const double d = max_abs_diff(a, b);
  if (d <= tol * (1 + scale)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max difference " << d << " against a scale of " << scale;
}

// Grouped convs (groups of 2 channels, depthwise, a channel multiplier) and
// Linear-BN1d: with fake quant off, the QAT layer's training forward (which
// divides the folded weights by the fold factor) and every gradient equal
// those of the float layers.
TEST(QATModules, FakeQuantOffMatchesTheFloatLayersForGroupedConvsAndLinear) {
  struct Geo {
    int64_t in, out, groups;
  };
  for (const Geo& c : {Geo{4, 6, 2}, Geo{4, 4, 4}, Geo{3, 6, 3}}) {
    SCOPED_TRACE("groups " + std::to_string(c.groups) + ", " + std::to_string(c.in) + " -> " + std::to_string(c.out));
    auto make = [&c](uint64_t seed) {
      Generator g(seed);
      ConvBn r;
      r.conv = std::make_shared<nn::Conv2d>(c.in, c.out, 3, 1, 1, true, c.groups, g);
      r.bn = std::make_shared<nn::BatchNorm2d>(c.out);
      r.bn->weight().value().copy_from(randn({c.out}, seed + 3, 0.5));
      r.bn->bias().value().copy_from(randn({c.out}, seed + 4, 0.5));
      return r;
    };
    ConvBn a = make(70), b = make(70);
    auto q = std::make_shared<QATConvBnReLU2d>(*b.conv, b.bn, default_qconfig());
    enable_fake_quant(*q, false);
    const Tensor xt = randn({4, c.in, 6, 6}, 71);
    Variable xa(xt.clone(), true), xb(xt.clone(), true);
    Variable ya = autograd::relu((*a.bn)((*a.conv)(xa)));
    Variable yb = (*q)(xb);
    EXPECT_TRUE(close(yb.value(), ya.value(), 1e-5));
    const Tensor gy = randn(ya.shape(), 72);
    ya.backward(gy);
    yb.backward(gy);
    EXPECT_TRUE(close(xb.grad(), xa.grad(), 1e-4)) << "x";
    EXPECT_TRUE(close(b.conv->weight().grad(), a.conv->weight().grad(), 1e-4)) << "conv weight";
    EXPECT_TRUE(close(b.conv->bias().grad(), a.conv->bias().grad(), 1e-4)) << "conv bias";
    EXPECT_TRUE(close(b.bn->weight().grad(), a.bn->weight().grad(), 1e-4)) << "bn weight";
    EXPECT_TRUE(close(b.bn->bias().grad(), a.bn->bias().grad(), 1e-4)) << "bn bias";
    EXPECT_TRUE(close(b.bn->running_mean(), a.bn->running_mean(), 1e-5)) << "running mean";
    EXPECT_TRUE(close(b.bn->running_var(), a.bn->running_var(), 1e-5)) << "running var";
  }
  Generator g1(80), g2(80);
  nn::Linear la(5, 3, true, g1), lb(5, 3, true, g2);
  auto bna = std::make_shared<nn::BatchNorm1d>(3), bnb = std::make_shared<nn::BatchNorm1d>(3);
  for (auto* bn : {bna.get(), bnb.get()}) {
    bn->weight().value().copy_from(randn({3}, 81, 0.5));
    bn->bias().value().copy_from(randn({3}, 82, 0.5));
  }
  auto q = std::make_shared<QATLinearBn1d>(lb, bnb, default_qconfig());
  enable_fake_quant(*q, false);
  const Tensor xt = randn({8, 5}, 83);
  Variable xa(xt.clone(), true), xb(xt.clone(), true);
  Variable ya = (*bna)(la(xa));
  Variable yb = (*q)(xb);
  EXPECT_TRUE(close(yb.value(), ya.value(), 1e-5));
  const Tensor gy = randn({8, 3}, 84);
  ya.backward(gy);
  yb.backward(gy);
  EXPECT_TRUE(close(xb.grad(), xa.grad(), 1e-4)) << "x";
  EXPECT_TRUE(close(lb.weight().grad(), la.weight().grad(), 1e-4)) << "linear weight";
  EXPECT_TRUE(close(lb.bias().grad(), la.bias().grad(), 1e-4)) << "linear bias";
  EXPECT_TRUE(close(bnb->weight().grad(), bna->weight().grad(), 1e-4)) << "bn weight";
  EXPECT_TRUE(close(bnb->running_mean(), bna->running_mean(), 1e-5)) << "running mean";
}

TEST(QATModules, FrozenBnTrainingForwardEqualsTheFoldedEvalForward) {
  ConvBn cb = make_conv_bn(false, 40);
  auto q = std::make_shared<QATConvBnReLU2d>(*cb.conv, cb.bn, default_qconfig());
  const Variable x(randn({4, 3, 6, 6}, 41));
  (*q)(x);  // observe once
  q->freeze_bn_stats(true);
  enable_observer(*q, false);
  const Tensor mean0 = cb.bn->running_mean().clone();
  const Tensor train_out = (*q)(x).value();
  EXPECT_EQ(max_abs_diff(cb.bn->running_mean(), mean0), 0.0);  // frozen
  q->eval();
  const Tensor eval_out = (*q)(x).value();
  // Same fake-quantized weight; the float paths differ only in rounding
  // (then the output fake-quant can move a value by one step).
  const double step = q->output_fake_quant().qparams().scale[0];
  EXPECT_LE(max_abs_diff(train_out, eval_out), step * 1.0001);
}

// The QAT Conv-BN-ReLU's training forward fake-quantizes its output inside
// the batch-norm op (FakeQuantize::fusable); with that fusion switched off it
// runs batch norm + ReLU, then the FakeQuantize module. Over SGD steps (the
// observer recording, then frozen), both give the same outputs, gradients,
// parameters, running statistics and qparams, bit for bit.
struct FuseGuard {  // restores the default when a test ends or fails early
  ~FuseGuard() { detail::set_fuse_output_fake_quant(true); }
};

std::vector<uint64_t> bits(const std::vector<double>& v) {
  std::vector<uint64_t> b;
  for (double d : v) b.push_back(std::bit_cast<uint64_t>(d));
  return b;
}

TEST(QATModules, FusedOutputFakeQuantEqualsTheSeparatePasses) {
  FuseGuard guard;
  // Conv-BN-ReLU (one-sided STE mask) and Conv-BN (two-sided).
  for (bool relu : {true, false}) {
  SCOPED_TRACE(relu ? "ConvBnReLU" : "ConvBn");
  std::vector<std::vector<double>> runs[2];
  for (int fused = 0; fused < 2; ++fused) {
    detail::set_fuse_output_fake_quant(fused == 1);
    ConvBn cb = make_conv_bn(false, 40);
    std::shared_ptr<QATLayer> q;
    if (relu)
      q = std::make_shared<QATConvBnReLU2d>(*cb.conv, cb.bn, default_qconfig());
    else
      q = std::make_shared<QATConvBn2d>(*cb.conv, cb.bn, default_qconfig());
    EXPECT_EQ(q->output_fake_quant().fusable(), fused == 1);
    nn::SGD opt(q->parameters(), nn::SGDOptions{.lr = 0.05, .momentum = 0.9});
    for (int step = 0; step < 4; ++step) {
      if (step == 2) q->output_fake_quant().enable_observer(false);
      const Variable x(randn({4, 3, 6, 6}, 41 + step));
      opt.zero_grad();
      const Variable y = (*q)(x);
      EXPECT_STREQ(y.node()->name, !fused ? "fake_quantize"
                                   : relu ? "batch_norm_relu_fake_quant"
                                          : "batch_norm_fake_quant");
      autograd::sum(autograd::mul(y, Variable(randn({4, 4, 6, 6}, 51 + step)))).backward();
      opt.step();
      runs[fused].push_back(y.value().to_vector());
      for (const auto& [name, v] : q->named_parameters()) runs[fused].push_back(v.grad().to_vector());
    }
    for (const auto& [name, t] : q->state_dict()) runs[fused].push_back(t.to_vector());
  }
  detail::set_fuse_output_fake_quant(true);
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_EQ(bits(runs[0][i]), bits(runs[1][i])) << "item " << i;
  }
  // Fusable or not, by quantizer: fake quant off, LSQ, per channel, and a
  // histogram observer (fusable only while it does not record).
  ConvBn cb = make_conv_bn(false, 42);
  auto q = std::make_shared<QATConvBnReLU2d>(*cb.conv, cb.bn, default_qconfig());
  q->output_fake_quant().enable_fake_quant(false);
  EXPECT_FALSE(q->output_fake_quant().fusable());
  TensorQConfig act = default_qconfig().activation;
  EXPECT_TRUE(FakeQuantize(act).fusable());
  TensorQConfig lsq = act;
  lsq.method = FakeQuantMethod::lsq;
  EXPECT_FALSE(FakeQuantize(lsq).fusable());
  TensorQConfig pc = default_qconfig().weight;  // per channel
  EXPECT_FALSE(FakeQuantize(pc, 4).fusable());
  TensorQConfig hist = act;
  hist.observer = "histogram";
  FakeQuantize h(hist);
  EXPECT_FALSE(h.fusable());  // training mode: the histogram records
  h.eval();
  EXPECT_TRUE(h.fusable());
  h.set_calibrating(true);
  EXPECT_FALSE(h.fusable());
  // A NaN in the fused Conv-BN's output is refused by the recording observer,
  // as in the separate passes.
  for (int fused = 0; fused < 2; ++fused) {
    detail::set_fuse_output_fake_quant(fused == 1);
    ConvBn nb = make_conv_bn(false, 43);
    QATConvBn2d c(*nb.conv, nb.bn, default_qconfig());
    Tensor x = randn({2, 3, 6, 6}, 44);
    x.data<float>()[5] = std::numeric_limits<float>::quiet_NaN();
    try {
      c(Variable(x));
      ADD_FAILURE() << "no error for a NaN output, fused " << fused;
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("inf/NaN"), std::string::npos) << e.what();
    }
  }
  detail::set_fuse_output_fake_quant(true);
}

TEST(QATModules, GradientsReachTheSharedFloatParameters) {
  ConvBn cb = make_conv_bn(true, 50);
  auto q = std::make_shared<QATConvBnReLU2d>(*cb.conv, cb.bn, default_qconfig());
  EXPECT_TRUE(q->param("weight").same(cb.conv->weight()));
  EXPECT_TRUE(q->param("bias").same(cb.conv->bias()));
  Variable y = (*q)(Variable(randn({2, 3, 6, 6}, 51)));
  autograd::sum(autograd::mul(y, y)).backward();
  EXPECT_TRUE(cb.conv->weight().has_grad());
  EXPECT_TRUE(cb.bn->weight().has_grad());
  EXPECT_TRUE(cb.bn->bias().has_grad());
}

TEST(QATModules, LinearBn1dAndLinearReLU) {
  Generator g(60);
  nn::Linear lin(5, 3, true, g);
  auto bn = std::make_shared<nn::BatchNorm1d>(3);
  auto q = std::make_shared<QATLinearBn1d>(lin, bn, default_qconfig(), FusedActivation::relu);
  EXPECT_EQ(q->type_name(), "QATLinearBnReLU1d");
  const Variable x(randn({8, 5}, 61));
  Variable y = (*q)(x);
  EXPECT_EQ(y.shape(), (Shape{8, 3}));
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_GE(y.value().item(i), 0.0);
  q->eval();
  EXPECT_EQ((*q)(x).shape(), (Shape{8, 3}));
  EXPECT_THROW(QATLinearBn1d(lin, std::make_shared<nn::BatchNorm1d>(4), default_qconfig()), ValueError);
}

// ---- fusion and prepare ------------------------------------------------------------

TEST(Prepare, FindsTheFusionGroupsOfZooModels) {
  auto m = nn::mnist_cnn();
  const auto groups = find_fusion_groups(*m);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0], (FusionGroup{"conv1", "bn1", "relu1"}));
  EXPECT_EQ(groups[2], (FusionGroup{"conv3", "bn3", "relu3"}));
  auto l = nn::lenet5();
  const auto lg = find_fusion_groups(*l);
  ASSERT_EQ(lg.size(), 4u);
  EXPECT_EQ(lg[0], (FusionGroup{"conv1", "relu1"}));
  EXPECT_EQ(lg[3], (FusionGroup{"fc2", "relu4"}));
  // Nested Sequentials get dotted names.
  nn::Sequential outer;
  outer.push_back("quant", std::make_shared<nn::QuantStub>());
  outer.push_back("body", nn::mlp(4, {3}, 2));
  const auto ng = find_fusion_groups(outer);
  ASSERT_EQ(ng.size(), 1u);
  EXPECT_EQ(ng[0], (FusionGroup{"body.fc1", "body.relu1"}));
}

TEST(Prepare, PrepareQatSwapsInPlaceAndKeepsParameterIdentity) {
  auto m = nn::mnist_cnn();
  const auto before = m->parameters();
  auto opt = std::make_shared<nn::Adam>(before, nn::AdamOptions{.lr = 1e-3});
  prepare_qat(*m);
  EXPECT_EQ(m->get_module("quant")->type_name(), "QATQuantStub");
  EXPECT_EQ(m->get_module("conv1")->type_name(), "QATConvBnReLU2d");
  EXPECT_EQ(m->get_module("bn1")->type_name(), "Identity");
  EXPECT_EQ(m->get_module("relu1")->type_name(), "Identity");
  EXPECT_EQ(m->get_module("fc")->type_name(), "QATLinear");
  EXPECT_EQ(m->get_module("dequant")->type_name(), "DeQuantStub");
  const auto after = m->parameters();
  ASSERT_EQ(after.size(), before.size());
  for (const auto& p : before) {
    bool found = false;
    for (const auto& a : after) found = found || a.same(p);
    EXPECT_TRUE(found);
  }
  EXPECT_TRUE(m->get_module("conv1")->param("weight").same(before[0]));
  EXPECT_EQ(m->state_dict().count("conv1.bn.running_mean"), 1u);
  // The optimizer built before the swap trains the QAT model.
  const Tensor w0 = m->get_module("fc")->param("weight").value().clone();
  Variable loss = autograd::cross_entropy((*m)(Variable(randn({4, 1, 28, 28}, 70))),
                                          Tensor::from_vector<int32_t>({1, 2, 3, 4}, {4}));
  opt->zero_grad();
  loss.backward();
  opt->step();
  EXPECT_GT(max_abs_diff(m->get_module("fc")->param("weight").value(), w0), 0.0);
  // Preparing twice is an error.
  EXPECT_THROW(prepare_qat(*m), ValueError);
}

TEST(Prepare, NoneOverridesKeepModulesInFloat) {
  auto m = nn::mnist_cnn();
  PrepareOptions o;
  o.qconfig.set_name("fc", std::nullopt);
  o.qconfig.set_name("conv1", std::nullopt);
  prepare_qat(*m, o);
  EXPECT_EQ(m->get_module("fc")->type_name(), "Linear");
  EXPECT_EQ(m->get_module("conv1")->type_name(), "Conv2d");
  EXPECT_EQ(m->get_module("bn1")->type_name(), "BatchNorm2d");
  EXPECT_EQ(m->get_module("conv2")->type_name(), "QATConvBnReLU2d");
  EXPECT_EQ((*m)(Variable(randn({2, 1, 28, 28}, 71))).shape(), (Shape{2, 10}));
}

TEST(Prepare, ErrorsLeaveTheModelUntouched) {
  auto m = nn::mnist_cnn();
  auto expect_error = [&](PrepareOptions o, const char* needle) {
    try {
      prepare_qat(*m, o);
      FAIL() << needle;
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(m->get_module("conv1")->type_name(), "Conv2d");
    EXPECT_EQ(m->get_module("quant")->type_name(), "QuantStub");
  };
  PrepareOptions o;
  o.fusion_groups = {{"conv1", "bnX"}};
  expect_error(o, "bnX");
  o.fusion_groups = {{"relu2", "pool"}};
  expect_error(o, "cannot fuse");
  o.fusion_groups = {{"conv1", "relu1"}};  // skips bn1
  expect_error(o, "consecutive");
  o.fusion_groups = {{"bn1", "conv1"}};  // out of order
  expect_error(o, "consecutive");
  o.fusion_groups = {{"conv1", "bn1"}, {"bn1", "relu1"}};
  expect_error(o, "two fusion groups");
  o = {};
  o.qconfig.set_name("quant", std::nullopt);
  expect_error(o, "QuantStub");
  o = {};
  QConfig bad = default_qconfig();
  bad.weight.spec.per_channel = false;  // per-channel observer, per-tensor spec
  o.qconfig.global = bad;
  expect_error(o, "per-channel");
}

TEST(Prepare, ExplicitGroupsAndWithoutAutoFusion) {
  auto m = nn::mnist_cnn();
  PrepareOptions o;
  o.auto_fuse = false;
  o.fusion_groups = {{"conv2", "bn2"}};
  prepare_qat(*m, o);
  EXPECT_EQ(m->get_module("conv1")->type_name(), "QATConv2d");
  EXPECT_EQ(m->get_module("bn1")->type_name(), "BatchNorm2d");
  EXPECT_EQ(m->get_module("conv2")->type_name(), "QATConvBn2d");
  EXPECT_EQ(m->get_module("relu2")->type_name(), "ReLU");
  EXPECT_EQ((*m)(Variable(randn({2, 1, 28, 28}, 72))).shape(), (Shape{2, 10}));
}

TEST(Prepare, PtqCalibrationThenFrozenFakeQuantEval) {
  Generator g(80);
  auto m = nn::mnist_cnn(g);
  auto ref = nn::mnist_cnn(*std::make_unique<Generator>(80));
  m->eval();
  ref->eval();
  prepare(*m);
  EXPECT_FALSE(m->is_training());
  const Variable x(randn({8, 1, 28, 28}, 81));
  // Calibration runs in float.
  EXPECT_LT(max_abs_diff((*m)(x).value(), (*ref)(x).value()), 1e-4);
  finish_calibration(*m);
  const auto& stub = static_cast<QATQuantStub&>(*m->get_module("quant"));
  const auto s0 = stub.output_fake_quant().qparams().scale;
  const Tensor out = (*m)(x).value();
  const double diff = max_abs_diff(out, (*ref)(x).value());
  EXPECT_GT(diff, 0.0);   // quantized now
  EXPECT_LT(diff, 0.05);  // but close
  (*m)(Variable(randn({8, 1, 28, 28}, 82, 5.0)));
  EXPECT_EQ(stub.output_fake_quant().qparams().scale, s0);  // frozen
}

TEST(Prepare, ObserverStateRoundTrips) {
  auto a = nn::mnist_cnn(), b = nn::mnist_cnn();
  prepare_qat(*a);
  prepare_qat(*b);
  (*a)(Variable(randn({4, 1, 28, 28}, 90)));
  (*b)(Variable(randn({4, 1, 28, 28}, 91, 3.0)));
  const auto st = observer_state(*a);
  ASSERT_TRUE(st.count("conv1.output_fake_quant/min_val"));
  load_observer_state(*b, st);
  EXPECT_EQ(observer_state(*b).size(), st.size());
  for (const auto& [k, t] : observer_state(*b)) EXPECT_EQ(max_abs_diff(t, st.at(k)), 0.0) << k;
  std::map<std::string, Tensor> bad = st;
  bad["nope.output_fake_quant/min_val"] = st.begin()->second;
  EXPECT_THROW(load_observer_state(*b, bad), FormatError);
}

TEST(Prepare, FrozenOrCalibratedQparamsAreInTheStateDict) {
  auto m = nn::mnist_cnn();
  m->eval();
  prepare(*m);
  (*m)(Variable(randn({4, 1, 28, 28}, 95)));
  finish_calibration(*m);
  auto& stub = static_cast<QATQuantStub&>(*m->get_module("quant"));
  const auto sd = m->state_dict();
  EXPECT_EQ(sd.at("quant.output_fake_quant.ready").item(), 1.0);
  EXPECT_EQ(static_cast<float>(sd.at("quant.output_fake_quant.scale").item()),
            stub.output_fake_quant().observer().qparams().scale[0]);
  // A model restored from that state dict alone evaluates with the same qparams.
  auto fresh = nn::mnist_cnn();
  fresh->eval();
  prepare(*fresh);
  finish_calibration(*fresh);
  fresh->load_state_dict(sd);
  const Variable x(randn({4, 1, 28, 28}, 96));
  EXPECT_EQ(max_abs_diff((*fresh)(x).value(), (*m)(x).value()), 0.0);
}

TEST(FakeQuantizeModule, LsqWaitsForFakeQuantAndKeepsALearnedStepOnReload) {
  QConfig q = lsq_qconfig(4, 4);
  FakeQuantize fq(q.activation);
  fq.enable_fake_quant(false);
  fq.set_lsq_learning(true);
  fq(Variable(randn({64}, 7)));
  EXPECT_FALSE(fq.lsq_learning());  // pending until fake quant is on; the observer records meanwhile
  fq(Variable(randn({64}, 8, 3.0)));
  fq.enable_fake_quant(true);
  fq(Variable(randn({64}, 9)));
  EXPECT_TRUE(fq.lsq_learning());
  fq.param("lsq_scale").value().data<float>()[0] = 0.123f;  // "learned"
  const auto sd = fq.state_dict();
  FakeQuantize other(q.activation);
  other.set_lsq_learning(true);  // pending
  other.load_state_dict(sd);     // restores lsq_active = 1
  other(Variable(randn({64}, 10)));
  EXPECT_EQ(other.param("lsq_scale").value().data<float>()[0], 0.123f);
}

TEST(FakeQuantizeOp, BackwardUsesTheQparamsOfItsForward) {
  Tensor scale = Tensor::full({1}, 0.1), zp = Tensor::zeros({1}, DType::i32);
  Variable x(Tensor::from_vector<float>({0.5f, 5.0f}, {2}), true);
  Variable y = autograd::fake_quantize(x, scale, zp, -8, 7);  // 5.0 clips at 0.1 * 7
  scale.data<float>()[0] = 10.f;                              // a later refresh of the buffer
  autograd::sum(y).backward();
  EXPECT_EQ(x.grad().item(0), 1.0);
  EXPECT_EQ(x.grad().item(1), 0.0);
}

// ---- int8 eval -------------------------------------------------------------------------

TEST(Int8Eval, QatEvalEqualsTheRuntimePipelineBitForBit) {
  Generator g(120);
  auto m = nn::mnist_cnn(g);
  prepare_qat(*m);
  nn::Adam opt(m->parameters(), {.lr = 1e-3});
  for (int step = 0; step < 3; ++step) {
    Variable loss = autograd::cross_entropy((*m)(Variable(randn({8, 1, 28, 28}, 121 + step))),
                                            Tensor::from_vector<int32_t>({0, 1, 2, 3, 4, 5, 6, 7}, {8}));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  m->eval();
  const Tensor x = randn({8, 1, 28, 28}, 130);
  const Tensor qat_out = (*m)(Variable(x)).value();

  // The same computation assembled by hand from the runtime's ops: what an
  // exported model runs.
  auto layer = [&](const char* name) { return std::dynamic_pointer_cast<QATLayer>(m->get_module(name))->to_qlayer(); };
  auto& stub = static_cast<QATQuantStub&>(*m->get_module("quant"));
  const QParams sp = stub.output_fake_quant().qparams();
  const runtime::ActQParams in{sp.scale[0], sp.zero_point[0], sp.qmin, sp.qmax};
  Tensor codes = runtime::to_nhwc(runtime::quantize(x, in));
  codes = runtime::qconv2d(layer("conv1"), codes);
  codes = runtime::qconv2d(layer("conv2"), codes);
  codes = runtime::qmax_pool2d(codes, {2, 2}, {0, 0}, {0, 0});
  codes = runtime::qconv2d(layer("conv3"), codes);
  // Flattened in the float model's (C, H, W) order, with the fc as it is...
  const runtime::QLayer fc = layer("fc");
  const Tensor chw = runtime::to_nchw(codes).reshape({8, 6400});
  const Tensor fc_codes = runtime::qlinear(fc, chw);
  // ...or in the runtime's (H, W, C) order with the columns reordered: the same sums.
  runtime::QLayer fc_hwc = fc;
  runtime::reorder_linear_input_to_hwc(fc_hwc, 64, 10, 10);
  const Tensor hwc_codes = runtime::qlinear(fc_hwc, codes.reshape({8, 6400}));
  EXPECT_EQ(std::memcmp(fc_codes.raw(), hwc_codes.raw(), fc_codes.nbytes()), 0);
  codes = fc_codes;
  const Tensor rt_out = runtime::dequantize(codes, fc.output);
  ASSERT_EQ(qat_out.shape(), rt_out.shape());
  EXPECT_EQ(std::memcmp(qat_out.raw(), rt_out.raw(), qat_out.nbytes()), 0);

  // And it stays close to the float simulation of the same model.
  set_int8_eval(*m, false);
  const Tensor sim_out = (*m)(Variable(x)).value();
  EXPECT_LE(max_abs_diff(qat_out, sim_out), 4 * fc.output.scale);
}

TEST(Int8Eval, ConvertedAndExportedModelsEqualTheQatEvalBitForBit) {
  Generator g(150);
  auto m = nn::mnist_cnn(g);
  // The float checkpoint's size, for the export's.
  const std::string dir = (std::filesystem::temp_directory_path() / ("qforge_convert_" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  Archive fp32;
  for (const auto& [k, t] : m->state_dict()) fp32.tensors["model/" + k] = t;
  save_archive(dir + "/fp32.h5", fp32);
  prepare_qat(*m);
  for (int step = 0; step < 2; ++step) (*m)(Variable(randn({8, 1, 28, 28}, 151 + step)));
  m->eval();
  const Tensor x = randn({16, 1, 28, 28}, 160);
  const Tensor qat_out = (*m)(Variable(x)).value();

  const runtime::Model rt = convert(*m, {1, 28, 28});
  ASSERT_EQ(rt.ops.size(), 8u);  // quantize conv conv pool conv flatten linear dequantize
  const Tensor rt_out = rt.run(x);
  ASSERT_EQ(rt_out.shape(), qat_out.shape());
  EXPECT_EQ(std::memcmp(rt_out.raw(), qat_out.raw(), qat_out.nbytes()), 0);

  runtime::save_model(dir + "/int8.h5", rt);
  const runtime::Model back = runtime::load_model(dir + "/int8.h5");
  const Tensor back_out = back.run(x);
  EXPECT_EQ(std::memcmp(back_out.raw(), qat_out.raw(), qat_out.nbytes()), 0);
  const double ratio = static_cast<double>(std::filesystem::file_size(dir + "/fp32.h5")) /
                       static_cast<double>(std::filesystem::file_size(dir + "/int8.h5"));
  EXPECT_GT(ratio, 3.0) << "int8 file is only " << ratio << "x smaller";
  std::filesystem::remove_all(dir);

  // A float layer inside the quantized region has no int8 form.
  auto f = nn::mnist_cnn();
  PrepareOptions o;
  o.qconfig.set_name("fc", std::nullopt);
  prepare_qat(*f, o);
  (*f)(Variable(randn({2, 1, 28, 28}, 170)));
  f->eval();
  try {
    convert(*f, {1, 28, 28});
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'fc' (Linear)"), std::string::npos) << e.what();
  }
}

TEST(Int8Eval, BlockersAreReported) {
  auto m = nn::mnist_cnn();
  prepare_qat(*m);
  auto& conv1 = static_cast<QATLayer&>(*m->get_module("conv1"));
  EXPECT_NE(conv1.int8_blocker().find("no qparams"), std::string::npos) << conv1.int8_blocker();
  (*m)(Variable(randn({2, 1, 28, 28}, 140)));
  EXPECT_EQ(conv1.int8_blocker(), "");
  enable_fake_quant(*m, false);
  EXPECT_EQ(conv1.int8_blocker(), "fake quant is off");
  enable_fake_quant(*m, true);
  // A layer outside a chain from a QuantStub has no input quantizer.
  auto n = nn::mnist_cnn();
  PrepareOptions o;
  o.qconfig.set_name("quant", std::nullopt);
  o.require_quant_stub = false;
  prepare_qat(*n, o);
  auto& c1 = static_cast<QATLayer&>(*n->get_module("conv1"));
  EXPECT_NE(c1.int8_blocker().find("no input quantizer"), std::string::npos);
  EXPECT_THROW(c1.to_qlayer(), ValueError);
  // conv2 is fed by conv1's output quantizer.
  auto& c2 = static_cast<QATLayer&>(*n->get_module("conv2"));
  EXPECT_TRUE(c2.input_quantizer() != nullptr);
}

// ---- schedule -------------------------------------------------------------------------

TEST(Schedule, MilestonesAndSwitches) {
  EXPECT_FALSE(Milestone::never().reached(100, 100000));
  EXPECT_TRUE(Milestone::epoch(2).reached(2, 0));
  EXPECT_FALSE(Milestone::epoch(2).reached(1, 99999));
  EXPECT_TRUE(Milestone::step(10).reached(0, 10));
  EXPECT_FALSE(Milestone::step(10).reached(5, 9));
  EXPECT_EQ(Milestone::epoch(3).describe(), "epoch 3");

  auto m = nn::mnist_cnn();
  prepare_qat(*m);
  QatSchedule s;
  s.fake_quant = Milestone::step(5);
  s.freeze_observers = Milestone::epoch(2);
  s.freeze_bn = Milestone::epoch(1);
  auto& conv = static_cast<QATConvBase&>(*m->get_module("conv1"));
  apply_qat_schedule(*m, s, 0, 0);
  EXPECT_FALSE(conv.output_fake_quant().fake_quant_enabled());
  EXPECT_TRUE(conv.output_fake_quant().observer_enabled());
  EXPECT_FALSE(conv.bn()->frozen());
  apply_qat_schedule(*m, s, 1, 7);
  EXPECT_TRUE(conv.weight_fake_quant().fake_quant_enabled());
  EXPECT_TRUE(conv.bn()->frozen());
  EXPECT_TRUE(conv.output_fake_quant().observer_enabled());
  apply_qat_schedule(*m, s, 2, 9);
  EXPECT_FALSE(conv.output_fake_quant().observer_enabled());
}

TEST(Schedule, LsqLearningSwitchesOnAtItsMilestone) {
  auto m = nn::mnist_cnn();
  PrepareOptions o;
  o.qconfig.set_global(lsq_qconfig(4, 4));
  prepare_qat(*m, o);
  QatSchedule s;
  s.lsq_learn = Milestone::step(2);
  auto& fc = static_cast<QATLinearBase&>(*m->get_module("fc"));
  for (int64_t step = 0; step < 4; ++step) {
    apply_qat_schedule(*m, s, 0, step);
    (*m)(Variable(randn({2, 1, 28, 28}, 100 + step)));
    EXPECT_EQ(fc.weight_fake_quant().lsq_learning(), step >= 2) << step;
  }
}

}  // namespace
}  // namespace qforge::quant
