// qforge as a library, with a hand-written training loop (no Trainer, no
// recipe): mnist_cnn built by hand from nn modules, FP32 training, prepare_qat with a
// QConfig written in code (per-channel LSQ weights; the classifier head kept
// in float), a QAT loop that freezes BN statistics and then the observers at
// chosen steps, convert, export, and a reload through the int8 runtime whose
// predictions must equal the QAT model's.
//
//   custom_loop [--data DIR] [--out FILE] [--fp32-steps N] [--qat-steps N]
#include <algorithm>
#include <cstdio>
#include <functional>
#include <cstring>
#include <string>

#include "data/loader.h"
#include "data/mnist.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "quant/convert.h"
#include "quant/prepare.h"
#include "quant/runtime/model.h"

using namespace qforge;
using autograd::Variable;

int main(int argc, char** argv) {
  std::string dir = data::default_mnist_dir(QFORGE_SOURCE_DIR), out = "custom_loop_int8.h5";
  int64_t fp32_steps = 300, qat_steps = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--data") dir = v;
    else if (k == "--out") out = v;
    else if (k == "--fp32-steps") fp32_steps = std::stoll(v);
    else if (k == "--qat-steps") qat_steps = std::stoll(v);
    else return std::fprintf(stderr, "custom_loop: unknown option %s\n", k.c_str()), 2;
  }
  // mnist_cnn by hand: an int8 body between QuantStub and DeQuantStub (three
  // conv + BN + ReLU, the max pool after the second), and its fc as a float head.
  Generator g(0);
  auto body = std::make_shared<nn::Sequential>();
  body->push_back("quant", std::make_shared<nn::QuantStub>());
  int64_t in = 1, layer = 0;
  for (int64_t outc : {32, 64, 64}) {
    const std::string n = std::to_string(++layer);
    body->push_back("conv" + n, std::make_shared<nn::Conv2d>(in, outc, 3, 1, 0, false, 1, g));
    body->push_back("bn" + n, std::make_shared<nn::BatchNorm2d>(outc));
    body->push_back("relu" + n, std::make_shared<nn::ReLU>());
    if (layer == 2) body->push_back("pool", std::make_shared<nn::MaxPool2d>(2));
    in = outc;
  }
  body->push_back("flatten", std::make_shared<nn::Flatten>());
  body->push_back("dequant", std::make_shared<nn::DeQuantStub>());
  auto model = std::make_shared<nn::Sequential>();
  model->push_back("body", body);
  model->push_back("head", std::make_shared<nn::Linear>(64 * 10 * 10, 10, true, g));

  data::LoaderOptions lo;
  lo.mean = {0.1307f};
  lo.std = {0.3081f};
  data::DataLoader train(data::load_mnist(dir, data::Split::train), lo);
  lo.shuffle = false;
  lo.batch_size = 500;
  data::DataLoader test(data::load_mnist(dir, data::Split::test), lo);

  // One loop for both stages; `at_step` runs before each step.
  auto run = [&](int64_t steps, nn::Optimizer& opt, const std::function<void(int64_t)>& at_step) {
    data::Batch b;
    int64_t epoch = 0;
    train.start_epoch(epoch);
    for (int64_t s = 0; s < steps; ++s) {
      if (!train.next(b)) train.start_epoch(++epoch), train.next(b);
      if (at_step) at_step(s);
      opt.zero_grad();
      Variable loss = autograd::cross_entropy((*model)(Variable(b.x)), b.y);
      loss.backward();
      opt.step();
      if (s % 100 == 0) std::printf("  step %lld loss %.4f\n", static_cast<long long>(s), loss.value().item());
    }
  };
  model->train();
  nn::Adam fp32_opt(model->parameters(), {.lr = 2e-3});
  std::printf("FP32: %lld steps\n", static_cast<long long>(fp32_steps));
  run(fp32_steps, fp32_opt, nullptr);

  // QAT: per-channel LSQ weights (4-bit here), 8-bit activations; the head stays float.
  quant::PrepareOptions po;
  quant::QConfig q = quant::lsq_qconfig(4, 8);
  q.weight.spec.per_channel = true;
  po.qconfig.set_global(q).set_name("head", std::nullopt);
  quant::prepare_qat(*model, po);  // fuses conv+bn+relu in the body; the optimizer comes after
  nn::Adam qat_opt(model->parameters(), {.lr = 5e-4});
  std::printf("QAT: %lld steps; BN statistics freeze at step %lld, observers at step %lld\n",
              static_cast<long long>(qat_steps), static_cast<long long>(qat_steps / 2),
              static_cast<long long>(qat_steps * 3 / 4));
  run(qat_steps, qat_opt, [&](int64_t s) {
    if (s == qat_steps / 2) quant::freeze_bn_stats(*model);
    if (s == qat_steps * 3 / 4) quant::enable_observer(*model, false);
  });

  // Convert the int8 body, export it, reload it with the runtime alone.
  model->eval();
  quant::runtime::Model int8 = quant::convert(*body, {1, 28, 28});
  int8.input_mean = {0.1307f};
  int8.input_std = {0.3081f};
  quant::runtime::save_model(out, int8, "qforge custom_loop");
  const quant::runtime::Model back = quant::runtime::load_model(out);
  auto& head = static_cast<nn::Linear&>(*model->get_module("head"));
  int64_t n = 0, same = 0, correct = 0;
  data::Batch b;
  test.start_epoch(0);
  autograd::NoGradGuard ng;
  while (test.next(b)) {
    const Tensor qat = (*model)(Variable(b.x)).value();
    const Tensor deployed = head(Variable(back.run(b.x))).value();  // int8 body, then the float head
    for (int64_t i = 0; i < b.y.numel(); ++i, ++n) {
      const float* r1 = qat.data<float>() + i * 10;
      const float* r2 = deployed.data<float>() + i * 10;
      const int64_t p1 = std::max_element(r1, r1 + 10) - r1, p2 = std::max_element(r2, r2 + 10) - r2;
      same += p1 == p2 && std::memcmp(r1, r2, 10 * sizeof(float)) == 0;
      correct += p2 == b.y.data<int32_t>()[i];
    }
  }
  std::printf("exported %s; QAT model and deployed model agree on %lld of %lld test images (logits bit for bit); "
              "accuracy %.2f%%\n",
              out.c_str(), static_cast<long long>(same), static_cast<long long>(n), 100.0 * correct / n);
  return same == n ? 0 : 1;
}
