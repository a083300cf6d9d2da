// The MNIST-rows LSTM with the C++ API: each image is a sequence of 28 rows
// of 28 pixels, an LSTM(28, 128) and fc 128->10 (nn::mnist_lstm).
//   1. FP32 training (Adam, cosine, gradient clipping), or --from a checkpoint;
//   2. dynamic int8 (quant::quantize_dynamic: int8 weights, activations
//      quantized per call, no calibration) on a copy, and its accuracy;
//   3. QAT with the integer LSTM (prepare_qat swaps in QATLSTM), export,
//      reload, and the count of logits that differ from QAT eval (must be 0).
// The recipe recipes/mnist_lstm_qat_int8.yaml runs steps 1 and 3 through the
// qforge CLI.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>

#include "core/parallel.h"
#include "data/mnist.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/dynamic.h"
#include "quant/prepare.h"
#include "trainers/qat_hooks.h"
#include "trainers/trainer.h"

using namespace qforge;

namespace {

double accuracy_of(const Tensor& logits, const std::vector<int32_t>& labels) {
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* row = logits.data<float>() + i * logits.size(1);
    correct += (std::max_element(row, row + logits.size(1)) - row) == labels[i];
  }
  return 100.0 * static_cast<double>(correct) / static_cast<double>(labels.size());
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("mnist_lstm", "MNIST rows through an LSTM: FP32, dynamic int8, QAT int8");
  options.add_options()("fp32-epochs", "FP32 epochs (ignored with --from)", cxxopts::value<int64_t>()->default_value("6"))(
      "qat-epochs", "QAT epochs", cxxopts::value<int64_t>()->default_value("2"))(
      "from", "FP32 checkpoint to start from (of this program or qforge train)", cxxopts::value<std::string>())(
      "hidden", "LSTM hidden size", cxxopts::value<int64_t>()->default_value("128"))(
      "lr", "FP32 peak LR (Adam, cosine)", cxxopts::value<double>()->default_value("0.002"))(
      "qat-lr", "QAT LR (Adam, cosine)", cxxopts::value<double>()->default_value("0.0003"))(
      "data-dir", "MNIST directory", cxxopts::value<std::string>()->default_value(data::default_mnist_dir(QFORGE_SOURCE_DIR)))(
      "out", "output directory", cxxopts::value<std::string>()->default_value("out/mnist_lstm"))(
      "threads", "worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "max-steps", "stop each epoch after this many steps (0 = full epochs)",
      cxxopts::value<int64_t>()->default_value("0"))("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_lstm: %s (see --help)\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const int64_t fp32_epochs = args["fp32-epochs"].as<int64_t>(), qat_epochs = args["qat-epochs"].as<int64_t>();
  const int64_t hidden = args["hidden"].as<int64_t>(), max_steps = args["max-steps"].as<int64_t>();
  const double lr = args["lr"].as<double>(), qat_lr = args["qat-lr"].as<double>();
  const std::string from = args.count("from") ? args["from"].as<std::string>() : "";
  const std::string out = args["out"].as<std::string>();
  const int threads = args["threads"].as<int>();
  if (fp32_epochs < 0 || qat_epochs < 0 || hidden < 1 || max_steps < 0 || threads < 0 || !(lr > 0) || !(qat_lr > 0) ||
      (!from.empty() && !std::filesystem::exists(from))) {
    std::fprintf(stderr, "mnist_lstm: need epochs >= 0, --hidden >= 1, learning rates > 0 and an existing --from\n");
    return 2;
  }
  try {
    if (threads > 0) set_num_threads(threads);
    const std::string dir = args["data-dir"].as<std::string>();
    data::LoaderOptions lo;
    lo.batch_size = 128;
    lo.mean = {0.1307f};
    lo.std = {0.3081f};
    auto train = std::make_shared<data::DataLoader>(data::load_mnist(dir, data::Split::train), lo);
    lo.shuffle = false;
    lo.batch_size = 500;
    auto test = std::make_shared<data::DataLoader>(data::load_mnist(dir, data::Split::test), lo);
    const int64_t per_epoch = max_steps > 0 ? std::min(max_steps, train->batches_per_epoch()) : train->batches_per_epoch();

    Generator g(0);
    manual_seed(1);
    auto model = nn::mnist_lstm(hidden, 1, 10, g);
    trainers::TrainerOptions to;
    to.max_steps_per_epoch = max_steps;
    to.clip_grad_norm = 5;
    if (!from.empty()) {
      trainers::load_model_from_checkpoint(from, *model);
      std::printf("== FP32 weights from %s\n", from.c_str());
    } else if (fp32_epochs > 0) {
      auto sched = std::make_shared<nn::CosineLr>(lr, fp32_epochs * per_epoch);
      to.epochs = fp32_epochs;
      to.out_dir = out + "/fp32";
      trainers::Trainer t(model, std::make_shared<nn::Adam>(model->parameters(), nn::AdamOptions{.lr = lr}), sched,
                          train, test, to);
      t.fit();
    }
    model->eval();
    std::vector<int32_t> labels;
    auto logits_of = [&](nn::Module& m) {
      labels.clear();
      return trainers::collect_logits([&](const Tensor& x) { return m(autograd::Variable(x)).value(); }, *test,
                                      &labels);
    };
    const Tensor fp32 = logits_of(*model);
    std::printf("FP32: test accuracy %.2f%%\n", accuracy_of(fp32, labels));

    // Dynamic int8 on a copy of the FP32 model.
    auto dyn = nn::mnist_lstm(hidden, 1, 10, g);
    dyn->load_state_dict(model->state_dict());
    dyn->eval();
    quant::quantize_dynamic(*dyn);
    const Tensor dl = logits_of(*dyn);
    std::printf("dynamic int8 (LSTM and fc, no calibration): test accuracy %.2f%%\n", accuracy_of(dl, labels));
    if (qat_epochs == 0) return 0;

    quant::prepare_qat(*model);
    quant::QatSchedule qs;
    qs.freeze_observers = quant::Milestone::step(static_cast<int64_t>(0.7 * qat_epochs * per_epoch));
    auto sched = std::make_shared<nn::CosineLr>(qat_lr, qat_epochs * per_epoch);
    to.epochs = qat_epochs;
    to.out_dir = out + "/qat";
    trainers::Trainer t(model, std::make_shared<nn::Adam>(model->parameters(), nn::AdamOptions{.lr = qat_lr}), sched,
                        train, test, to);
    trainers::attach_qat_schedule(t, qs);
    t.fit();
    model->eval();
    const Tensor qat = logits_of(*model);
    const std::string path = out + "/mnist_lstm_int8.h5";
    quant::runtime::Model int8 = quant::convert(*model, {1, 28, 28});
    int8.input_mean = {0.1307f};
    int8.input_std = {0.3081f};
    quant::runtime::save_model(path, int8, "qforge mnist_lstm");
    const quant::runtime::Model back = quant::runtime::load_model(path);
    const Tensor il = trainers::collect_logits([&](const Tensor& x) { return back.run(x); }, *test);
    int64_t differ = 0;
    for (int64_t i = 0; i < il.numel(); ++i) differ += il.data<float>()[i] != qat.data<float>()[i];
    std::printf("QAT int8, eval mode: %.2f%%; exported %s: %.2f%%; logits that differ: %lld of %lld\n",
                accuracy_of(qat, labels), path.c_str(), accuracy_of(il, labels), static_cast<long long>(differ),
                static_cast<long long>(il.numel()));
    return differ == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_lstm: %s\n", e.what());
    return 1;
  }
}
