#include "quant/runtime/qmath.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace qforge::quant {

QuantMultiplier quantize_multiplier(double real) {
  QF_CHECK(std::isfinite(real) && real >= std::ldexp(1.0, -31) && real < std::ldexp(1.0, 30))
      << "requantization multiplier " << real
      << " is outside [2^-31, 2^30) (input scale x weight scale / output scale); the output scale is far from "
         "the input and weight scales";
  int exp = 0;
  const double frac = std::frexp(real, &exp);  // real = frac * 2^exp, frac in [0.5, 1)
  double mant = std::nearbyint(std::ldexp(frac, 31));  // in [2^30, 2^31]
  if (mant == std::ldexp(1.0, 31)) {
    mant = std::ldexp(1.0, 30);
    ++exp;
  }
  QuantMultiplier m;
  m.multiplier = static_cast<int32_t>(mant);
  m.shift = 31 - exp;
  // A real just below 2^30 can round up to 2^30 (shift 0): out of range too.
  QF_CHECK(m.shift >= 1 && m.shift <= 62)
      << "requantization multiplier " << real << " rounds to 2^" << 31 - m.shift
      << ", outside [2^-31, 2^30) (input scale x weight scale / output scale)";
  return m;
}

QuantMultiplier requant_multiplier(float input_scale, float weight_scale, float output_scale) {
  QF_CHECK(input_scale > 0 && weight_scale > 0 && output_scale > 0 && std::isfinite(input_scale) &&
           std::isfinite(weight_scale) && std::isfinite(output_scale))
      << "requant_multiplier: scales must be finite and > 0, got input " << input_scale << ", weight "
      << weight_scale << ", output " << output_scale;
  return quantize_multiplier(static_cast<double>(input_scale) * static_cast<double>(weight_scale) /
                             static_cast<double>(output_scale));
}

QuantMultiplier rescale_multiplier(float from_scale, float to_scale, int64_t divisor) {
  QF_CHECK(from_scale > 0 && to_scale > 0 && std::isfinite(from_scale) && std::isfinite(to_scale) && divisor >= 1)
      << "rescale_multiplier: scales must be finite and > 0 and the divisor >= 1, got " << from_scale << ", "
      << to_scale << ", " << divisor;
  return quantize_multiplier(static_cast<double>(from_scale) /
                             (static_cast<double>(to_scale) * static_cast<double>(divisor)));
}

AddMultipliers add_multipliers(float a_scale, float b_scale, float out_scale) {
  QF_CHECK(a_scale > 0 && b_scale > 0 && out_scale > 0 && std::isfinite(a_scale) && std::isfinite(b_scale) &&
           std::isfinite(out_scale))
      << "add_multipliers: scales must be finite and > 0, got " << a_scale << ", " << b_scale << ", " << out_scale;
  return add_multipliers_for(static_cast<double>(a_scale) / out_scale, static_cast<double>(b_scale) / out_scale);
}

AddMultipliers add_multipliers_for(double ra, double rb) {
  QF_CHECK(std::isfinite(ra) && std::isfinite(rb) && ra > 0 && rb > 0)
      << "add_multipliers: ratios must be finite and > 0, got " << ra << " and " << rb;
  const double big = std::max(ra, rb);
  QF_CHECK(big < std::ldexp(1.0, 30) && big >= std::ldexp(1.0, -31))
      << "add: input scale / output scale = " << big << " is outside [2^-31, 2^30)";
  // The largest shift with big * 2^shift < 2^31 (after rounding).
  int exp = 0;
  std::frexp(big, &exp);  // big in [2^(exp-1), 2^exp)
  int32_t shift = std::min(62, 31 - exp);
  if (std::nearbyint(std::ldexp(big, shift)) >= std::ldexp(1.0, 31)) --shift;
  AddMultipliers m;
  m.shift = std::max(1, shift);
  m.a = static_cast<int64_t>(std::nearbyint(std::ldexp(ra, m.shift)));
  m.b = static_cast<int64_t>(std::nearbyint(std::ldexp(rb, m.shift)));
  return m;
}

int32_t quantize_bias(float bias, float input_scale, float weight_scale) {
  QF_CHECK(std::isfinite(bias)) << "quantize_bias: bias is " << bias;
  QF_CHECK(input_scale > 0 && weight_scale > 0) << "quantize_bias: scales must be > 0, got " << input_scale << " and "
                                                << weight_scale;
  const double q = std::nearbyint(static_cast<double>(bias) /
                                  (static_cast<double>(input_scale) * static_cast<double>(weight_scale)));
  constexpr double lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
  return static_cast<int32_t>(q < lo ? lo : q > hi ? hi : q);
}

ClampBounds activation_bounds(Activation act, float output_scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
  QF_CHECK(qmin <= zero_point && zero_point <= qmax)
      << "activation_bounds: zero point " << zero_point << " outside [" << qmin << ", " << qmax << "]";
  QF_CHECK(output_scale > 0 && std::isfinite(output_scale))
      << "activation_bounds: output scale must be finite and > 0, got " << output_scale;
  ClampBounds b{qmin, qmax};
  if (act == Activation::relu || act == Activation::relu6) b.lo = zero_point;
  if (act == Activation::relu6) b.hi = quantize_value(6.0f, 1.0f / output_scale, zero_point, qmin, qmax);
  return b;
}

}  // namespace qforge::quant
