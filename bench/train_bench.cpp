// FP32 and QAT training throughput of a zoo model, the way the reference kit
// measures it: batches gathered in shuffled order from an in-memory, already
// normalized tensor; zero_grad, forward, cross-entropy, backward, optimizer
// step. QAT is prepare_qat() with the default qconfig (Conv-BN-ReLU fused with
// simulated BN folding, int8 per-channel weights, uint8 activations).
// Optimizers as in the reference: mnist_cnn Adam (1e-3 FP32, 1e-4 QAT),
// resnet20 SGD (lr 0.05, momentum 0.9, weight decay 5e-4) on CIFAR-10 from
// --data-dir (default ../shared/data/cifar10). PyTorch runs the same models,
// batch, optimizer and thread count in the same run, and the ratios are
// printed.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "bench/bench_util.h"
#include "data/cifar10.h"
#include "data/mnist.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "quant/prepare.h"

using namespace qforge;
using namespace qforge::autograd;

static int run_main(int argc, char** argv) {
  cxxopts::Options options("train_bench", "FP32 and QAT training throughput against PyTorch (same run)");
  options.add_options()("model", "mnist_cnn or resnet20", cxxopts::value<std::string>()->default_value("mnist_cnn"))(
      "batch", "batch size (default 64, resnet20 128)", cxxopts::value<int>())(
      "steps", "timed steps", cxxopts::value<int>()->default_value("150"))(
      "warmup", "warm-up steps", cxxopts::value<int>()->default_value("10"))(
      "threads", "threads for qforge and PyTorch", cxxopts::value<int>()->default_value("2"))(
      "data-dir", "MNIST or CIFAR-10 directory (default: the repo's MNIST, ../shared/data/cifar10)",
      cxxopts::value<std::string>())(
      "random-data", "use random images instead of the dataset")(
      "mode", "fp32, qat or both", cxxopts::value<std::string>()->default_value("both"))(
      "repeat", "runs per mode, of qforge and of PyTorch, alternated (the best of each is kept)", cxxopts::value<int>()->default_value("3"))("no-reference", "skip the PyTorch run")(
      "python", "interpreter with torch", cxxopts::value<std::string>()->default_value("/usr/bin/python3"))(
      "h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_bench: %s\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const std::string model_name = args["model"].as<std::string>();
  if (model_name != "mnist_cnn" && model_name != "resnet20") {
    std::fprintf(stderr, "train_bench: --model must be mnist_cnn or resnet20 (the reference's training rows)\n");
    return 2;
  }
  const bool mnist = model_name == "mnist_cnn";
  const int threads = args["threads"].as<int>(), batch = args.count("batch") ? args["batch"].as<int>() : mnist ? 64 : 128;
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>();
  const int repeat = std::max(1, args["repeat"].as<int>());
  if (args["mode"].as<std::string>() != "fp32" && args["mode"].as<std::string>() != "qat" &&
      args["mode"].as<std::string>() != "both") {
    std::fprintf(stderr, "train_bench: --mode must be fp32, qat or both\n");
    return 2;
  }
  set_num_threads(threads);
  std::printf("%s\n", bench::env_line().c_str());

  // All images normalized once, as the reference does.
  Tensor images, labels;
  std::string data_desc;
  const int64_t C = mnist ? 1 : 3, HW = mnist ? 28 : 32, per = C * HW * HW;
  const std::string dir = args.count("data-dir") ? args["data-dir"].as<std::string>()
                          : mnist ? std::string(QFORGE_SOURCE_DIR) + "/data/mnist"
                                  : std::string(QFORGE_SOURCE_DIR) + "/../shared/data/cifar10";
  if (!args.count("random-data")) {
    data::Dataset ds = mnist ? data::load_mnist(dir, data::Split::train) : data::load_cifar10(dir, data::Split::train);
    const int64_t count = ds.size();
    images = Tensor::empty({count, C, HW, HW});
    const uint8_t* src = ds.images.data<uint8_t>();
    float* dst = images.data<float>();
    const float mean[3] = {mnist ? 0.1307f : 0.4914f, 0.4822f, 0.4465f};
    const float stdv[3] = {mnist ? 0.3081f : 0.2470f, 0.2435f, 0.2616f};
    for (int64_t i = 0; i < images.numel(); ++i) {
      const int64_t c = (i / (HW * HW)) % C;
      dst[i] = (src[i] / 255.0f - mean[c]) / stdv[c];
    }
    labels = ds.labels;
    data_desc = mnist ? "mnist" : "cifar10";
  } else {
    Generator g(1);
    const int64_t count = mnist ? 60000 : 50000;
    images = Tensor::empty({count, C, HW, HW});
    normal_(images, 0, 1, g);
    labels = Tensor::empty({count}, DType::i32);
    for (int64_t i = 0; i < count; ++i) labels.data<int32_t>()[i] = static_cast<int32_t>(g.below(10));
    data_desc = "random";
  }
  const int64_t n = labels.numel();

  struct Run {
    double images_per_s = 0, median_ms = 0, loss = 0;
  };
  auto measure = [&](bool qat) {
    Generator gen(0);
    auto model = nn::make_model(model_name, {}, gen);
    if (qat) quant::prepare_qat(*model);
    model->train();
    std::unique_ptr<nn::Optimizer> opt;
    if (mnist) opt = std::make_unique<nn::Adam>(model->parameters(), nn::AdamOptions{.lr = qat ? 1e-4 : 1e-3});
    else
      opt = std::make_unique<nn::SGD>(model->parameters(),
                                      nn::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
    Generator order(0);
    Tensor xb = Tensor::empty({batch, C, HW, HW});
    Tensor yb = Tensor::empty({batch}, DType::i32);
    std::vector<double> times;
    Run r;
    for (int s = 0; s < warmup + steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int b = 0; b < batch; ++b) {
        const int64_t i = static_cast<int64_t>(order.below(static_cast<uint64_t>(n)));
        std::memcpy(xb.data<float>() + b * per, images.data<float>() + i * per, per * sizeof(float));
        yb.data<int32_t>()[b] = labels.data<int32_t>()[i];
      }
      opt->zero_grad();
      Variable l = cross_entropy(model->forward(Variable(xb)), yb);
      l.backward();
      opt->step();
      r.loss = l.value().item();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s >= warmup) times.push_back(dt);
    }
    double total = 0;
    for (double t : times) total += t;
    std::sort(times.begin(), times.end());
    r.images_per_s = batch * steps / total;
    r.median_ms = times[times.size() / 2] * 1e3;
    std::printf("qforge  %s %s train, batch %d, %s, %d threads, %s data: %.0f images/s (step median %.2f ms, "
                "final loss %.3f)\n",
                model_name.c_str(), qat ? "qat " : "fp32", batch, mnist ? "Adam" : "SGD", threads, data_desc.c_str(),
                r.images_per_s,
                r.median_ms, r.loss);
    return r;
  };
  const std::string mode = args["mode"].as<std::string>();
  const bool do_fp32 = mode == "fp32" || mode == "both", do_qat = mode == "qat" || mode == "both";
  // The reference for one mode: its images/s and OPENBLAS_CORETYPE, or
  // images/s 0 when PyTorch is missing.
  const bool with_ref = !args.count("no-reference");
  auto reference = [&](const char* m, std::string& coretype) -> double {
    const std::string cmd = args["python"].as<std::string>() + " " + bench::reference_kit() +
                            "/pytorch/reference.py train --model " + model_name + " --mode " + m + " --batch " +
                            std::to_string(batch) + " --steps " + std::to_string(steps) + " --warmup " +
                            std::to_string(warmup) + " --threads " + std::to_string(threads) +
                            (data_desc == "random" ? std::string(" --random-data") : " --data-dir " + dir) + " 2>&1";
    auto rows = bench::run_reference(cmd);
    if (rows.empty()) return 0;
    coretype = bench::json_field(rows[0], "openblas_coretype");
    return std::stod(bench::json_field(rows[0], "images_per_s"));
  };
  // The machine is shared and step times drift: alternate the modes, and
  // qforge with PyTorch, and keep each one's best run (the same number of
  // runs for both sides).
  Run fp32, qat;
  double ref_fp32 = 0, ref_qat = 0;  // 0 until a reference run of that mode succeeds
  int ref_runs_fp32 = 0, ref_runs_qat = 0;
  std::string coretype = "?";
  for (int rep = 0; rep < repeat; ++rep) {
    for (const bool is_qat : {false, true}) {
      if ((is_qat && !do_qat) || (!is_qat && !do_fp32)) continue;
      const Run r = measure(is_qat);
      Run& best = is_qat ? qat : fp32;
      if (r.images_per_s > best.images_per_s) best = r;
      if (!with_ref) continue;
      const double theirs = reference(is_qat ? "qat" : "fp32", coretype);
      if (theirs <= 0) {
        std::printf("# reference %s run failed\n", is_qat ? "qat" : "fp32");
        continue;
      }
      std::printf("pytorch %s %s train: %.0f images/s\n", model_name.c_str(), is_qat ? "qat " : "fp32", theirs);
      double& ref_best = is_qat ? ref_qat : ref_fp32;
      ref_best = std::max(ref_best, theirs);
      ++(is_qat ? ref_runs_qat : ref_runs_fp32);
    }
  }
  if (repeat > 1)
    std::printf("best of %d: qforge fp32 %.0f images/s, qat %.0f images/s\n", repeat, fp32.images_per_s,
                qat.images_per_s);
  if (do_fp32 && do_qat)
    std::printf("qforge QAT overhead over its own FP32: %.2fx (goal <= 1.25x)\n", fp32.images_per_s / qat.images_per_s);

  if (!with_ref) return 0;
  for (const bool is_qat : {false, true}) {
    if ((is_qat && !do_qat) || (!is_qat && !do_fp32)) continue;
    const char* m = is_qat ? "qat" : "fp32";
    const double theirs = is_qat ? ref_qat : ref_fp32;
    if (theirs <= 0) {
      std::printf("# no %s reference result (is python3-torch installed? scripts/install-deps.sh --bench)\n", m);
      continue;
    }
    const double ours = is_qat ? qat.images_per_s : fp32.images_per_s;
    std::printf("pytorch %s %s train, best of %d: %.0f images/s (OPENBLAS_CORETYPE=%s)\n", model_name.c_str(), m,
                is_qat ? ref_runs_qat : ref_runs_fp32, theirs, coretype.c_str());
    // Goals: mnist_cnn (issue 3/4) FP32 1.2x, QAT 1.7x; resnet20 (issue 7) FP32 1.0x, QAT 1.7x.
    std::printf("ratio qforge/pytorch %s: %.2fx (goal >= %s)\n", m, ours / theirs,
                is_qat ? "1.7x" : mnist ? "1.2x" : "1.0x");
    std::printf("RESULT {\"bench\":\"train\",\"model\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"threads\":%d,"
                "\"qforge_images_per_s\":%.1f,\"pytorch_images_per_s\":%.1f,\"ratio\":%.3f}\n",
                model_name.c_str(), m, batch, threads, ours, theirs, ours / theirs);
  }
  return 0;
}

int main(int argc, char** argv) { return qforge::bench::guarded_main("train_bench", run_main, argc, argv); }
