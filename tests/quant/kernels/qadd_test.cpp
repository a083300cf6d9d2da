// The quantized-add kernels: the reference against the rule written out on
// worked cases (ties included), and every add kernel of kernel_list.inc
// against the reference on random lengths (around the vector widths),
// zero points, scale ratios and clamps, in place too.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {
namespace {

std::vector<uint8_t> run_add(QAddFn fn, QAddParams p) {
  std::vector<uint8_t> y(static_cast<size_t>(p.n) + 1, 0xCD);  // one guard byte past the end
  p.y = y.data();
  check(p);
  fn(p);
  EXPECT_EQ(y.back(), 0xCD) << "wrote past the end";
  y.pop_back();
  return y;
}

TEST(QAdd, ReferenceFollowsTheRule) {
  // s_a = s_b = s_out: the add is (a - zp_a) + (b - zp_b) + zp_out exactly.
  const std::vector<uint8_t> a = {0, 10, 200, 255}, b = {5, 10, 100, 255};
  QAddParams p;
  p.n = 4;
  p.a = a.data();
  p.b = b.data();
  p.a_zero_point = 10;
  p.b_zero_point = 20;
  p.m = add_multipliers(0.5f, 0.5f, 0.5f);
  p.out_zero_point = 30;
  p.out_hi = 255;
  EXPECT_EQ(run_add(&qu8_add__ref, p), (std::vector<uint8_t>{5, 20, 255, 255}));
  // Halves: s_a / s_out = 0.5 makes odd offsets land on ties, rounded to even:
  // 1 * 0.5 = 0.5 -> 0, 3 * 0.5 = 1.5 -> 2, -1 * 0.5 -> -0 = 0, -3 * 0.5 -> -2.
  const std::vector<uint8_t> c = {11, 13, 9, 7}, z = {20, 20, 20, 20};
  p.a = c.data();
  p.b = z.data();
  p.m = add_multipliers(0.5f, 1.0f, 1.0f);
  p.out_zero_point = 100;
  EXPECT_EQ(run_add(&qu8_add__ref, p), (std::vector<uint8_t>{100, 102, 100, 98}));
}

TEST(QAdd, EveryKernelEqualsTheReference) {
  int kernels_run = 0;
  auto check_add = [&](auto fn, Isa isa, const char* name) {
    if constexpr (std::is_same_v<decltype(fn), QAddFn>) {
      if (!cpu_has(isa)) {
        std::printf("# %s skipped: this CPU lacks %s\n", name, isa_name(isa));
        return;
      }
      ++kernels_run;
      std::mt19937 rng(29);
      bool shifts_seen[4] = {false, false, false, false};
      std::uniform_int_distribution<int> u8(0, 255);
      std::uniform_real_distribution<double> ratio(-6, 4);
      for (int iter = 0; iter < 600; ++iter) {
        const std::vector<int64_t> lengths = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000};
        QAddParams p;
        p.n = lengths[rng() % lengths.size()];
        std::vector<uint8_t> a(static_cast<size_t>(p.n)), b(static_cast<size_t>(p.n));
        for (auto& v : a) v = static_cast<uint8_t>(u8(rng));
        for (auto& v : b) v = static_cast<uint8_t>(iter % 7 == 0 ? a[&v - b.data()] : u8(rng));
        p.a = a.data();
        p.b = b.data();
        p.a_zero_point = u8(rng);
        p.b_zero_point = u8(rng);
        // Scale ratios (output scale 1) by problem:
        // - most: 2^-6 to 2^4, exact powers of two now and then;
        // - every 10th: near 2^20-2^24, so that the shift falls below 10 and
        //   the kernels take their wide (int64) path;
        // - every 10th (8): about 2^-12 to 2^-9 or 2^16 to 2^19 (shifts 40-43
        //   and 12-15, outside the SIMD kernels' split form);
        // - every 10th (5): 2^5 to 2^15 (shifts 16-26);
        // - every 10th (7): both powers of two, or 3 times one, from 2^-9 to
        //   2^3 (many ties);
        // - every 10th (6): a mantissa just below 1 (a multiplier within 2^15
        //   of 2^31, whose high 16 bits do not fit int16).
        const int kind = iter % 10;
        auto pick = [&](bool round) -> float {
          switch (kind) {
            case 9: return static_cast<float>(std::exp2(20 + static_cast<double>(rng() % 5) + ratio(rng) / 8));
            case 8: return static_cast<float>(std::exp2((rng() % 2 ? -10.5 : 17.5) + ratio(rng) * 0.35));
            case 7: return static_cast<float>(std::ldexp(rng() % 2 ? 1.0 : 3.0, static_cast<int>(rng() % 13) - 9));
            case 5: return static_cast<float>(std::exp2(10 + ratio(rng)));
            case 6: return static_cast<float>(std::ldexp(1.0 - std::ldexp(1.0, -20 + static_cast<int>(rng() % 5)),
                                                         static_cast<int>(rng() % 8) - 4));
            default: return static_cast<float>(std::exp2(round ? std::round(ratio(rng)) : ratio(rng)));
          }
        };
        const float sa = pick(iter % 5 == 0), sb = pick(iter % 5 == 1);
        p.m = add_multipliers(sa, sb, 1.0f);
        p.out_zero_point = u8(rng);
        p.out_lo = iter % 3 == 0 ? p.out_zero_point : 0;
        p.out_hi = iter % 4 == 0 ? std::max(p.out_lo, 200) : 255;
        const int64_t top = (int64_t{1} << 31) - (int64_t{1} << 15);
        shifts_seen[p.m.shift < 10 ? 0 : p.m.shift < 17 || p.m.shift > 37 ? 1 : 2] = true;
        shifts_seen[3] = shifts_seen[3] || std::max(p.m.a, p.m.b) >= top;
        const std::vector<uint8_t> want = run_add(&qu8_add__ref, p);
        ASSERT_EQ(run_add(fn, p), want) << name << " n=" << p.n << " m=" << p.m.a << "," << p.m.b << " shift "
                                        << p.m.shift;
        // In place: the output over input a.
        std::vector<uint8_t> inplace = a;
        QAddParams q = p;
        q.a = inplace.data();
        q.y = inplace.data();
        fn(q);
        ASSERT_EQ(inplace, want) << name << " in place, n=" << p.n;
      }
      EXPECT_TRUE(shifts_seen[0] && shifts_seen[1] && shifts_seen[2] && shifts_seen[3])
          << "shifts below 10, 10-16 and above 37, 17-37, and a multiplier within 2^15 of 2^31";
      std::printf("# %s: 600 random problems equal the reference\n", name);
    }
  };
#define QF_KERNEL(op, isa, fn) check_add(&fn, Isa::isa, #fn);
#define QF_PACKER(isa, fn)
#include "quant/kernels/kernel_list.inc"
#undef QF_KERNEL
#undef QF_PACKER
  EXPECT_GE(kernels_run, 2);  // the reference and this machine's SIMD level
}

TEST(QAdd, EveryKernelEqualsTheReferenceOnEveryPairOfCodesAtTheFormBoundaries) {
  // All 65,536 pairs (a, b), with multipliers set directly: shifts on both
  // sides of the SIMD kernels' split form (16 | 17 ... 37 | 38), powers of
  // two and 3 * 2^k (ties), the largest multiplier whose high half fits
  // int16 (2^31 - 2^15 - 1) and the smallest that does not (2^31 - 2^15),
  // odd and even output zero points, a full and a narrow clamp.
  std::vector<uint8_t> a(65536), b(65536);
  for (int i = 0; i < 65536; ++i) a[i] = static_cast<uint8_t>(i & 255), b[i] = static_cast<uint8_t>(i >> 8);
  const int64_t top = (int64_t{1} << 31) - (int64_t{1} << 15);
  const std::vector<std::pair<int64_t, int64_t>> mults = {
      {int64_t{1} << 30, int64_t{1} << 30}, {3 * (int64_t{1} << 29), int64_t{1} << 28}, {top - 1, 1234567891},
      {top, int64_t{1} << 30}, {1518500250, top - 1}, {0, 2147483647}};
  struct Zp {
    int32_t a, b, out, lo, hi;
  };
  const std::vector<Zp> zps = {{0, 0, 0, 0, 255}, {255, 1, 254, 254, 255}, {128, 77, 1, 0, 200}, {3, 250, 129, 129, 255}};
  int kernels_run = 0;
  auto check_add = [&](auto fn, Isa isa, const char* name) {
    if constexpr (std::is_same_v<decltype(fn), QAddFn>) {
      if (!cpu_has(isa)) return;
      ++kernels_run;
      for (const int32_t shift : {16, 17, 18, 31, 37, 38})
        for (const auto& [ma, mb] : mults)
          for (const Zp& z : zps) {
            QAddParams p;
            p.n = 65536;
            p.a = a.data();
            p.b = b.data();
            p.a_zero_point = z.a;
            p.b_zero_point = z.b;
            p.m.a = ma;
            p.m.b = mb;
            p.m.shift = shift;
            p.out_zero_point = z.out;
            p.out_lo = z.lo;
            p.out_hi = z.hi;
            ASSERT_EQ(run_add(fn, p), run_add(&qu8_add__ref, p))
                << name << " shift " << shift << " m " << ma << ", " << mb << " zero points " << z.a << ", " << z.b
                << " -> " << z.out;
          }
      std::printf("# %s: every pair of codes at 6 shifts x 6 multiplier pairs x 4 zero-point sets\n", name);
    }
  };
#define QF_KERNEL(op, isa, fn) check_add(&fn, Isa::isa, #fn);
#define QF_PACKER(isa, fn)
#include "quant/kernels/kernel_list.inc"
#undef QF_KERNEL
#undef QF_PACKER
  EXPECT_GE(kernels_run, 2);
}

TEST(QAdd, ChecksTheContract) {
  const std::vector<uint8_t> a(8, 1);
  std::vector<uint8_t> y(8);
  QAddParams p;
  p.n = 8;
  p.a = p.b = a.data();
  p.y = y.data();
  p.m = add_multipliers(1.0f, 1.0f, 1.0f);
  EXPECT_NO_THROW(check(p));
  QAddParams bad = p;
  bad.b = nullptr;
  EXPECT_THROW(check(bad), ValueError);
  bad = p;
  bad.a_zero_point = 300;
  EXPECT_THROW(check(bad), ValueError);
  bad = p;
  bad.m.shift = 0;
  EXPECT_THROW(check(bad), ValueError);
  bad = p;
  bad.out_lo = 10, bad.out_hi = 5;
  EXPECT_THROW(check(bad), ValueError);
  EXPECT_NE(kernels_for(Isa::ref).qadd, nullptr);
}

}  // namespace
}  // namespace qforge::quant::kernels
