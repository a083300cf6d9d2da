// Residual and depthwise CIFAR models under QAT: resnet20 (BasicBlocks with
// a quantized add and projection shortcuts, global average pooling) and
// mobilenet_cifar (depthwise convs). After a few training steps, the QAT
// model in eval mode and its converted int8 graph give identical outputs on
// every kernel level.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "autograd/ops.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/fake_quantize.h"
#include "quant/prepare.h"
#include "quant/qat_modules.h"

namespace qforge::quant {
namespace {

using autograd::Variable;

Tensor images(int64_t n, uint64_t seed) {
  Generator g(seed);
  Tensor t = Tensor::empty({n, 3, 32, 32});
  normal_(t, 0, 1, g);
  return t;
}

Tensor labels(int64_t n) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<int32_t>(i % 10));
  return Tensor::from_vector<int32_t>(v, {n});
}

int64_t count_params(nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.value().numel();
  return n;
}

/// `steps` SGD steps in training mode on batches of `batch` random images
/// (seeds seed0, seed0 + 1, ...); `after` sees each step's loss once the
/// gradients are in and the step is taken.
void qat_sgd_steps(nn::Module& model, int steps, int64_t batch, uint64_t seed0,
                   const std::function<void(const Variable&)>& after = {}) {
  nn::SGD opt(model.parameters(), {.lr = 0.01, .momentum = 0.9});
  model.train();
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    Variable loss = autograd::cross_entropy(model(Variable(images(batch, seed0 + step))), labels(batch));
    loss.backward();
    opt.step();
    if (after) after(loss);
  }
}

/// prepare_qat, a few SGD steps (observers record, BN statistics move), then
/// eval: QAT eval logits against the converted graph on ref/avx2/avx512vnni.
void expect_qat_eval_equals_int8(nn::ModulePtr model, int64_t want_adds, int64_t want_groups) {
  prepare_qat(*model);
  qat_sgd_steps(*model, 3, 8, 10);
  model->eval();
  const runtime::Model int8 = convert(*model, {3, 32, 32});
  int64_t adds = 0, grouped = 0, pools = 0;
  for (const auto& op : int8.ops) {
    adds += op.kind == runtime::OpKind::add;
    pools += op.kind == runtime::OpKind::global_avg_pool;
    grouped += op.kind == runtime::OpKind::conv2d && op.layer.groups > 1;
  }
  EXPECT_EQ(adds, want_adds);
  EXPECT_EQ(pools, 1);
  EXPECT_EQ(grouped, want_groups);
  const Tensor x = images(6, 99);
  autograd::NoGradGuard ng;
  const Tensor qat = (*model)(Variable(x)).value();
  for (auto isa : {kernels::Isa::ref, kernels::Isa::avx2, kernels::Isa::avx512vnni}) {
    if (!kernels::cpu_has(isa)) continue;
    const kernels::KernelTable t = kernels::kernels_for(isa);
    const Tensor y = int8.run(x, &t);
    ASSERT_EQ(y.shape(), qat.shape());
    int64_t differ = 0;
    for (int64_t i = 0; i < y.numel(); ++i) differ += y.data<float>()[i] != qat.data<float>()[i];
    EXPECT_EQ(differ, 0) << kernels::isa_name(isa) << ": " << differ << " of " << y.numel() << " outputs differ";
  }
  // The float simulation (int8 eval off) stays close to the integer outputs.
  set_int8_eval(*model, false);
  const Tensor sim = (*model)(Variable(x)).value();
  double worst = 0, range = 0;
  for (int64_t i = 0; i < sim.numel(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(sim.data<float>()[i] - qat.data<float>()[i])));
    range = std::max(range, static_cast<double>(std::fabs(qat.data<float>()[i])));
  }
  EXPECT_LT(worst, 0.25 * range + 1e-3) << "float simulation far from the int8 path";
}

TEST(ResNet20, ShapesAndParameterCountMatchTheReference) {
  Generator g(0);
  auto m = nn::make_model("resnet20", {}, g);
  EXPECT_EQ(count_params(*m), 272474);  // ../shared/bench/README.md
  autograd::NoGradGuard ng;
  m->eval();
  EXPECT_EQ((*m)(Variable(images(2, 1))).value().shape(), (Shape{2, 10}));
  auto mb = nn::make_model("mobilenet_cifar", {}, g);
  mb->eval();
  EXPECT_EQ((*mb)(Variable(images(2, 1))).value().shape(), (Shape{2, 10}));
  EXPECT_THROW(nn::make_model("resnet20", {{"depth", "32"}}, g), ValueError);
  nn::Add add;
  EXPECT_THROW(add(Variable(images(1, 1))), ValueError);  // two inputs
}

TEST(ResNet20, BlocksBackpropagateThroughBothPaths) {
  Generator g(3);
  nn::BasicBlock b(4, 8, 2, g);
  Tensor in = Tensor::empty({2, 4, 6, 6});
  normal_(in, 0, 1, g);
  Variable xv(in, true);
  Variable y = b(xv);
  EXPECT_EQ(y.value().shape(), (Shape{2, 8, 3, 3}));
  autograd::sum(y).backward();
  ASSERT_TRUE(xv.grad().defined());
  // The projection shortcut gets gradient too.
  bool sc_grad = false;
  for (const auto& [name, p] : b.named_parameters())
    if (name.rfind("shortcut.", 0) == 0 && p.grad().defined()) sc_grad = true;
  EXPECT_TRUE(sc_grad);
}

// QAT training of ResNet-20 with the output fake quants inside the batch-norm
// and add-ReLU ops equals the separate passes bit for bit: every parameter,
// gradient and state entry after SGD steps.
struct FuseGuard {  // restores the default when a test ends or fails early
  ~FuseGuard() { detail::set_fuse_output_fake_quant(true); }
};

TEST(ResNet20, FusedOutputFakeQuantEqualsTheSeparatePasses) {
  FuseGuard guard;
  // The add-ReLU of a block quantizes its own output when fused.
  for (int fused = 0; fused < 2; ++fused) {
    detail::set_fuse_output_fake_quant(fused == 1);
    QATAdd add(true, default_qconfig());
    add.train();
    Variable a(images(2, 1), true), b(images(2, 2), true);
    EXPECT_STREQ(add.forward2(a, b).node()->name, fused ? "add_relu_fake_quant" : "fake_quantize");
  }
  std::vector<std::vector<double>> runs[2];
  for (int fused = 0; fused < 2; ++fused) {
    detail::set_fuse_output_fake_quant(fused == 1);
    Generator g(4);
    nn::ModulePtr model = nn::make_model("resnet20", {}, g);
    prepare_qat(*model);
    qat_sgd_steps(*model, 2, 4, 20, [&](const Variable& loss) {
      runs[fused].push_back({loss.value().item()});
      for (const auto& [name, p] : model->named_parameters()) runs[fused].push_back(p.grad().to_vector());
    });
    for (const auto& [name, t] : model->state_dict()) runs[fused].push_back(t.to_vector());
  }
  detail::set_fuse_output_fake_quant(true);
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) ASSERT_EQ(runs[0][i], runs[1][i]) << "item " << i;
}

TEST(ResNet20, QatEvalEqualsTheConvertedGraphBitForBit) {
  Generator g(1);
  expect_qat_eval_equals_int8(nn::make_model("resnet20", {}, g), 9, 0);
}

TEST(MobileNetCifar, QatEvalEqualsTheConvertedGraphBitForBit) {
  Generator g(2);
  expect_qat_eval_equals_int8(nn::make_model("mobilenet_cifar", {}, g), 0, 5);
}

}  // namespace
}  // namespace qforge::quant
