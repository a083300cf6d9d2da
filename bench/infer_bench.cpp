// mnist_cnn inference: qforge FP32 (eval-mode forward) and qforge int8 (the
// converted runtime model), batch-1 latency and batch-64 throughput, against
// `reference.py infer` (PyTorch FP32 and int8 on the onednn engine) in the
// same run. As in the reference, the weights are random, BN gets running
// statistics from 256 training images, and int8 is post-training quantized
// on 256 training images (calibration only; accuracy is not the point).
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <string>

#include "autograd/ops.h"
#include "bench/bench_util.h"
#include "data/mnist.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/kernels/kernels.h"
#include "quant/prepare.h"

using namespace qforge;
using autograd::Variable;

int main(int argc, char** argv) {
  cxxopts::Options options("infer_bench", "mnist_cnn FP32 and int8 inference against PyTorch (same run)");
  options.add_options()("threads", "threads", cxxopts::value<int>()->default_value("2"))(
      "batch", "throughput batch", cxxopts::value<int>()->default_value("64"))(
      "min-sec", "seconds per measurement", cxxopts::value<double>()->default_value("1.0"))(
      "data-dir", "MNIST directory",
      cxxopts::value<std::string>()->default_value(std::string(QFORGE_SOURCE_DIR) + "/data/mnist"))(
      "no-reference", "skip PyTorch")("int8-only", "measure only qforge int8 (for profiling)")(
      "python", "interpreter with torch", cxxopts::value<std::string>()->default_value("/usr/bin/python3"))(
      "h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "infer_bench: %s\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const int threads = args["threads"].as<int>(), batch = args["batch"].as<int>();
  const double min_sec = args["min-sec"].as<double>();
  set_num_threads(threads);
  std::printf("%s | int8 kernels: %s\n", bench::env_line().c_str(),
              quant::kernels::isa_name(quant::kernels::kernels().isa));

  data::Dataset ds = data::load_mnist(args["data-dir"].as<std::string>(), data::Split::train);
  auto images = [&](int64_t first, int64_t n) {
    Tensor x = Tensor::empty({n, 1, 28, 28});
    const uint8_t* src = ds.images.data<uint8_t>() + first * 784;
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = (src[i] / 255.0f - 0.1307f) / 0.3081f;
    return x;
  };
  Generator g(0);
  auto model = nn::make_model("mnist_cnn", {}, g);
  {
    autograd::NoGradGuard ng;
    model->train();
    for (int b = 0; b < 4; ++b) (*model)(Variable(images(b * 64, 64)));  // BN running statistics
  }
  model->eval();
  const Tensor x1 = images(1000, 1), xb = images(2000, batch);
  autograd::NoGradGuard ng;
  const bool int8_only = args.count("int8-only") > 0;
  const double fp32_lat = int8_only ? 0 : bench::median_seconds([&] { (*model)(Variable(x1)); }, 200, min_sec);
  const double fp32_tp = int8_only ? 0 : batch / bench::median_seconds([&] { (*model)(Variable(xb)); }, 20, min_sec);

  quant::prepare(*model);
  for (int b = 0; b < 4; ++b) (*model)(Variable(images(256 + b * 64, 64)));
  quant::finish_calibration(*model);
  const quant::runtime::Model int8 = quant::convert(*model, {1, 28, 28});
  const double int8_lat = bench::median_seconds([&] { int8.run(x1); }, 200, min_sec);
  const double int8_tp = batch / bench::median_seconds([&] { int8.run(xb); }, 20, min_sec);
  std::printf("qforge fp32: batch 1 %.3f ms, batch %d %.0f images/s\n", fp32_lat * 1e3, batch, fp32_tp);
  std::printf("qforge int8: batch 1 %.3f ms, batch %d %.0f images/s\n", int8_lat * 1e3, batch, int8_tp);
  std::printf("qforge int8 vs its own fp32: %.2fx throughput, %.2fx latency\n", int8_tp / fp32_tp,
              fp32_lat / int8_lat);
  if (args.count("no-reference") || int8_only) return 0;

  for (const char* variant : {"fp32", "int8"}) {
    const std::string cmd = args["python"].as<std::string>() + " " + bench::reference_kit() +
                            "/pytorch/reference.py infer --model mnist_cnn --variant " + variant + " --threads " +
                            std::to_string(threads) + " --throughput-batch " + std::to_string(batch) + " 2>&1";
    const auto rows = bench::run_reference(cmd);
    double lat = 0, tp = 0;
    for (const auto& r : rows) {
      if (bench::json_field(r, "batch") == "1") lat = std::stod(bench::json_field(r, "latency_ms"));
      else tp = std::stod(bench::json_field(r, "images_per_s"));
    }
    if (lat == 0 || tp == 0) {
      std::printf("# no reference %s result (is python3-torch installed? scripts/install-deps.sh --bench)\n", variant);
      return 0;
    }
    const bool is_int8 = std::strcmp(variant, "int8") == 0;
    const double ours_lat = (is_int8 ? int8_lat : fp32_lat) * 1e3, ours_tp = is_int8 ? int8_tp : fp32_tp;
    std::printf("pytorch %s: batch 1 %.3f ms, batch %d %.0f images/s\n", variant, lat, batch, tp);
    std::printf("ratio qforge/pytorch %s: throughput %.2fx%s, latency %.3f vs %.3f ms%s\n", variant, ours_tp / tp,
                is_int8 ? " (goal >= 1.3x)" : "", ours_lat, lat, is_int8 ? " (goal <= 0.10 ms)" : "");
    std::printf("RESULT {\"bench\":\"infer\",\"model\":\"mnist_cnn\",\"variant\":\"%s\",\"threads\":%d,"
                "\"qforge_latency_ms\":%.4f,\"pytorch_latency_ms\":%.4f,\"qforge_images_per_s\":%.1f,"
                "\"pytorch_images_per_s\":%.1f}\n",
                variant, threads, ours_lat, lat, ours_tp, tp);
  }
  return 0;
}
