// The integer arithmetic of quant/runtime/qmath.h against independent
// references (sign-magnitude 128-bit rounding, long double products).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/error.h"
#include "quant/runtime/qmath.h"

namespace qforge::quant {
namespace {

/// round_half_even(acc * M / 2^shift) computed on the magnitude in 128 bits,
/// then signed: a different route from rounding_scale's floor-and-remainder.
int64_t reference_scale(int32_t acc, int32_t mult, int shift) {
  const __int128 prod = static_cast<__int128>(acc) * mult;
  const bool neg = prod < 0;
  const __int128 a = neg ? -prod : prod;
  const __int128 one = 1;
  __int128 q = a >> shift;
  const __int128 r = a - (q << shift), half = one << (shift - 1);
  if (r > half || (r == half && (q & 1))) ++q;
  return static_cast<int64_t>(neg ? -q : q);
}

TEST(QMath, MultiplierIsNormalizedAndWithinTwoToMinus31) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> e(-31, 30), u(0, 1);
  for (int i = 0; i < 20000; ++i) {
    const double real = std::ldexp(1.0 + u(rng), static_cast<int>(std::floor(e(rng))) - 1);
    if (real < std::ldexp(1.0, -31) || real >= std::ldexp(1.0, 30)) continue;
    const QuantMultiplier m = quantize_multiplier(real);
    ASSERT_GE(m.multiplier, 1 << 30) << real;
    ASSERT_GE(m.shift, 1);
    ASSERT_LE(m.shift, 62);
    ASSERT_LE(std::fabs(m.value() - real) / real, std::ldexp(1.0, -31)) << real;
  }
  EXPECT_EQ(quantize_multiplier(0.5).multiplier, 1 << 30);
  EXPECT_EQ(quantize_multiplier(0.5).shift, 31);
  EXPECT_EQ(quantize_multiplier(1.0).shift, 30);
  // A mantissa that rounds up to 2^31 renormalizes to the next power of two.
  const QuantMultiplier up = quantize_multiplier(std::nextafter(1.0, 0.0));
  EXPECT_EQ(up.multiplier, 1 << 30);
  EXPECT_EQ(up.shift, 30);
}

TEST(QMath, MultiplierRangeErrors) {
  // std::ldexp(1.0, 30) - 0.125 is below 2^30 but its 31-bit mantissa rounds up to 2^30.
  for (double bad : {0.0, -0.5, std::ldexp(1.0, -32), std::ldexp(1.0, 30), std::ldexp(1.0, 30) - 0.125,
                     std::nan(""), std::numeric_limits<double>::infinity()})
    EXPECT_THROW(quantize_multiplier(bad), ValueError) << bad;
  EXPECT_THROW(requant_multiplier(0.f, 1.f, 1.f), ValueError);
  EXPECT_THROW(requant_multiplier(1.f, 1.f, std::numeric_limits<float>::infinity()), ValueError);
}

TEST(QMath, RoundingScaleMatchesTheExactReference) {
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int32_t> acc_d(std::numeric_limits<int32_t>::min(),
                                               std::numeric_limits<int32_t>::max());
  std::uniform_int_distribution<int32_t> m_d(1 << 30, std::numeric_limits<int32_t>::max());
  std::uniform_int_distribution<int> s_d(1, 62);
  std::uniform_int_distribution<int32_t> small(-5000, 5000);
  for (int i = 0; i < 200000; ++i) {
    const int32_t acc = (i % 2) ? acc_d(rng) : small(rng);
    const QuantMultiplier m{m_d(rng), s_d(rng)};
    ASSERT_EQ(rounding_scale(acc, m), reference_scale(acc, m.multiplier, m.shift))
        << acc << " * " << m.multiplier << " >> " << m.shift;
  }
  for (int32_t acc : {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), 0, 1, -1})
    for (int s : {1, 2, 31, 32, 61, 62}) {
      const QuantMultiplier m{std::numeric_limits<int32_t>::max(), s};
      ASSERT_EQ(rounding_scale(acc, m), reference_scale(acc, m.multiplier, s)) << acc << " " << s;
    }
}

TEST(QMath, TiesRoundHalfToEven) {
  const QuantMultiplier half{1 << 30, 31};  // exactly 0.5
  const int32_t accs[] = {1, 3, 5, 7, -1, -3, -5, -7};
  const int64_t want[] = {0, 2, 2, 4, 0, -2, -2, -4};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(rounding_scale(accs[i], half), want[i]) << accs[i];
  // Just above and below a tie.
  const QuantMultiplier m{(1 << 30) + 1, 31};  // 0.5 + 2^-31
  EXPECT_EQ(rounding_scale(1, m), 1);
  const QuantMultiplier n{(1 << 30) + 1, 32};  // 0.25 + 2^-32: 2 * m -> 0.5 + 2^-31
  EXPECT_EQ(rounding_scale(2, n), 1);
}

TEST(QMath, RequantizeAddsZeroPointThenClamps) {
  const QuantMultiplier m = quantize_multiplier(0.25);
  EXPECT_EQ(requantize(400, m, 10, 0, 255), 110);
  EXPECT_EQ(requantize(4000, m, 10, 0, 255), 255);
  EXPECT_EQ(requantize(-400, m, 10, 0, 255), 0);
  EXPECT_EQ(requantize(-400, m, 0, -128, 127), -100);
  EXPECT_EQ(requantize(std::numeric_limits<int32_t>::min(), m, 0, -128, 127), -128);
}

TEST(QMath, BiasAndActivationBounds) {
  EXPECT_EQ(quantize_bias(1.0f, 0.5f, 0.25f), 8);
  EXPECT_EQ(quantize_bias(0.3125f, 0.5f, 0.25f), 2);   // 2.5 -> 2
  EXPECT_EQ(quantize_bias(-0.4375f, 0.5f, 0.25f), -4);  // -3.5 -> -4
  EXPECT_EQ(quantize_bias(1e30f, 1e-3f, 1e-3f), std::numeric_limits<int32_t>::max());
  EXPECT_EQ(quantize_bias(-1e30f, 1e-3f, 1e-3f), std::numeric_limits<int32_t>::min());
  EXPECT_THROW(quantize_bias(std::nanf(""), 1.f, 1.f), ValueError);

  const ClampBounds none = activation_bounds(Activation::none, 0.05f, 20, 0, 255);
  EXPECT_EQ(none.lo, 0);
  EXPECT_EQ(none.hi, 255);
  const ClampBounds relu = activation_bounds(Activation::relu, 0.05f, 20, 0, 255);
  EXPECT_EQ(relu.lo, 20);
  EXPECT_EQ(relu.hi, 255);
  const ClampBounds relu6 = activation_bounds(Activation::relu6, 0.05f, 20, 0, 255);
  EXPECT_EQ(relu6.lo, 20);
  EXPECT_EQ(relu6.hi, 140);  // 20 + round(6 / 0.05)
  EXPECT_EQ(activation_bounds(Activation::relu6, 0.01f, 20, 0, 255).hi, 255);  // 6.0 is out of range
  EXPECT_THROW(activation_bounds(Activation::relu, 0.05f, 300, 0, 255), ValueError);
}

}  // namespace
}  // namespace qforge::quant
