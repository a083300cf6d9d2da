// The LSTM under QAT: prepare swaps nn::LSTM for QATLSTM and links it; after
// a few training steps (STE, and LSQ) the QAT model in eval mode, its
// converted int8 graph on every kernel level, and the saved and reloaded
// file give identical outputs; the float simulation stays close.
#include <gtest/gtest.h>

#include <cstdio>

#include "autograd/ops.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/dynamic.h"
#include "quant/prepare.h"
#include "quant/qat_lstm.h"
#include "quant/runtime/model.h"

namespace qforge::quant {
namespace {

using autograd::Variable;

/// Rows of "pixels" in [0, 1]: a class-dependent bar pattern plus noise, so
/// training has a signal.
Tensor rows_images(int64_t n, uint64_t seed) {
  Generator g(seed);
  Tensor t = Tensor::empty({n, 1, 28, 28});
  uniform_(t, 0, 0.3, g);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < 28; ++r) t.data<float>()[i * 784 + r * 28 + (i % 10) * 2] += 0.7f;
  return t;
}

Tensor labels(int64_t n) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<int32_t>(i % 10));
  return Tensor::from_vector<int32_t>(v, {n});
}

/// SGD with momentum: Adam's fixed-size steps would drive LSQ's small step
/// sizes (input scale ~1/255) to their floor within a few updates.
void train_steps(nn::Module& model, int steps) {
  nn::SGD opt(model.parameters(), {.lr = 0.02, .momentum = 0.9});
  model.train();
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Variable loss = autograd::cross_entropy(model(Variable(rows_images(16, 100 + s))), labels(16));
    loss.backward();
    opt.step();
  }
}

int64_t count_differ(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  int64_t d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d += a.data<float>()[i] != b.data<float>()[i];
  return d;
}

void expect_eval_equals_int8(nn::Module& model, int64_t layers) {
  model.eval();
  const runtime::Model int8 = convert(model, {1, 28, 28});
  int64_t lstm_ops = 0;
  for (const auto& op : int8.ops)
    if (op.kind == runtime::OpKind::lstm) {
      ++lstm_ops;
      EXPECT_EQ(static_cast<int64_t>(op.lstm.size()), layers);
      EXPECT_TRUE(op.last_step_only);
    }
  EXPECT_EQ(lstm_ops, 1);
  const Tensor x = rows_images(10, 7);
  autograd::NoGradGuard ng;
  const Tensor qat = model(Variable(x)).value();
  for (auto isa : {kernels::Isa::ref, kernels::Isa::avx2, kernels::Isa::avx512vnni}) {
    if (!kernels::cpu_has(isa)) continue;
    const kernels::KernelTable t = kernels::kernels_for(isa);
    EXPECT_EQ(count_differ(int8.run(x, &t), qat), 0) << kernels::isa_name(isa);
  }
  const std::string path = ::testing::TempDir() + "/lstm_int8.h5";
  runtime::save_model(path, int8);
  const runtime::Model back = runtime::load_model(path);
  EXPECT_EQ(count_differ(back.run(x), qat), 0) << "reloaded file";
  std::remove(path.c_str());
  // The float simulation is close to the integer model (logits scale ~ a few units).
  set_int8_eval(model, false);
  const Tensor sim = model(Variable(x)).value();
  set_int8_eval(model, true);
  double worst = 0;
  for (int64_t i = 0; i < sim.numel(); ++i)
    worst = std::max(worst, static_cast<double>(std::fabs(sim.data<float>()[i] - qat.data<float>()[i])));
  EXPECT_LT(worst, 0.5) << "float simulation vs int8 eval";
}

TEST(LstmQat, SteEvalEqualsTheInt8Model) {
  Generator g(1);
  nn::ModulePtr model = nn::mnist_lstm(24, 1, 10, g);
  prepare_qat(*model);
  auto* q = dynamic_cast<QATLSTM*>(model->get_module("lstm").get());
  ASSERT_NE(q, nullptr);
  EXPECT_NE(q->int8_blocker().find("no qparams"), std::string::npos) << q->int8_blocker();
  EXPECT_NE(q->input_quantizer(), nullptr);
  train_steps(*model, 4);
  EXPECT_EQ(q->int8_blocker(), "");
  EXPECT_GT(q->buffer("cell_absmax_l0").data<float>()[0], 0.f);
  expect_eval_equals_int8(*model, 1);
}

TEST(LstmQat, TwoLayersWithLsq) {
  Generator g(2);
  nn::ModulePtr model = nn::mnist_lstm(16, 2, 10, g);
  PrepareOptions o;
  o.qconfig.set_global(lsq_qconfig(8, 8));
  prepare_qat(*model, o);
  set_lsq_learning(*model, true);
  train_steps(*model, 4);
  auto* q = dynamic_cast<QATLSTM*>(model->get_module("lstm").get());
  ASSERT_NE(q, nullptr);
  // The gate quantizers' LSQ steps receive gradients.
  EXPECT_TRUE(q->quantizer(1, "gate_f").param("lsq_scale").has_grad());
  EXPECT_TRUE(q->quantizer(0, "hidden").lsq_learning());
  expect_eval_equals_int8(*model, 2);
}

TEST(LstmQat, ConvertNamesWhatIsMissing) {
  Generator g(3);
  nn::ModulePtr model = nn::mnist_lstm(8, 1, 10, g);
  prepare_qat(*model);
  model->eval();
  EXPECT_THROW(convert(*model, {1, 28, 28}), ValueError);
  // Trained, but with the sequence-first layout the runtime does not take.
  train_steps(*model, 1);
  auto* q = dynamic_cast<QATLSTM*>(model->get_module("lstm").get());
  EXPECT_EQ(q->int8_blocker(), "");
  EXPECT_THROW(q->quantizer(0, "gate_x"), IndexError);
  nn::LSTMSpec s = q->spec();
  s.batch_first = false;
  s.last_step_only = false;
  auto seq_first = std::make_shared<QATLSTM>(nn::LSTM(s), QConfig(default_qconfig()));
  model->replace_module("lstm", seq_first);
  model->eval();
  try {
    convert(*model, {1, 28, 28});
    FAIL() << "convert should refuse";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'lstm'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qforge::quant

namespace qforge::quant {
namespace {

TEST(DynamicQuant, LstmAndLinearCloseToFloat) {
  Generator g(4);
  nn::ModulePtr model = nn::mnist_lstm(32, 2, 10, g);
  train_steps(*model, 3);
  model->eval();
  const Tensor x = rows_images(12, 9);
  autograd::NoGradGuard ng;
  const Tensor ref = (*model)(Variable(x)).value();
  EXPECT_EQ(quantize_dynamic(*model), 2);
  EXPECT_EQ(model->get_module("lstm")->type_name(), "DynamicLSTM");
  EXPECT_EQ(model->get_module("fc")->type_name(), "DynamicLinear");
  const Tensor y = (*model)(Variable(x)).value();
  ASSERT_EQ(y.shape(), ref.shape());
  double worst = 0, range = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(y.data<float>()[i] - ref.data<float>()[i])));
    range = std::max(range, static_cast<double>(std::fabs(ref.data<float>()[i])));
  }
  EXPECT_LT(worst, 0.03 * range + 0.01) << "worst " << worst << ", logit range " << range;
  // Sequence-first layout and the full output sequence.
  nn::LSTMSpec s{8, 6, 1, true, false, false};
  nn::LSTM lstm(s, g);
  DynamicLSTM dyn(lstm);
  Tensor xs = Tensor::empty({5, 3, 8});
  normal_(xs, 0, 1, g);
  const Tensor a = lstm.forward(Variable(xs)).value(), b = dyn.forward(Variable(xs)).value();
  ASSERT_EQ(b.shape(), Shape({5, 3, 6}));
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], 0.03);
}

}  // namespace
}  // namespace qforge::quant
