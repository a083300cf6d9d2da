// conv2d forward + backward throughput on the real shapes of mnist_cnn and
// ResNet-20, against PyTorch (oneDNN) on the same shapes and threads,
// measured in the same run.
#include <cstdio>
#include <cxxopts.hpp>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "bench/bench_util.h"

using namespace qforge;
using namespace qforge::autograd;

namespace {

struct Shape4 {
  const char* name;
  int64_t n, c, h, w, oc, k, stride, pad;
  bool need_dx;  // false for a network's first layer
};

const std::vector<Shape4> kShapes = {
    {"mnist_conv1_1x32_28", 64, 1, 28, 28, 32, 3, 1, 0, false},
    {"mnist_conv2_32x64_26", 64, 32, 26, 26, 64, 3, 1, 0, true},
    {"mnist_conv3_64x64_12", 64, 64, 12, 12, 64, 3, 1, 0, true},
    {"r20_stem_3x16_32", 128, 3, 32, 32, 16, 3, 1, 1, false},
    {"r20_16x16_32", 128, 16, 32, 32, 16, 3, 1, 1, true},
    {"r20_32x32_16", 128, 32, 16, 16, 32, 3, 1, 1, true},
    {"r20_64x64_8", 128, 64, 8, 8, 64, 3, 1, 1, true},
};

}  // namespace

static int run_main(int argc, char** argv) {
  cxxopts::Options options("conv_bench", "conv2d forward+backward GFLOP/s against PyTorch");
  options.add_options()("threads", "threads for qforge and PyTorch", cxxopts::value<int>()->default_value("2"))(
      "min-sec", "seconds per shape", cxxopts::value<double>()->default_value("1.0"))(
      "rounds", "rounds of qforge then PyTorch over all shapes; each side keeps its best per shape",
      cxxopts::value<int>()->default_value("3"))("no-reference", "skip the PyTorch run")(
      "python", "interpreter with torch", cxxopts::value<std::string>()->default_value("/usr/bin/python3"))(
      "h,help", "show help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const int threads = args["threads"].as<int>();
  const double min_sec = args["min-sec"].as<double>();
  const int rounds = std::max(1, args["rounds"].as<int>());
  const bool with_ref = !args.count("no-reference");
  set_num_threads(threads);
  std::printf("%s\n", bench::env_line().c_str());

  // The shapes' specs for the PyTorch script.
  std::string spec;
  for (const Shape4& s : kShapes) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s%s:%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%d", spec.empty() ? "" : ";", s.name,
                  long(s.n), long(s.c), long(s.h), long(s.w), long(s.oc), long(s.k), long(s.stride), long(s.pad),
                  s.need_dx ? 1 : 0);
    spec += buf;
  }
  const std::string cmd = args["python"].as<std::string>() + " " + std::string(QFORGE_SOURCE_DIR) +
                          "/bench/pytorch_conv.py --kit " + bench::reference_kit() + "/pytorch --threads " +
                          std::to_string(threads) + " --min-sec " + std::to_string(min_sec) + " --shapes '" + spec +
                          "' 2>&1";

  // The machine is shared and its speed drifts over seconds: qforge and
  // PyTorch alternate by rounds, and each keeps its best median per shape.
  std::map<std::string, double> ours, theirs;
  int ref_rounds = 0;  // PyTorch rounds that completed
  Generator gen(0);
  for (int round = 0; round < rounds; ++round) {
    std::printf("\n# round %d of %d: qforge\n%-24s %10s %10s\n", round + 1, rounds, "shape", "ms", "GFLOP/s");
    for (const Shape4& s : kShapes) {
      Variable x(Tensor::empty({s.n, s.c, s.h, s.w}), s.need_dx);
      Variable w(Tensor::empty({s.oc, s.c, s.k, s.k}), true);
      normal_(x.value(), 0, 1, gen);
      kaiming_uniform_(w.value(), 2.23606797749979, gen);
      Conv2dOptions o;
      o.stride = {s.stride, s.stride};
      o.padding = {s.pad, s.pad};
      const int64_t oh = conv_out_size(s.h, s.k, s.stride, s.pad, 1), ow = conv_out_size(s.w, s.k, s.stride, s.pad, 1);
      Tensor gy = Tensor::empty({s.n, s.oc, oh, ow});
      normal_(gy, 0, 1, gen);
      const double sec = bench::median_seconds(
          [&] {
            x.zero_grad();
            w.zero_grad();
            conv2d(x, w, Variable(), o).backward(gy);
          },
          10, min_sec);
      const double macs = double(s.n) * s.oc * oh * ow * s.c * s.k * s.k;
      const double gflops = 2 * macs * (s.need_dx ? 3 : 2) / sec / 1e9;
      ours[s.name] = std::max(ours[s.name], gflops);
      std::printf("%-24s %10.3f %10.1f\n", s.name, sec * 1e3, gflops);
      std::printf("RESULT {\"bench\":\"conv_fwd_bwd\",\"impl\":\"qforge\",\"name\":\"%s\",\"ms\":%.4f,\"gflops\":%.2f,"
                  "\"threads\":%d,\"round\":%d}\n",
                  s.name, sec * 1e3, gflops, threads, round + 1);
    }
    if (!with_ref) continue;
    std::printf("\n# round %d of %d: PyTorch, same shapes and threads\n", round + 1, rounds);
    auto rows = bench::run_reference(cmd);
    if (rows.empty()) {
      std::printf("# no reference results (is python3-torch installed? scripts/install-deps.sh --bench)\n");
      if (theirs.empty()) return 1;
      break;  // report the rounds that ran
    }
    for (const auto& r : rows) {
      const std::string name = bench::json_field(r, "name");
      theirs[name] = std::max(theirs[name], std::stod(bench::json_field(r, "gflops")));
    }
    ++ref_rounds;
  }
  if (!with_ref) return 0;
  std::printf("\n# best of %d qforge and %d PyTorch rounds\n%-24s %12s %12s %8s\n", rounds, ref_rounds, "shape",
              "qforge GF/s", "torch GF/s", "ratio");
  double log_sum = 0;
  int count = 0;
  for (const Shape4& s : kShapes) {
    const double mine = ours[s.name], ref = theirs[s.name];
    if (ref <= 0) continue;
    std::printf("%-24s %12.1f %12.1f %7.2fx\n", s.name, mine, ref, mine / ref);
    log_sum += std::log(mine / ref);
    ++count;
  }
  std::printf("%-24s %12s %12s %7.2fx\n", "geometric mean", "", "", std::exp(log_sum / std::max(count, 1)));
  return 0;
}

int main(int argc, char** argv) { return qforge::bench::guarded_main("conv_bench", run_main, argc, argv); }
