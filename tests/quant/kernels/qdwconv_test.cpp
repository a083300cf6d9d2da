// The depthwise kernels: the reference against an independent computation
// on a small worked case, and every depthwise kernel of kernel_list.inc
// against the reference on random geometries (channels 1 to 70 around the
// vector widths, kernels 1 to 5, strides, padding, dilation, row ranges)
// with random zero points, multipliers, biases and clamps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {
namespace {

struct DwProblem {
  std::vector<uint8_t> x;
  std::vector<int8_t> w;
  std::vector<int32_t> bias;
  std::vector<QuantMultiplier> requant;
  QDwParams p;
};

DwProblem make_dw(std::mt19937& rng) {
  const std::vector<int64_t> channels = {1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 70};
  DwProblem d;
  QDwParams& p = d.p;
  p.C = channels[rng() % channels.size()];
  p.KH = 1 + rng() % 5;
  p.KW = 1 + rng() % 5;
  p.stride_h = 1 + rng() % 2;
  p.stride_w = 1 + rng() % 2;
  p.dil_h = 1 + rng() % 2;
  p.dil_w = 1 + rng() % 2;
  p.pad_h = rng() % 3;
  p.pad_w = rng() % 3;
  p.H = (p.KH - 1) * p.dil_h + 1 + rng() % 7;
  p.W = (p.KW - 1) * p.dil_w + 1 + rng() % 7;
  p.OH = (p.H + 2 * p.pad_h - (p.KH - 1) * p.dil_h - 1) / p.stride_h + 1;
  p.OW = (p.W + 2 * p.pad_w - (p.KW - 1) * p.dil_w - 1) / p.stride_w + 1;
  p.oh_begin = rng() % 3 == 0 ? static_cast<int64_t>(rng() % p.OH) : 0;
  p.oh_end = p.OH;
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127), bias(-30000, 30000);
  d.x.resize(static_cast<size_t>(p.H * p.W * p.C));
  d.w.resize(static_cast<size_t>(p.KH * p.KW * p.C));
  for (auto& v : d.x) v = static_cast<uint8_t>(u8(rng));
  for (auto& v : d.w) v = static_cast<int8_t>(s8(rng));
  std::uniform_real_distribution<double> e(-12, -4);
  for (int64_t c = 0; c < p.C; ++c) {
    d.bias.push_back(bias(rng));
    // Every third channel's multiplier is a power of two: exact ties, rounded to even.
    d.requant.push_back(quantize_multiplier(std::exp2(c % 3 == 0 ? std::round(e(rng)) : e(rng))));
  }
  p.x = d.x.data();
  p.w = d.w.data();
  p.bias = rng() % 4 ? d.bias.data() : nullptr;
  p.requant = d.requant.data();
  p.x_zero_point = u8(rng);
  p.out_zero_point = u8(rng);
  p.out_lo = std::uniform_int_distribution<int>(0, 40)(rng);
  p.out_hi = std::uniform_int_distribution<int>(200, 255)(rng);
  return d;
}

std::vector<uint8_t> run_dw(QDwFn fn, const QDwParams& p0) {
  QDwParams p = p0;
  std::vector<uint8_t> y(static_cast<size_t>(p.OH * p.OW * p.C), 0xCD);  // rows outside the range stay untouched
  p.y = y.data();
  check(p);
  fn(p);
  return y;
}

TEST(QDwConv, ReferenceMatchesAWorkedCase) {
  // 3x3 input, 2 channels, 3x3 window, padding 1: the centre output sums all
  // nine taps, a corner output four.
  std::vector<uint8_t> x(18);
  for (int i = 0; i < 18; ++i) x[i] = static_cast<uint8_t>(10 + i);
  std::vector<int8_t> w(18, 1);
  const std::vector<QuantMultiplier> rq = {quantize_multiplier(0.5), quantize_multiplier(0.25)};
  QDwParams p;
  p.H = p.W = 3;
  p.C = 2;
  p.KH = p.KW = 3;
  p.pad_h = p.pad_w = 1;
  p.OH = p.OW = 3;
  p.oh_end = 3;
  p.x = x.data();
  p.x_zero_point = 10;
  p.w = w.data();
  p.requant = rq.data();
  p.out_zero_point = 0;
  const auto y = run_dw(&qu8s8_dwconv_requant__ref, p);
  // Channel 0 codes minus 10: 0, 2, 4, ..., 16. Centre: 72 * 0.5 = 36.
  EXPECT_EQ(y[(1 * 3 + 1) * 2 + 0], 36);
  // Channel 1: 1, 3, ..., 17; centre 81 * 0.25 = 20.25 -> 20. Corner (0, 0):
  // taps (0,0), (0,1), (1,0), (1,1) = 1 + 3 + 7 + 9 = 20 -> 5.
  EXPECT_EQ(y[(1 * 3 + 1) * 2 + 1], 20);
  EXPECT_EQ(y[1], 5);
}

TEST(QDwConv, EveryKernelEqualsTheReference) {
  int kernels_run = 0;
  auto check_dw = [&](auto fn, Isa isa, const char* name) {
    if constexpr (std::is_same_v<decltype(fn), QDwFn>) {
      if (!cpu_has(isa)) {
        std::printf("# %s skipped: this CPU lacks %s\n", name, isa_name(isa));
        return;
      }
      ++kernels_run;
      std::mt19937 rng(17);
      for (int iter = 0; iter < 300; ++iter) {
        DwProblem d = make_dw(rng);
        if (iter % 4 == 1) {
          // Multipliers at the edges of a vectorized requantization (shift
          // 31, shifts 54-56, and above 1, which needs the wide path), and a
          // bias near the int32 limit on one channel (saturation).
          const double edge[] = {0.9999, 0.5, std::exp2(-23), std::exp2(-24), std::exp2(-25), 3.0, 1000.0};
          for (auto& q : d.requant) q = quantize_multiplier(edge[rng() % 7]);
          if (iter % 8 == 1) {
            d.bias[rng() % d.bias.size()] = iter % 16 == 1 ? INT32_MAX - 100 : INT32_MIN + 100;
            d.p.bias = d.bias.data();
          }
        }
        const QDwParams& p = d.p;
        ASSERT_EQ(run_dw(fn, p), run_dw(&qu8s8_dwconv_requant__ref, p))
            << name << " C=" << p.C << " H=" << p.H << " W=" << p.W << " K=" << p.KH << "x" << p.KW << " stride "
            << p.stride_h << "," << p.stride_w << " pad " << p.pad_h << "," << p.pad_w << " dil " << p.dil_h << ","
            << p.dil_w;
      }
      std::printf("# %s: 300 random problems equal the reference\n", name);
    }
  };
#define QF_KERNEL(op, isa, fn) check_dw(&fn, Isa::isa, #fn);
#define QF_PACKER(isa, fn)
#include "quant/kernels/kernel_list.inc"
#undef QF_KERNEL
#undef QF_PACKER
  EXPECT_GE(kernels_run, 2);  // the reference and this machine's SIMD level
}

TEST(QDwConv, ChecksTheContract) {
  std::mt19937 rng(3);
  DwProblem d = make_dw(rng);
  std::vector<uint8_t> y(static_cast<size_t>(d.p.OH * d.p.OW * d.p.C));
  d.p.y = y.data();
  EXPECT_NO_THROW(check(d.p));
  QDwParams bad = d.p;
  bad.OH += 5;
  EXPECT_THROW(check(bad), ValueError);
  bad = d.p;
  bad.oh_end = bad.OH + 1;
  EXPECT_THROW(check(bad), ValueError);
  bad = d.p;
  bad.x_zero_point = 256;
  EXPECT_THROW(check(bad), ValueError);
  bad = d.p;
  bad.w = nullptr;
  EXPECT_THROW(check(bad), ValueError);
  EXPECT_NE(kernels_for(Isa::ref).qdwconv, nullptr);
}

}  // namespace
}  // namespace qforge::quant::kernels
