// FP32 and QAT training throughput of a zoo model, the way the reference kit
// measures it: batches gathered in shuffled order from an in-memory, already
// normalized tensor; zero_grad, forward, cross-entropy, backward, optimizer
// step. QAT is prepare_qat() with the default qconfig (Conv-BN-ReLU fused with
// simulated BN folding, int8 per-channel weights, uint8 activations) and Adam
// at 1e-4, as the reference's QAT row. PyTorch runs the same models, batch,
// optimizer and thread count in the same run, and the ratios are printed.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "bench/bench_util.h"
#include "data/mnist.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "quant/prepare.h"

using namespace qforge;
using namespace qforge::autograd;

int main(int argc, char** argv) {
  cxxopts::Options options("train_bench", "FP32 and QAT training throughput against PyTorch (same run)");
  options.add_options()("model", "zoo model (mnist_cnn)", cxxopts::value<std::string>()->default_value("mnist_cnn"))(
      "batch", "batch size", cxxopts::value<int>()->default_value("64"))(
      "steps", "timed steps", cxxopts::value<int>()->default_value("150"))(
      "warmup", "warm-up steps", cxxopts::value<int>()->default_value("10"))(
      "threads", "threads for qforge and PyTorch", cxxopts::value<int>()->default_value("2"))(
      "data-dir", "MNIST directory", cxxopts::value<std::string>()->default_value(std::string(QFORGE_SOURCE_DIR) +
                                                                                    "/data/mnist"))(
      "random-data", "use random images instead of MNIST")(
      "mode", "fp32, qat or both", cxxopts::value<std::string>()->default_value("both"))(
      "repeat", "qforge runs per mode (the best is kept)", cxxopts::value<int>()->default_value("3"))("no-reference", "skip the PyTorch run")(
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
  const int threads = args["threads"].as<int>(), batch = args["batch"].as<int>();
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>();
  const std::string model_name = args["model"].as<std::string>();
  const int repeat = std::max(1, args["repeat"].as<int>());
  if (model_name != "mnist_cnn") {
    std::fprintf(stderr, "train_bench: only mnist_cnn has an MNIST-shaped reference row here\n");
    return 2;
  }
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
  if (!args.count("random-data")) {
    data::Dataset ds = data::load_mnist(args["data-dir"].as<std::string>(), data::Split::train);
    const int64_t n = ds.size();
    images = Tensor::empty({n, 1, 28, 28});
    const uint8_t* src = ds.images.data<uint8_t>();
    float* dst = images.data<float>();
    for (int64_t i = 0; i < images.numel(); ++i) dst[i] = (src[i] / 255.0f - 0.1307f) / 0.3081f;
    labels = ds.labels;
    data_desc = "mnist";
  } else {
    Generator g(1);
    images = Tensor::empty({60000, 1, 28, 28});
    normal_(images, 0, 1, g);
    labels = Tensor::empty({60000}, DType::i32);
    for (int64_t i = 0; i < 60000; ++i) labels.data<int32_t>()[i] = static_cast<int32_t>(g.below(10));
    data_desc = "random";
  }
  const int64_t n = labels.numel(), per = 28 * 28;

  struct Run {
    double images_per_s = 0, median_ms = 0, loss = 0;
  };
  auto measure = [&](bool qat) {
    Generator gen(0);
    auto model = nn::make_model(model_name, {}, gen);
    if (qat) quant::prepare_qat(*model);
    model->train();
    nn::Adam opt(model->parameters(), {.lr = qat ? 1e-4 : 1e-3});
    Generator order(0);
    Tensor xb = Tensor::empty({batch, 1, 28, 28});
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
      opt.zero_grad();
      Variable l = cross_entropy(model->forward(Variable(xb)), yb);
      l.backward();
      opt.step();
      r.loss = l.value().item();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s >= warmup) times.push_back(dt);
    }
    double total = 0;
    for (double t : times) total += t;
    std::sort(times.begin(), times.end());
    r.images_per_s = batch * steps / total;
    r.median_ms = times[times.size() / 2] * 1e3;
    std::printf("qforge  %s %s train, batch %d, Adam, %d threads, %s data: %.0f images/s (step median %.2f ms, "
                "final loss %.3f)\n",
                model_name.c_str(), qat ? "qat " : "fp32", batch, threads, data_desc.c_str(), r.images_per_s,
                r.median_ms, r.loss);
    return r;
  };
  const std::string mode = args["mode"].as<std::string>();
  const bool do_fp32 = mode == "fp32" || mode == "both", do_qat = mode == "qat" || mode == "both";
  // The machine is shared and step times drift: alternate the modes and keep
  // each one's best run.
  Run fp32, qat;
  for (int rep = 0; rep < repeat; ++rep) {
    if (do_fp32) {
      const Run r = measure(false);
      if (r.images_per_s > fp32.images_per_s) fp32 = r;
    }
    if (do_qat) {
      const Run r = measure(true);
      if (r.images_per_s > qat.images_per_s) qat = r;
    }
  }
  if (repeat > 1)
    std::printf("best of %d: qforge fp32 %.0f images/s, qat %.0f images/s\n", repeat, fp32.images_per_s,
                qat.images_per_s);
  if (do_fp32 && do_qat)
    std::printf("qforge QAT overhead over its own FP32: %.2fx (goal <= 1.25x)\n", fp32.images_per_s / qat.images_per_s);

  if (args.count("no-reference")) return 0;
  for (const char* m : {"fp32", "qat"}) {
    const bool is_qat = std::strcmp(m, "qat") == 0;
    if ((is_qat && !do_qat) || (!is_qat && !do_fp32)) continue;
    const std::string cmd = args["python"].as<std::string>() + " " + bench::reference_kit() +
                            "/pytorch/reference.py train --model " + model_name + " --mode " + m + " --batch " +
                            std::to_string(batch) + " --steps " + std::to_string(steps) + " --warmup " +
                            std::to_string(warmup) + " --threads " + std::to_string(threads) +
                            (data_desc == "random" ? " --random-data" : "") + " 2>&1";
    auto rows = bench::run_reference(cmd);
    if (rows.empty()) {
      std::printf("# no reference result (is python3-torch installed? scripts/install-deps.sh --bench)\n");
      return 0;
    }
    const double theirs = std::stod(bench::json_field(rows[0], "images_per_s"));
    const double ours = is_qat ? qat.images_per_s : fp32.images_per_s;
    std::printf("pytorch %s %s train: %.0f images/s (OPENBLAS_CORETYPE=%s)\n", model_name.c_str(), m, theirs,
                bench::json_field(rows[0], "openblas_coretype").c_str());
    std::printf("ratio qforge/pytorch %s: %.2fx (goal >= %s)\n", m, ours / theirs, is_qat ? "1.7x" : "1.2x");
    std::printf("RESULT {\"bench\":\"train\",\"model\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"threads\":%d,"
                "\"qforge_images_per_s\":%.1f,\"pytorch_images_per_s\":%.1f,\"ratio\":%.3f}\n",
                model_name.c_str(), m, batch, threads, ours, theirs, ours / theirs);
  }
  return 0;
}
