// Quantization-aware training of mnist_cnn on MNIST:
//   1. an FP32 pretrain (or --from a mnist_train checkpoint),
//   2. prepare_qat: Conv-BN-ReLU fusion with simulated BN folding, int8
//      per-channel weights and uint8 activations (or LSQ at --wbits/--abits),
//   3. QAT fine-tuning under a schedule (BN statistics and observers freeze
//      part-way through),
//   4. evaluation of the QAT model in eval mode (int8 arithmetic),
//   5. convert and export to an int8 HDF5 file, reload it, and evaluate the
//      exported model on the same test set, comparing its outputs with the
//      QAT model's (they must be identical).
// With --ptq it instead calibrates the float model on 1,000 training images
// with MinMax, Histogram and Percentile activation observers and prints the
// accuracy of each.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <functional>

#include "core/parallel.h"
#include "data/mnist.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/kernels/kernels.h"
#include "quant/prepare.h"
#include "quant/qat_modules.h"
#include "trainers/qat_hooks.h"
#include "trainers/trainer.h"

using namespace qforge;

namespace {

struct Loaders {
  std::shared_ptr<data::DataLoader> train, test;
};

Loaders make_loaders(const std::string& dir, int64_t batch, uint64_t seed, int64_t shift) {
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.seed = seed;
  lo.random_crop = shift > 0;
  lo.crop_padding = shift;
  lo.mean = {0.1307f};
  lo.std = {0.3081f};
  Loaders l;
  l.train = std::make_shared<data::DataLoader>(data::load_mnist(dir, data::Split::train), lo);
  lo.shuffle = false;
  lo.random_crop = false;
  lo.crop_padding = 0;
  lo.batch_size = std::max<int64_t>(batch, 256);
  l.test = std::make_shared<data::DataLoader>(data::load_mnist(dir, data::Split::test), lo);
  return l;
}

int64_t steps_per_epoch(const data::DataLoader& d, int64_t max_steps) {
  return max_steps > 0 ? std::min(max_steps, d.batches_per_epoch()) : d.batches_per_epoch();
}

/// FP32 pretraining with Adam and `sched` (a cosine over both stages).
void pretrain(nn::ModulePtr model, const Loaders& l, int64_t epochs, std::shared_ptr<nn::LrSchedule> sched,
              int64_t max_steps, const std::string& out, bool resume) {
  auto opt = std::make_shared<nn::Adam>(model->parameters(), nn::AdamOptions{.lr = sched->lr_at(0)});
  trainers::TrainerOptions to;
  to.epochs = epochs;
  to.out_dir = out;
  to.max_steps_per_epoch = max_steps;
  to.resume = resume;
  std::printf("== FP32 pretrain: %lld epochs, %s (FP32 and QAT stages)\n", static_cast<long long>(epochs),
              sched->describe().c_str());
  trainers::Trainer t(model, opt, sched, l.train, l.test, to);
  t.fit();
}

std::vector<int32_t> argmax_rows(const Tensor& logits) {
  std::vector<int32_t> out;
  const int64_t n = logits.size(0), k = logits.size(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits.data<float>() + i * k;
    out.push_back(static_cast<int32_t>(std::max_element(row, row + k) - row));
  }
  return out;
}

/// Predictions of `model` (eval mode) on the whole test set.
std::vector<int32_t> predict(nn::Module& model, data::DataLoader& test) {
  return argmax_rows(trainers::collect_logits([&](const Tensor& x) { return model(autograd::Variable(x)).value(); }, test));
}

/// The test set's labels, in loader order.
std::vector<int32_t> test_labels(data::DataLoader& test) {
  std::vector<int32_t> labels;
  data::Batch b;
  test.start_epoch(0);
  while (test.next(b)) labels.insert(labels.end(), b.y.data<int32_t>(), b.y.data<int32_t>() + b.y.numel());
  return labels;
}

/// Post-training quantization with each activation observer, calibrated on
/// `images` training images; prints one row per observer.
void run_ptq(const nn::StateDict& float_weights, const Loaders& l, int64_t images, int wbits, int abits,
             uint64_t seed) {
  auto fresh = [&] {
    Generator g(seed);
    auto model = nn::make_model("mnist_cnn", {}, g);
    model->load_state_dict(float_weights);
    model->eval();
    return model;
  };
  const std::vector<int32_t> labels = test_labels(*l.test);
  auto accuracy = [&](const std::vector<int32_t>& pred) {
    int64_t correct = 0;
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == labels[i];
    return correct;
  };
  auto float_model = fresh();
  const auto float_pred = predict(*float_model, *l.test);
  std::printf("== PTQ: calibration on %lld training images; int%d per-channel weights (per-channel min/max), "
              "uint%d per-tensor activations\n",
              static_cast<long long>(images), wbits, abits);
  std::printf("%-12s %22s %16s %14s %14s\n", "observer", "accuracy", "argmax != fp32", "conv2 out step",
              "fc out step");
  std::printf("%-12s %8.2f%% (%lld/%zu) %16s %14s %14s\n", "fp32", 100.0 * accuracy(float_pred) / labels.size(),
              static_cast<long long>(accuracy(float_pred)), labels.size(), "-", "-", "-");
  for (const char* kind : {"minmax", "histogram", "percentile"}) {
    auto model = fresh();
    quant::PrepareOptions po;
    quant::QConfig q = quant::default_qconfig();
    q.activation.observer = kind;
    q.activation.spec.bits = abits;
    q.weight.observer = "per_channel_minmax";
    q.weight.spec.bits = wbits;
    po.qconfig.set_global(q);
    quant::prepare(*model, po);
    {
      autograd::NoGradGuard ng;
      data::Batch b;
      l.train->start_epoch(0);
      for (int64_t seen = 0; seen < images && l.train->next(b); seen += b.y.numel()) {
        // The last batch is cut so that exactly `images` images are seen.
        const int64_t take = std::min<int64_t>(b.y.numel(), images - seen);
        Tensor x = b.x;
        if (take < b.y.numel()) x = autograd::slice(autograd::Variable(b.x), 0, 0, take).value();
        (*model)(autograd::Variable(x));
      }
    }
    quant::finish_calibration(*model);
    const auto pred = predict(*model, *l.test);
    int64_t differ = 0;
    for (size_t i = 0; i < pred.size(); ++i) differ += pred[i] != float_pred[i];
    const float conv2_step =
        static_cast<quant::QATConvBase&>(*model->get_module("conv2")).output_fake_quant().qparams().scale[0];
    const float fc_step =
        static_cast<quant::QATLinearBase&>(*model->get_module("fc")).output_fake_quant().qparams().scale[0];
    std::printf("%-12s %8.2f%% (%lld/%zu) %16lld %14.5f %14.5f\n", kind, 100.0 * accuracy(pred) / labels.size(),
                static_cast<long long>(accuracy(pred)), labels.size(), static_cast<long long>(differ), conv2_step,
                fc_step);
  }
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("mnist_qat", "Quantization-aware training of mnist_cnn on MNIST");
  options.add_options()("fp32-epochs", "FP32 pretraining epochs (ignored with --from)",
                        cxxopts::value<int64_t>()->default_value("2"))(
      "qat-epochs", "QAT fine-tuning epochs", cxxopts::value<int64_t>()->default_value("1"))(
      "from", "start from this mnist_train checkpoint instead of pretraining", cxxopts::value<std::string>())(
      "batch-size", "batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "lr", "FP32 peak learning rate (Adam, cosine)", cxxopts::value<double>()->default_value("0.003"))(
      "qat-lr", "QAT learning rate (Adam, cosine to 0); 0 continues the FP32 stage's cosine, which then spans "
      "both stages (with --from: 0.0001)",
      cxxopts::value<double>()->default_value("0"))(
      "method", "fake quant: ste (observers) or lsq (learned step size)",
      cxxopts::value<std::string>()->default_value("ste"))(
      "wbits", "weight bits (2-8)", cxxopts::value<int>()->default_value("8"))(
      "abits", "activation bits (2-8)", cxxopts::value<int>()->default_value("8"))(
      "freeze-bn", "freeze BN statistics after this fraction of the QAT steps (1 = never)",
      cxxopts::value<double>()->default_value("0.5"))(
      "freeze-observers", "freeze observers after this fraction of the QAT steps (1 = never)",
      cxxopts::value<double>()->default_value("0.7"))(
      "ptq", "instead of QAT: post-training quantization with three observers")(
      "calib-images", "PTQ calibration images", cxxopts::value<int64_t>()->default_value("1000"))(
      "shift", "augmentation: random shifts of up to this many pixels (0 = none)",
      cxxopts::value<int64_t>()->default_value("2"))(
      "threads", "worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "data-dir", "directory with the MNIST IDX files", cxxopts::value<std::string>()->default_value(data::default_mnist_dir(QFORGE_SOURCE_DIR)))(
      "out", "output directory", cxxopts::value<std::string>()->default_value("out/mnist_qat"))(
      "seed", "seed for weights and data order", cxxopts::value<uint64_t>()->default_value("0"))(
      "resume", "continue an interrupted run from its newest checkpoints in --out")(
      "max-steps", "stop each epoch after this many steps (0 = full epochs)",
      cxxopts::value<int64_t>()->default_value("0"))("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_qat: %s (see --help)\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  try {
    const int64_t fp32_epochs = args["fp32-epochs"].as<int64_t>(), qat_epochs = args["qat-epochs"].as<int64_t>();
    const int64_t batch = args["batch-size"].as<int64_t>(), max_steps = args["max-steps"].as<int64_t>();
    const double lr = args["lr"].as<double>(), qat_lr = args["qat-lr"].as<double>();
    const double freeze_bn = args["freeze-bn"].as<double>(), freeze_obs = args["freeze-observers"].as<double>();
    const std::string method = args["method"].as<std::string>();
    const int wbits = args["wbits"].as<int>(), abits = args["abits"].as<int>(), threads = args["threads"].as<int>();
    const bool ptq = args.count("ptq") > 0;
    const std::string from = args.count("from") ? args["from"].as<std::string>() : "";
    QF_CHECK(fp32_epochs >= 0 && qat_epochs >= 1) << "need --fp32-epochs >= 0 and --qat-epochs >= 1";
    QF_CHECK(from.empty() || std::filesystem::exists(from)) << "--from: no such file '" << from << "'";
    QF_CHECK(batch >= 1 && lr > 0 && qat_lr >= 0) << "need --batch-size >= 1, --lr > 0 and --qat-lr >= 0";
    QF_CHECK(method == "ste" || method == "lsq") << "--method must be ste or lsq, got '" << method << "'";
    QF_CHECK(wbits >= 2 && wbits <= 8 && abits >= 2 && abits <= 8)
        << "--wbits and --abits must be in 2..8, got " << wbits << " and " << abits;
    QF_CHECK(freeze_bn >= 0 && freeze_bn <= 1 && freeze_obs >= 0 && freeze_obs <= 1)
        << "--freeze-bn and --freeze-observers are fractions in [0, 1]";
    QF_CHECK(threads >= 0) << "--threads must be >= 0, got " << threads;
    if (threads > 0) set_num_threads(threads);
    const uint64_t seed = args["seed"].as<uint64_t>();
    const std::string out = args["out"].as<std::string>();
    const int64_t shift = args["shift"].as<int64_t>();
    QF_CHECK(shift >= 0 && shift <= 8) << "--shift must be in 0..8, got " << shift;
    const Loaders l = make_loaders(args["data-dir"].as<std::string>(), batch, seed, shift);

    Generator init(seed);
    manual_seed(seed + 1);
    auto model = nn::make_model("mnist_cnn", {}, init);
    if (!from.empty()) {
      trainers::load_model_from_checkpoint(from, *model);
      std::printf("== FP32 weights from %s\n", from.c_str());
    }
    const int64_t per_epoch = steps_per_epoch(*l.train, max_steps);
    const int64_t fp32_steps = from.empty() ? fp32_epochs * per_epoch : 0, qat_steps = qat_epochs * per_epoch;
    auto whole_run = std::make_shared<nn::CosineLr>(lr, fp32_steps + qat_steps);
    if (from.empty() && fp32_epochs > 0) {
      // With --resume an interrupted pretrain continues (a finished one just
      // reloads its last checkpoint).
      pretrain(model, l, fp32_epochs, whole_run, max_steps, out + "/fp32", args.count("resume") > 0);
    }
    if (ptq) {
      nn::StateDict w;
      for (const auto& [k, t] : model->state_dict()) w[k] = t.clone();
      run_ptq(w, l, args["calib-images"].as<int64_t>(), wbits, abits, seed);
      return 0;
    }

    quant::PrepareOptions po;
    if (method == "lsq") {
      po.qconfig.set_global(quant::lsq_qconfig(wbits, abits));
    } else {
      quant::QConfig q = quant::default_qconfig();
      q.weight.spec.bits = wbits;
      q.activation.spec.bits = abits;
      po.qconfig.set_global(q);
    }
    quant::prepare_qat(*model, po);
    quant::QatSchedule sched;
    if (freeze_bn < 1) sched.freeze_bn = quant::Milestone::step(static_cast<int64_t>(freeze_bn * qat_steps));
    if (freeze_obs < 1)
      sched.freeze_observers = quant::Milestone::step(static_cast<int64_t>(freeze_obs * qat_steps));
    std::shared_ptr<nn::LrSchedule> lr_sched;
    if (qat_lr > 0 || fp32_steps == 0)
      lr_sched = std::make_shared<nn::CosineLr>(qat_lr > 0 ? qat_lr : 1e-4, qat_steps);
    else
      lr_sched = std::make_shared<nn::ContinuedLr>(whole_run, fp32_steps);
    auto opt = std::make_shared<nn::Adam>(model->parameters(), nn::AdamOptions{.lr = lr_sched->lr_at(0)});
    trainers::TrainerOptions to;
    to.epochs = qat_epochs;
    to.out_dir = out + "/qat";
    to.resume = args.count("resume") > 0;
    to.max_steps_per_epoch = max_steps;
    std::printf("== QAT: %lld epochs of %lld steps, weights %s, activations %s\n   schedule: %s; %s\n",
                static_cast<long long>(qat_epochs), static_cast<long long>(per_epoch),
                po.qconfig.global->weight.describe().c_str(), po.qconfig.global->activation.describe().c_str(),
                sched.describe().c_str(), lr_sched->describe().c_str());
    trainers::Trainer trainer(model, opt, lr_sched, l.train, l.test, to);
    trainers::attach_qat_schedule(trainer, sched);
    auto results = trainer.fit();
    const auto final_eval = results.empty() ? trainer.evaluate(*l.test) : results.back().test;
    std::printf("QAT model, eval mode (W%dA%d integer arithmetic): test accuracy %.2f%% (%lld/%lld)\n", wbits, abits,
                final_eval.accuracy, static_cast<long long>(final_eval.correct),
                static_cast<long long>(final_eval.count));
    std::printf("checkpoints and metrics in %s\n", to.out_dir.c_str());

    // Export, reload, and evaluate the int8 model against the QAT model.
    model->eval();
    const std::string export_path = out + "/mnist_cnn_int8.h5";
    quant::runtime::save_model(export_path, quant::convert(*model, {1, 28, 28}), "qforge mnist_qat");
    const quant::runtime::Model int8 = quant::runtime::load_model(export_path);
    const Tensor qat_logits = trainers::collect_logits([&](const Tensor& x) { return (*model)(autograd::Variable(x)).value(); }, *l.test);
    const Tensor int8_logits = trainers::collect_logits([&](const Tensor& x) { return int8.run(x); }, *l.test);
    quant::set_int8_eval(*model, false);
    const Tensor sim_logits = trainers::collect_logits([&](const Tensor& x) { return (*model)(autograd::Variable(x)).value(); }, *l.test);
    quant::set_int8_eval(*model, true);
    int64_t differ = 0, correct = 0;
    const auto int8_pred = argmax_rows(int8_logits), qat_pred = argmax_rows(qat_logits), sim_pred = argmax_rows(sim_logits);
    for (int64_t i = 0; i < qat_logits.numel(); ++i) differ += qat_logits.data<float>()[i] != int8_logits.data<float>()[i];
    const std::vector<int32_t> labels = test_labels(*l.test);
    int64_t sim_correct = 0, sim_flips = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      correct += int8_pred[i] == labels[i];
      sim_correct += sim_pred[i] == labels[i];
      sim_flips += sim_pred[i] != qat_pred[i];
    }
    std::printf("exported int8 model: %s (%.0f KB)\n", export_path.c_str(),
                std::filesystem::file_size(export_path) / 1024.0);
    std::printf("exported int8 model, reloaded (%s kernels): test accuracy %.2f%% (%lld/%zu)\n",
                quant::kernels::isa_name(quant::kernels::kernels().isa), 100.0 * correct / labels.size(),
                static_cast<long long>(correct), labels.size());
    std::printf("logits that differ between the QAT model and the exported int8 model: %lld of %lld\n",
                static_cast<long long>(differ), static_cast<long long>(qat_logits.numel()));
    // The exported model again on every kernel level this CPU runs: all must agree bit for bit.
    for (auto isa : quant::kernels::kAllIsas) {
      if (!quant::kernels::cpu_has(isa)) continue;
      quant::kernels::KernelTable table;
      try {
        table = quant::kernels::kernels_for(isa);
      } catch (const Error&) {
        continue;  // no kernels of that level in this build
      }
      const Tensor other = trainers::collect_logits([&](const Tensor& x) { return int8.run(x, &table); }, *l.test);
      int64_t d = 0;
      for (int64_t i = 0; i < other.numel(); ++i) d += other.data<float>()[i] != int8_logits.data<float>()[i];
      std::printf("  with %s kernels: %lld of %lld logits differ\n", quant::kernels::isa_name(isa),
                  static_cast<long long>(d), static_cast<long long>(other.numel()));
      differ += d;
    }
    std::printf("(float fake-quant simulation, for comparison: %.2f%%; its argmax differs from int8 on %lld images)\n",
                100.0 * sim_correct / labels.size(), static_cast<long long>(sim_flips));
    if (differ != 0) {
      std::fprintf(stderr, "mnist_qat: the exported model does not reproduce the QAT model\n");
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_qat: %s\n", e.what());
    return 1;
  }
  return 0;
}
