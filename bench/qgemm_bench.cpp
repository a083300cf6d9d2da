// int8 GEMM throughput: qforge's requantizing u8 x s8 GEMM at every kernel
// level this CPU runs, N x N x N for N = 256 and 1024 on 1 and 2 threads,
// against oneDNN's u8s8s32 GEMM and the measured VNNI peak from
// ../shared/bench/onednn/run.sh in the same run.
//
// qforge's GEMM does more than oneDNN's here: it also requantizes every
// output to uint8 (bias, 64-bit fixed-point multiply, rounding, clamp), the
// work a real layer needs. B (the weights) is packed once, as layers do at
// load time; A is read as is. Rows are split across threads as the runtime's
// qlinear does. The AMX level (tile instructions, where the CPU has them) is
// not bound by the VNNI peak; its "% peak" column is still relative to it,
// the yardstick the issue sets.
#include <cstdio>
#include <cxxopts.hpp>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "quant/kernels/kernels.h"

using namespace qforge;
namespace qk = qforge::quant::kernels;

namespace {

struct Problem {
  int64_t m, n, k;
  std::vector<uint8_t> a, c;
  std::vector<int8_t> b;
  std::vector<int32_t> bias;
  std::vector<quant::QuantMultiplier> requant;
};

Problem make_problem(int64_t m, int64_t n, int64_t k) {
  Problem p;
  p.m = m, p.n = n, p.k = k;
  Generator g(static_cast<uint64_t>(m * 1000003 + n * 1009 + k));
  p.a.resize(m * k);
  p.b.resize(k * n);
  p.c.resize(m * n);
  for (auto& v : p.a) v = static_cast<uint8_t>(g.next_u64() & 0xff);
  for (auto& v : p.b) v = static_cast<int8_t>(g.next_u64() & 0xff);
  for (int64_t i = 0; i < n; ++i) {
    p.bias.push_back(static_cast<int32_t>(g.next_u64() % 2001) - 1000);
    p.requant.push_back(quant::requant_multiplier(0.02f, 0.001f + 0.0001f * static_cast<float>(i % 7), 0.5f));
  }
  return p;
}

/// One GEMM of the whole problem: rows split into one block per thread
/// (rounded to the 4-row tile).
void run_gemm(Problem& pr, const qk::KernelTable& t, const int32_t* packed) {
  const int64_t M = pr.m, threads = num_threads();
  const int64_t rows = ((M + threads - 1) / threads + 3) / 4 * 4;
  parallel_for(0, (M + rows - 1) / rows, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * rows, m1 = std::min(M, m0 + rows);
      qk::QGemmParams p;
      p.M = m1 - m0;
      p.N = pr.n;
      p.K = pr.k;
      p.a = pr.a.data() + m0 * pr.k;
      p.lda = pr.k;
      p.a_zero_point = 3;
      p.b = pr.b.data();
      p.ldb = pr.n;
      p.bias = pr.bias.data();
      p.requant = pr.requant.data();
      p.out_zero_point = 7;
      p.c = pr.c.data() + m0 * pr.n;
      p.ldc = pr.n;
      p.b_packed = packed;
      t.qgemm(p);
    }
  });
}

}  // namespace

static int run_main(int argc, char** argv) {
  cxxopts::Options options("qgemm_bench", "int8 GEMM GOP/s against oneDNN u8s8s32 (same run)");
  options.add_options()("sizes", "square sizes", cxxopts::value<std::vector<int>>()->default_value("256,1024"))(
      "threads", "thread counts", cxxopts::value<std::vector<int>>()->default_value("1,2"))(
      "min-sec", "seconds per measurement", cxxopts::value<double>()->default_value("1.0"))(
      "shapes",
      "instead of the square sizes: MxNxK problems (e.g. the convs of ResNet-20, 1024x16x144), qforge only, "
      "at each thread count",
      cxxopts::value<std::vector<std::string>>())(
      "no-reference", "skip oneDNN")("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qgemm_bench: %s\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const auto sizes = args["sizes"].as<std::vector<int>>();
  const auto thread_counts = args["threads"].as<std::vector<int>>();
  const double min_sec = args["min-sec"].as<double>();
  for (int s : sizes)
    if (s < 1 || s > 8192) {
      std::fprintf(stderr, "qgemm_bench: size %d is out of range [1, 8192]\n", s);
      return 2;
    }
  for (int t : thread_counts)
    if (t < 1 || t > 256) {
      std::fprintf(stderr, "qgemm_bench: thread count %d is out of range\n", t);
      return 2;
    }
  std::printf("%s\n", bench::env_line().c_str());

  std::vector<qk::KernelTable> tables;
  for (qk::Isa isa : qk::kAllIsas)
    if (qk::cpu_has(isa)) tables.push_back(qk::kernels_for(isa));

  if (args.count("shapes")) {
    std::printf("%-12s %3s %18s %10s %10s\n", "qforge", "thr", "MxNxK", "GOP/s med", "GOP/s best");
    for (const std::string& shape : args["shapes"].as<std::vector<std::string>>()) {
      long long m = 0, n = 0, k = 0;
      char tail = 0;
      if (std::sscanf(shape.c_str(), "%lldx%lldx%lld%c", &m, &n, &k, &tail) != 3 || m < 1 || n < 1 || k < 1 ||
          m > 65536 || n > 65536 || k > 65536)
        throw std::runtime_error("--shapes: '" + shape + "' is not MxNxK with each in [1, 65536]");
      Problem pr = make_problem(m, n, k);
      for (int threads : thread_counts) {
        set_num_threads(threads);
        for (const auto& t : tables) {
          if (t.isa == qk::Isa::ref) continue;
          std::vector<int32_t> packed;
          if (t.qgemm_pack) packed = t.qgemm_pack(pr.b.data(), n, n, k);
          const bench::Timing tm =
              bench::time_calls([&] { run_gemm(pr, t, packed.empty() ? nullptr : packed.data()); }, 10, min_sec, 3);
          const double ops = 2.0 * m * n * k;
          std::printf("%-12s %3d %18s %10.1f %10.1f\n", qk::isa_name(t.isa), threads, shape.c_str(),
                      ops / tm.median / 1e9, ops / tm.best / 1e9);
        }
      }
    }
    return 0;
  }

  // ours[(threads, n)][isa] = GOP/s
  std::map<std::pair<int, int>, std::map<std::string, double>> ours;
  std::printf("%-12s %3s %5s %10s %10s\n", "qforge", "thr", "n", "GOP/s med", "GOP/s best");
  for (int threads : thread_counts) {
    set_num_threads(threads);
    for (int n : sizes) {
      Problem pr = make_problem(n, n, n);
      for (const auto& t : tables) {
        if (t.isa == qk::Isa::ref && n > 256) continue;  // minutes per call at 1024
        std::vector<int32_t> packed;
        if (t.qgemm_pack) packed = t.qgemm_pack(pr.b.data(), n, n, n);
        const bench::Timing tm = bench::time_calls([&] { run_gemm(pr, t, packed.empty() ? nullptr : packed.data()); },
                                                 t.isa == qk::Isa::ref ? 3 : 10, t.isa == qk::Isa::ref ? 0.2 : min_sec,
                                                 t.isa == qk::Isa::ref ? 1 : 3);
        const double gops = 2.0 * n * n * n / tm.median / 1e9, best = 2.0 * n * n * n / tm.best / 1e9;
        ours[{threads, n}][qk::isa_name(t.isa)] = gops;
        std::printf("%-12s %3d %5d %10.1f %10.1f\n", qk::isa_name(t.isa), threads, n, gops, best);
        std::printf("RESULT {\"bench\":\"qgemm\",\"lib\":\"qforge\",\"kernels\":\"%s\",\"threads\":%d,\"n\":%d,"
                    "\"gops\":%.1f,\"gops_best\":%.1f}\n",
                    qk::isa_name(t.isa), threads, n, gops, best);
      }
    }
  }
  std::fflush(stdout);
  if (args.count("no-reference")) return 0;

  std::string sz, th;
  for (int s : sizes) sz += (sz.empty() ? "" : " ") + std::to_string(s);
  for (int t : thread_counts) th += (th.empty() ? "" : " ") + std::to_string(t);
  std::printf("\n## reference: oneDNN (bash %s/onednn/run.sh)\n", bench::reference_kit().c_str());
  std::fflush(stdout);
  // The kit's peak probe is AVX-512 code, and run.sh stops when it does not
  // build. Without AVX-512 VNNI there is no VNNI peak anyway ("% peak" reads
  // n/a): the kit's oneDNN GEMM program is then built and run directly, as
  // run.sh would run it.
  const bool vnni = __builtin_cpu_supports("avx512vnni");
  std::string cmd = "bash " + bench::reference_kit() + "/onednn/run.sh --sizes \"" + sz + "\" --threads \"" + th +
                    "\" 2>&1";
  if (!vnni) {
    std::printf("# this CPU lacks AVX-512 VNNI: no VNNI peak; oneDNN's GEMM program run without run.sh\n");
    const std::string bin = "${TMPDIR:-/tmp}/qforge-ref-onednn-novnni";
    cmd = "mkdir -p " + bin + " && g++ -O2 -march=native -fopenmp " + bench::reference_kit() +
          "/onednn/gemm_dnnl.cpp -ldnnl -o " + bin + "/gemm_dnnl 2>&1 && for T in " + th +
          "; do OMP_NUM_THREADS=$T BENCH_CLOCK_GHZ=0 " + bin + "/gemm_dnnl $T " + sz + " 2>&1; done";
  }
  const auto results = bench::run_reference(cmd);
  std::map<int, double> peak;
  std::map<std::pair<int, int>, double> dnnl;  // best u8s8s32 variant per (threads, n)
  for (const auto& r : results) {
    if (bench::json_field(r, "bench") == "peak")
      peak[std::stoi(bench::json_field(r, "threads"))] = std::stod(bench::json_field(r, "int8_peak_gops"));
    if (bench::json_field(r, "bench") == "gemm" && bench::json_field(r, "dtype").find("u8") != std::string::npos) {
      const std::pair<int, int> k{std::stoi(bench::json_field(r, "threads")), std::stoi(bench::json_field(r, "n"))};
      dnnl[k] = std::max(dnnl[k], std::stod(bench::json_field(r, "gops")));
    }
  }
  std::printf("\n## qforge against oneDNN (best u8s8s32 variant) and the VNNI peak\n");
  std::printf("%3s %5s %-12s %10s %10s %10s %10s\n", "thr", "n", "kernels", "GOP/s", "oneDNN", "ratio", "% peak");
  for (const auto& [k, by_isa] : ours)
    for (const auto& [isa, gops] : by_isa) {
      const double d = dnnl.count(k) ? dnnl[k] : 0, pk = peak.count(k.first) ? peak[k.first] : 0;
      char pct[16] = "n/a";
      if (pk > 0) std::snprintf(pct, sizeof pct, "%.1f", 100 * gops / pk);
      std::printf("%3d %5d %-12s %10.1f %10.1f %10.2f %10s\n", k.first, k.second, isa.c_str(), gops, d,
                  d > 0 ? gops / d : 0.0, pct);
    }
  return 0;
}

int main(int argc, char** argv) { return qforge::bench::guarded_main("qgemm_bench", run_main, argc, argv); }
