// Fake-quant speed: the fused quantize-dequantize forward plus the STE
// backward (autograd::fake_quantize), per tensor on mnist_cnn's activations
// and per channel on a weight, against PyTorch's fake_quantize_per_*_affine
// in the same run. Also prints a memory-bound yardstick: one copy of the same
// tensor (read + write), so the fused pass can be read as "so many copies".
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <map>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "bench/bench_util.h"

using namespace qforge;
using namespace qforge::autograd;

namespace {

struct Case {
  const char* name;
  int64_t n, c, h, w;
  bool per_channel;  // per channel along axis 0 (weights), else per tensor
};

}  // namespace

static int run_main(int argc, char** argv) {
  cxxopts::Options options("fake_quant_bench", "Fake-quant forward+backward against PyTorch (same run)");
  options.add_options()("threads", "threads", cxxopts::value<int>()->default_value("2"))(
      "min-sec", "seconds per case", cxxopts::value<double>()->default_value("1.0"))(
      "no-reference", "skip PyTorch")(
      "python", "interpreter with torch", cxxopts::value<std::string>()->default_value("/usr/bin/python3"))(
      "h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fake_quant_bench: %s\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const int threads = args["threads"].as<int>();
  const double min_sec = args["min-sec"].as<double>();
  set_num_threads(threads);
  std::printf("%s\n", bench::env_line().c_str());

  const std::vector<Case> cases = {
      {"act_conv1_64x32x26x26", 64, 32, 26, 26, false},
      {"act_conv2_64x64x24x24", 64, 64, 24, 24, false},
      {"act_conv3_64x64x10x10", 64, 64, 10, 10, false},
      {"weight_fc_10x6400_pc", 10, 6400, 1, 1, true},
      {"weight_conv_64x64x3x3_pc", 64, 64, 3, 3, true},
  };
  std::printf("%-26s %10s %12s %10s\n", "case", "ms", "Gelem/s", "copies");
  std::map<std::string, double> ours;
  std::string spec;
  for (const auto& c : cases) {
    Generator g(0);
    Tensor xv = Tensor::empty({c.n, c.c, c.h, c.w});
    normal_(xv, 0, 1, g);
    Tensor gy = Tensor::empty(xv.shape());
    normal_(gy, 0, 1, g);
    const int64_t C = c.per_channel ? c.n : 1;
    Tensor scale = Tensor::full({C}, 0.02);
    Tensor zp = Tensor::full({C}, c.per_channel ? 0 : 128, DType::i32);
    const int64_t qmin = c.per_channel ? -128 : 0, qmax = c.per_channel ? 127 : 255;
    Variable x(xv, true);
    const double sec = bench::median_seconds(
        [&] {
          x.zero_grad();
          Variable y = fake_quantize(x, scale, zp, qmin, qmax, c.per_channel ? 0 : -1);
          y.backward(gy);
        },
        10, min_sec);
    Tensor dst = Tensor::empty(xv.shape());
    const double copy = bench::median_seconds(
        [&] { std::memcpy(dst.raw(), xv.raw(), xv.nbytes()); }, 10, min_sec / 4);
    const double gel = xv.numel() / sec / 1e9;
    ours[c.name] = gel;
    std::printf("%-26s %10.3f %12.3f %10.1f\n", c.name, sec * 1e3, gel, sec / copy);
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s:%ld,%ld,%ld,%ld,%d", spec.empty() ? "" : ";", c.name, long(c.n), long(c.c),
                  long(c.h), long(c.w), c.per_channel ? 1 : 0);
    spec += buf;
  }
  if (args.count("no-reference")) return 0;
  const std::string cmd = args["python"].as<std::string>() + " " + std::string(QFORGE_SOURCE_DIR) +
                          "/bench/pytorch_fake_quant.py --kit " + bench::reference_kit() + "/pytorch --threads " +
                          std::to_string(threads) + " --min-sec " + std::to_string(min_sec) + " --cases '" + spec +
                          "' 2>&1";
  std::printf("\n# PyTorch reference (fake_quantize_per_*_affine, forward + backward), same cases and threads:\n");
  auto rows = bench::run_reference(cmd);
  if (rows.empty()) {
    std::printf("# no reference results (is python3-torch installed? scripts/install-deps.sh --bench)\n");
    return 1;
  }
  std::printf("\n%-26s %14s %14s %8s\n", "case", "qforge Gel/s", "torch Gel/s", "ratio");
  for (const auto& r : rows) {
    const std::string name = bench::json_field(r, "name");
    const double theirs = std::stod(bench::json_field(r, "gelem_per_s"));
    std::printf("%-26s %14.3f %14.3f %7.2fx\n", name.c_str(), ours[name], theirs, ours[name] / theirs);
  }
  return 0;
}

int main(int argc, char** argv) { return qforge::bench::guarded_main("fake_quant_bench", run_main, argc, argv); }
