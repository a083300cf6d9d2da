// LSTM(128 -> 256, 1 layer), sequence 50, batch 1: qforge FP32 (nn::LSTM,
// eval), qforge dynamic int8 (runtime::dynamic_lstm, PyTorch's
// quantize_dynamic scheme) and qforge static int8 (runtime::qlstm, the
// QAT-matched integer cell, timed from float input to float output), against
// `reference.py infer --model lstm` (PyTorch FP32 and dynamic int8) in the
// same run. Weights are random (U(-1/16, 1/16) as PyTorch); the static
// model's activation ranges come from one float run on random input.
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>
#include <string>

#include "autograd/ops.h"
#include "bench/bench_util.h"
#include "nn/rnn.h"
#include "quant/kernels/kernels.h"
#include "quant/runtime/lstm.h"

using namespace qforge;
using autograd::Variable;
namespace rt = qforge::quant::runtime;

namespace {

/// Affine u8 qparams covering [lo, hi] (widened to include 0).
rt::ActQParams range_q(float lo, float hi) { return rt::dynamic_qparams(lo, hi); }

rt::WeightQParams rows_q(const Tensor& w) {
  rt::WeightQParams q;
  const int64_t R = w.size(0), K = w.size(1);
  for (int64_t r = 0; r < R; ++r) {
    float m = 0;
    for (int64_t k = 0; k < K; ++k) m = std::max(m, std::fabs(w.data<float>()[r * K + k]));
    q.scale.push_back(m > 0 ? m / 127 : 1);
  }
  return q;
}

}  // namespace

static int run_main(int argc, char** argv) {
  cxxopts::Options options("lstm_bench", "LSTM(128->256) seq 50 batch 1, FP32 and int8, against PyTorch (same run)");
  options.add_options()("threads", "threads", cxxopts::value<int>()->default_value("2"))(
      "min-sec", "seconds per measurement", cxxopts::value<double>()->default_value("1.0"))(
      "no-reference", "skip PyTorch")(
      "python", "interpreter with torch", cxxopts::value<std::string>()->default_value("/usr/bin/python3"))(
      "h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lstm_bench: %s\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  const int threads = args["threads"].as<int>();
  const double min_sec = args["min-sec"].as<double>();
  set_num_threads(threads);
  std::printf("%s | int8 kernels: %s\n", bench::env_line().c_str(), quant::kernels::isa_name(quant::kernels::kernels().isa));
  constexpr int64_t T = 50, I = 128, H = 256;
  Generator g(0);
  nn::LSTMSpec spec;
  spec.input_size = I;
  spec.hidden_size = H;
  nn::LSTM lstm(spec, g);
  lstm.eval();
  Tensor x = Tensor::empty({T, 1, I});
  normal_(x, 0, 1, g);
  autograd::NoGradGuard ng;
  const Tensor ref = lstm.forward(Variable(x)).value();  // [T, 1, H]

  const auto p = lstm.layer_params(0);
  // Dynamic int8.
  const std::vector<rt::DynamicLstmLayer> dyn = {
      rt::make_dynamic_lstm_layer(p[0].value(), p[1].value(), p[2].value(), p[3].value())};
  const Tensor xb = x.reshape({1, T, I});  // batch 1: [T, 1, I] is [1, T, I] in memory
  const Tensor yd = rt::dynamic_lstm(dyn, xb);
  // Static int8: ranges from the float run (gates computed here in double).
  float gl[4] = {0, 0, 0, 0}, gh[4] = {0, 0, 0, 0}, cmax = 0;
  {
    std::vector<double> h(H, 0), c(H, 0), gates(4 * H);
    const float *wi = p[0].value().data<float>(), *wh = p[1].value().data<float>();
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t r = 0; r < 4 * H; ++r) {
        double s = p[2].value().data<float>()[r] + p[3].value().data<float>()[r];
        for (int64_t k = 0; k < I; ++k) s += wi[r * I + k] * x.data<float>()[t * I + k];
        for (int64_t k = 0; k < H; ++k) s += wh[r * H + k] * h[k];
        gates[r] = s;
        gl[r / H] = std::min(gl[r / H], static_cast<float>(s));
        gh[r / H] = std::max(gh[r / H], static_cast<float>(s));
      }
      for (int64_t j = 0; j < H; ++j) {
        auto sg = [](double v) { return 1 / (1 + std::exp(-v)); };
        c[j] = sg(gates[H + j]) * c[j] + sg(gates[j]) * std::tanh(gates[2 * H + j]);
        h[j] = sg(gates[3 * H + j]) * std::tanh(c[j]);
        cmax = std::max(cmax, static_cast<float>(std::fabs(c[j])));
      }
    }
  }
  float xl = 0, xh = 0, yl = 0, yh = 0;
  for (int64_t i = 0; i < x.numel(); ++i) xl = std::min(xl, x.data<float>()[i]), xh = std::max(xh, x.data<float>()[i]);
  for (int64_t i = 0; i < ref.numel(); ++i) yl = std::min(yl, ref.data<float>()[i]), yh = std::max(yh, ref.data<float>()[i]);
  const rt::ActQParams qx = range_q(xl, xh), qh = range_q(yl, yh);
  const std::vector<rt::QLstmLayer> stat = {rt::make_qlstm_layer(
      p[0].value(), p[1].value(), p[2].value(), p[3].value(), rows_q(p[0].value()), rows_q(p[1].value()), qx, qh,
      {range_q(gl[0], gh[0]), range_q(gl[1], gh[1]), range_q(gl[2], gh[2]), range_q(gl[3], gh[3])},
      rt::lstm_cell_frac_bits(cmax))};
  auto run_static = [&] { return rt::dequantize(rt::qlstm(stat, rt::quantize(xb, qx)), qh); };
  const Tensor ys = run_static();
  double err_d = 0, err_s = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    err_d = std::max(err_d, static_cast<double>(std::fabs(yd.data<float>()[i] - ref.data<float>()[i])));
    err_s = std::max(err_s, static_cast<double>(std::fabs(ys.data<float>()[i] - ref.data<float>()[i])));
  }
  std::printf("max |int8 - fp32| over the %lld outputs: dynamic %.4f, static %.4f (static hidden step %.4f)\n",
              static_cast<long long>(ref.numel()), err_d, err_s, qh.scale);

  const bench::Timing tf = bench::time_calls([&] { lstm.forward(Variable(x)); }, 50, min_sec);
  const bench::Timing td = bench::time_calls([&] { rt::dynamic_lstm(dyn, xb); }, 50, min_sec);
  const bench::Timing ts = bench::time_calls(run_static, 50, min_sec);
  std::printf("qforge fp32:         median %.3f ms, best %.3f ms\n", tf.median * 1e3, tf.best * 1e3);
  std::printf("qforge int8 dynamic: median %.3f ms, best %.3f ms\n", td.median * 1e3, td.best * 1e3);
  std::printf("qforge int8 static:  median %.3f ms, best %.3f ms\n", ts.median * 1e3, ts.best * 1e3);
  if (args.count("no-reference")) return 0;
  for (const char* variant : {"fp32", "int8"}) {
    const std::string cmd = args["python"].as<std::string>() + " " + bench::reference_kit() +
                            "/pytorch/reference.py infer --model lstm --variant " + variant + " --threads " +
                            std::to_string(threads) + " 2>&1";
    double lat = 0;
    for (const auto& r : bench::run_reference(cmd)) lat = std::stod(bench::json_field(r, "latency_ms"));
    if (lat == 0) {
      std::printf("# no reference %s result (is python3-torch installed? scripts/install-deps.sh --bench)\n", variant);
      return 0;
    }
    const bool i8 = variant[0] == 'i';
    const double ours = (i8 ? td.median : tf.median) * 1e3;
    std::printf("ratio pytorch/qforge %s latency: %.2fx (%.3f vs %.3f ms)%s\n", variant, lat / ours, lat, ours,
                i8 ? "; goal: qforge int8 <= 1.0 ms" : "");
    if (i8)
      std::printf("ratio pytorch/qforge int8, qforge static: %.2fx (%.3f vs %.3f ms)\n", lat / (ts.median * 1e3), lat,
                  ts.median * 1e3);
    std::printf("RESULT {\"bench\":\"lstm\",\"variant\":\"%s\",\"threads\":%d,\"qforge_ms\":%.4f,"
                "\"qforge_static_ms\":%.4f,\"pytorch_ms\":%.4f}\n",
                variant, threads, ours, ts.median * 1e3, lat);
  }
  return 0;
}

int main(int argc, char** argv) { return qforge::bench::guarded_main("lstm_bench", run_main, argc, argv); }
