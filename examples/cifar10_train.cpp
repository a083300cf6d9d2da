// CIFAR-10 end to end with the C++ API (the recipes cifar10_* do the same
// through the qforge CLI):
//   1. FP32 training of resnet20 or mobilenet_cifar (SGD with momentum and
//      weight decay, one-cycle LR; random crop with padding 4, horizontal
//      flip, per-channel normalization), or --from an FP32 checkpoint;
//   2. prepare_qat: fusion, int8 per-channel weights and uint8 activations
//      (STE), or LSQ at --wbits/--abits with the stem conv and the fc at 8
//      bits; quantized residual adds and global average pooling;
//   3. QAT fine-tuning (BN statistics and observers freeze part-way);
//   4. export to int8, reload, and the accuracy of the exported model with
//      the count of logits that differ from the QAT model's (must be 0).
// Data: --data-dir, by default ../shared/data/cifar10 next to the source tree.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>

#include "core/parallel.h"
#include "data/cifar10.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/kernels/kernels.h"
#include "quant/prepare.h"
#include "trainers/qat_hooks.h"
#include "trainers/trainer.h"

using namespace qforge;

namespace {

const std::vector<float> kMean = {0.4914f, 0.4822f, 0.4465f}, kStd = {0.2470f, 0.2435f, 0.2616f};

std::string default_dir() {
  const std::string d = std::string(QFORGE_SOURCE_DIR) + "/../shared/data/cifar10";
  return std::filesystem::exists(d) ? d : "data/cifar10";
}

std::vector<int32_t> argmax_rows(const Tensor& logits) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < logits.size(0); ++i) {
    const float* row = logits.data<float>() + i * logits.size(1);
    out.push_back(static_cast<int32_t>(std::max_element(row, row + logits.size(1)) - row));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("cifar10_train", "CIFAR-10: FP32 training, QAT (STE or LSQ), int8 export and validation");
  options.add_options()("model", "resnet20 or mobilenet_cifar", cxxopts::value<std::string>()->default_value("resnet20"))(
      "fp32-epochs", "FP32 epochs (ignored with --from)", cxxopts::value<int64_t>()->default_value("25"))(
      "qat-epochs", "QAT epochs", cxxopts::value<int64_t>()->default_value("5"))(
      "from", "start from this FP32 checkpoint (of this program or qforge train)", cxxopts::value<std::string>())(
      "batch-size", "batch size", cxxopts::value<int64_t>()->default_value("128"))(
      "lr", "FP32 peak LR (SGD, one-cycle)", cxxopts::value<double>()->default_value("0.2"))(
      "qat-lr", "QAT LR (SGD, cosine to 0)", cxxopts::value<double>()->default_value("0.005"))(
      "weight-decay", "SGD weight decay", cxxopts::value<double>()->default_value("0.0005"))(
      "method", "ste or lsq", cxxopts::value<std::string>()->default_value("ste"))(
      "wbits", "weight bits (2-8; LSQ keeps the stem conv and fc at 8)", cxxopts::value<int>()->default_value("8"))(
      "abits", "activation bits (2-8)", cxxopts::value<int>()->default_value("8"))(
      "data-dir", "CIFAR-10 binary directory", cxxopts::value<std::string>()->default_value(default_dir()))(
      "out", "output directory", cxxopts::value<std::string>()->default_value("out/cifar10_train"))(
      "threads", "worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "seed", "seed for weights and data order", cxxopts::value<uint64_t>()->default_value("0"))(
      "resume", "continue an interrupted run from its newest checkpoints in --out")(
      "max-steps", "stop each epoch after this many steps (0 = full epochs)",
      cxxopts::value<int64_t>()->default_value("0"))("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cifar10_train: %s (see --help)\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const std::string model_name = args["model"].as<std::string>(), method = args["method"].as<std::string>();
  const std::string from = args.count("from") ? args["from"].as<std::string>() : "";
  const std::string dir = args["data-dir"].as<std::string>(), out = args["out"].as<std::string>();
  const int64_t fp32_epochs = args["fp32-epochs"].as<int64_t>(), qat_epochs = args["qat-epochs"].as<int64_t>();
  const int64_t batch = args["batch-size"].as<int64_t>(), max_steps = args["max-steps"].as<int64_t>();
  const double lr = args["lr"].as<double>(), qat_lr = args["qat-lr"].as<double>(), wd = args["weight-decay"].as<double>();
  const int wbits = args["wbits"].as<int>(), abits = args["abits"].as<int>(), threads = args["threads"].as<int>();
  // Bad input: a clear message and exit code 2, before any work.
  std::string bad;
  if (model_name != "resnet20" && model_name != "mobilenet_cifar") bad = "--model must be resnet20 or mobilenet_cifar";
  else if (method != "ste" && method != "lsq") bad = "--method must be ste or lsq";
  else if (fp32_epochs < 0 || qat_epochs < 0 || batch < 1 || max_steps < 0 || threads < 0) bad = "negative or zero sizes";
  else if (!(lr > 0) || !(qat_lr > 0) || !(wd >= 0)) bad = "--lr and --qat-lr must be > 0, --weight-decay >= 0";
  else if (wbits < 2 || wbits > 8 || abits < 2 || abits > 8) bad = "--wbits and --abits must be in 2..8";
  else if (!from.empty() && !std::filesystem::exists(from)) bad = "--from: no such file '" + from + "'";
  else if (!std::filesystem::exists(dir + "/data_batch_1.bin") || !std::filesystem::exists(dir + "/test_batch.bin"))
    bad = "--data-dir '" + dir + "' has no CIFAR-10 binary files (data_batch_1.bin ... test_batch.bin)";
  if (!bad.empty()) {
    std::fprintf(stderr, "cifar10_train: %s\n", bad.c_str());
    return 2;
  }
  try {
    if (threads > 0) set_num_threads(threads);
    const uint64_t seed = args["seed"].as<uint64_t>();
    const bool resume = args.count("resume") > 0;
    data::LoaderOptions lo;
    lo.batch_size = batch;
    lo.seed = seed;
    lo.random_crop = true;
    lo.crop_padding = 4;
    lo.hflip = true;
    lo.mean = kMean;
    lo.std = kStd;
    auto train = std::make_shared<data::DataLoader>(data::load_cifar10(dir, data::Split::train), lo);
    lo.shuffle = false;
    lo.random_crop = lo.hflip = false;
    lo.batch_size = 500;
    auto test = std::make_shared<data::DataLoader>(data::load_cifar10(dir, data::Split::test), lo);
    const int64_t per_epoch = max_steps > 0 ? std::min(max_steps, train->batches_per_epoch()) : train->batches_per_epoch();

    Generator init(seed);
    manual_seed(seed + 1);
    auto model = nn::make_model(model_name, {}, init);
    std::printf("== %s, %lld parameters; %d threads\n", model_name.c_str(),
                static_cast<long long>(model->num_parameters()), num_threads());
    auto sgd = [&](double l) {
      return std::make_shared<nn::SGD>(model->parameters(), nn::SGDOptions{.lr = l, .momentum = 0.9, .weight_decay = wd});
    };
    trainers::TrainerOptions to;
    to.max_steps_per_epoch = max_steps;
    to.resume = resume;
    if (!from.empty()) {
      trainers::load_model_from_checkpoint(from, *model);
      std::printf("== FP32 weights from %s\n", from.c_str());
    } else if (fp32_epochs > 0) {
      auto sched = std::make_shared<nn::OneCycleLr>(lr, std::max<int64_t>(2, fp32_epochs * per_epoch));
      to.epochs = fp32_epochs;
      to.out_dir = out + "/fp32";
      std::printf("== FP32: %lld epochs of %lld steps, SGD %s\n", static_cast<long long>(fp32_epochs),
                  static_cast<long long>(per_epoch), sched->describe().c_str());
      trainers::Trainer t(model, sgd(sched->lr_at(0)), sched, train, test, to);
      t.fit();
    }
    if (qat_epochs == 0) return 0;

    quant::PrepareOptions po;
    if (method == "lsq") {
      po.qconfig.set_global(quant::lsq_qconfig(wbits, abits));
      po.qconfig.set_name("conv", quant::lsq_qconfig(8, 8));  // the stem
      po.qconfig.set_name("fc", quant::lsq_qconfig(8, 8));
    } else {
      quant::QConfig q = quant::default_qconfig();
      q.weight.spec.bits = wbits;
      q.activation.spec.bits = abits;
      po.qconfig.set_global(q);
    }
    quant::prepare_qat(*model, po);
    const int64_t qat_steps = qat_epochs * per_epoch;
    quant::QatSchedule qs;
    qs.freeze_bn = quant::Milestone::step(static_cast<int64_t>(0.6 * qat_steps));
    qs.freeze_observers = quant::Milestone::step(static_cast<int64_t>(0.8 * qat_steps));
    auto sched = std::make_shared<nn::CosineLr>(qat_lr, std::max<int64_t>(1, qat_steps));
    to.epochs = qat_epochs;
    to.out_dir = out + "/qat";
    std::printf("== QAT: %lld epochs, %s, weights %s, activations %s\n   %s\n", static_cast<long long>(qat_epochs),
                method.c_str(), po.qconfig.global->weight.describe().c_str(),
                po.qconfig.global->activation.describe().c_str(), qs.describe().c_str());
    trainers::Trainer t(model, sgd(qat_lr), sched, train, test, to);
    trainers::attach_qat_schedule(t, qs);
    const auto results = t.fit();
    const auto qat_eval = results.empty() ? t.evaluate(*test) : results.back().test;
    std::printf("QAT model, eval mode (integer arithmetic): test accuracy %.2f%%\n", qat_eval.accuracy);

    model->eval();
    quant::runtime::Model int8 = quant::convert(*model, {3, 32, 32});
    int8.input_mean = kMean;
    int8.input_std = kStd;
    const std::string path = out + "/" + model_name + "_int8.h5";
    quant::runtime::save_model(path, int8, "qforge cifar10_train");
    const quant::runtime::Model back = quant::runtime::load_model(path);
    const Tensor qat_logits = trainers::collect_logits([&](const Tensor& x) { return (*model)(autograd::Variable(x)).value(); }, *test);
    const Tensor int8_logits = trainers::collect_logits([&](const Tensor& x) { return back.run(x); }, *test);
    int64_t differ = 0, correct = 0, n = 0;
    for (int64_t i = 0; i < qat_logits.numel(); ++i) differ += qat_logits.data<float>()[i] != int8_logits.data<float>()[i];
    const auto pred = argmax_rows(int8_logits);
    data::Batch b;
    test->start_epoch(0);
    while (test->next(b))
      for (int64_t i = 0; i < b.y.numel(); ++i, ++n) correct += pred[static_cast<size_t>(n)] == b.y.data<int32_t>()[i];
    std::printf("exported int8 model %s (%.0f KB, %s kernels): test accuracy %.2f%% (%lld/%lld)\n", path.c_str(),
                std::filesystem::file_size(path) / 1024.0, quant::kernels::isa_name(quant::kernels::kernels().isa),
                100.0 * correct / n, static_cast<long long>(correct), static_cast<long long>(n));
    std::printf("logits that differ between the QAT model and the exported model: %lld of %lld\n",
                static_cast<long long>(differ), static_cast<long long>(qat_logits.numel()));
    return differ == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cifar10_train: %s\n", e.what());
    return 1;
  }
}
