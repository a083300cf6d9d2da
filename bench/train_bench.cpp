// FP32 training throughput of a zoo model, the way the reference kit measures
// it: batches gathered in shuffled order from an in-memory, already
// normalized tensor; zero_grad, forward, cross-entropy, backward, optimizer
// step. PyTorch runs the same model, batch, optimizer and thread count in the
// same run, and the ratio is printed.
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

using namespace qforge;
using namespace qforge::autograd;

int main(int argc, char** argv) {
  cxxopts::Options options("train_bench", "FP32 training throughput against PyTorch (same run)");
  options.add_options()("model", "zoo model (mnist_cnn)", cxxopts::value<std::string>()->default_value("mnist_cnn"))(
      "batch", "batch size", cxxopts::value<int>()->default_value("64"))(
      "steps", "timed steps", cxxopts::value<int>()->default_value("150"))(
      "warmup", "warm-up steps", cxxopts::value<int>()->default_value("10"))(
      "threads", "threads for qforge and PyTorch", cxxopts::value<int>()->default_value("2"))(
      "data-dir", "MNIST directory", cxxopts::value<std::string>()->default_value(std::string(QFORGE_SOURCE_DIR) +
                                                                                    "/data/mnist"))(
      "random-data", "use random images instead of MNIST")("no-reference", "skip the PyTorch run")(
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
  if (model_name != "mnist_cnn") {
    std::fprintf(stderr, "train_bench: only mnist_cnn has an MNIST-shaped reference row here\n");
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

  Generator gen(0);
  auto model = nn::make_model(model_name, {}, gen);
  model->train();
  nn::Adam opt(model->parameters(), {.lr = 1e-3});
  Generator order(0);
  Tensor xb = Tensor::empty({batch, 1, 28, 28});
  Tensor yb = Tensor::empty({batch}, DType::i32);
  std::vector<double> times;
  double loss = 0;
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
    loss = l.value().item();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) times.push_back(dt);
  }
  double total = 0;
  for (double t : times) total += t;
  std::sort(times.begin(), times.end());
  const double ours = batch * steps / total;
  std::printf("qforge  %s fp32 train, batch %d, Adam, %d threads, %s data: %.0f images/s (step median %.2f ms, "
              "final loss %.3f)\n",
              model_name.c_str(), batch, threads, data_desc.c_str(), ours, times[times.size() / 2] * 1e3, loss);

  if (args.count("no-reference")) return 0;
  const std::string cmd = args["python"].as<std::string>() + " " + bench::reference_kit() +
                          "/pytorch/reference.py train --model " + model_name + " --mode fp32 --batch " +
                          std::to_string(batch) + " --steps " + std::to_string(steps) + " --warmup " +
                          std::to_string(warmup) + " --threads " + std::to_string(threads) +
                          (data_desc == "random" ? " --random-data" : "") + " 2>&1";
  auto rows = bench::run_reference(cmd);
  if (rows.empty()) {
    std::printf("# no reference result (is python3-torch installed? scripts/install-deps.sh --bench)\n");
    return 0;
  }
  const double theirs = std::stod(bench::json_field(rows[0], "images_per_s"));
  std::printf("pytorch %s fp32 train: %.0f images/s (OPENBLAS_CORETYPE=%s)\n", model_name.c_str(), theirs,
              bench::json_field(rows[0], "openblas_coretype").c_str());
  std::printf("ratio qforge/pytorch: %.2fx (goal >= 1.2x)\n", ours / theirs);
  std::printf("RESULT {\"bench\":\"train\",\"model\":\"%s\",\"mode\":\"fp32\",\"batch\":%d,\"threads\":%d,"
              "\"qforge_images_per_s\":%.1f,\"pytorch_images_per_s\":%.1f,\"ratio\":%.3f}\n",
              model_name.c_str(), batch, threads, ours, theirs, ours / theirs);
  return 0;
}
