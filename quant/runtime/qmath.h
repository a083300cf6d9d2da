#pragma once
// The integer arithmetic of quantization, in one header that depends on core
// alone: the training-side fake quant (quant/qparams.h re-exports these), the
// int8 runtime's reference and SIMD kernels, convert and the QAT eval path all
// use these definitions. docs/quantization.md states them with worked
// examples.
//
// One rounding rule everywhere: half to even.
//  - real -> integer (quantize): q = round_half_even(x * inv_scale) + zp,
//    inv_scale = 1.0f / scale in float;
//  - int32 accumulator -> output (requantize): the exact 64-bit product
//    acc * multiplier, divided by 2^shift and rounded half to even in one
//    step, then + zero point, then clamped.

#include <cmath>
#include <cstdint>

namespace qforge::quant {

/// Rounds half to even (the default rounding mode; what cvtps2dq does).
inline float round_half_even(float v) { return std::nearbyint(v); }

/// q = clamp(round(x * inv_scale) + zero_point, qmin, qmax).
inline int32_t quantize_value(float x, float inv_scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
  const float r = round_half_even(x * inv_scale) + static_cast<float>(zero_point);
  return static_cast<int32_t>(std::fmin(std::fmax(r, static_cast<float>(qmin)), static_cast<float>(qmax)));
}

/// x = (q - zero_point) * scale.
inline float dequantize_value(int32_t q, float scale, int32_t zero_point) {
  return static_cast<float>(q - zero_point) * scale;
}

/// A positive real multiplier as multiplier * 2^-shift, with multiplier in
/// [2^30, 2^31) (31 significant bits) and shift in [1, 62].
struct QuantMultiplier {
  /// The 31-bit mantissa, in [2^30, 2^31).
  int32_t multiplier = 0;
  /// The right shift applied after the 64-bit product, in [1, 62].
  int32_t shift = 0;
  /// multiplier * 2^-shift as a double (exact).
  double value() const { return std::ldexp(static_cast<double>(multiplier), -shift); }
};

/// The multiplier closest to `real` (round half to even of its 31-bit
/// mantissa). real must be finite and in [2^-31, 2^30): ValueError otherwise,
/// with the value in the message. Relative error at most 2^-31.
QuantMultiplier quantize_multiplier(double real);

/// The requantization multiplier of a layer: s_in * s_w / s_out, computed in
/// double from the float scales, then quantize_multiplier().
QuantMultiplier requant_multiplier(float input_scale, float weight_scale, float output_scale);

/// round_half_even(v / 2^shift) for shift in [1, 62]: an arithmetic shift
/// (floor), then the remainder decides, ties to even.
inline int64_t rounding_shift(int64_t v, int32_t shift) {
  const int64_t q = v >> shift;  // floor (arithmetic shift)
  const int64_t rem = v - (q << shift);  // in [0, 2^shift)
  const int64_t half = int64_t{1} << (shift - 1);
  return q + ((rem > half) | ((rem == half) & (q & 1)));
}

/// round_half_even(acc * m.multiplier / 2^m.shift): the exact 64-bit product
/// (|acc * multiplier| < 2^62), then one rounding.
inline int64_t rounding_scale(int32_t acc, const QuantMultiplier& m) {
  return rounding_shift(static_cast<int64_t>(acc) * m.multiplier, m.shift);
}

/// The requantization rule: clamp(rounding_scale(acc, m) + zero_point, qmin,
/// qmax). Fused ReLU/ReLU6 come in as clamp bounds (activation_bounds()).
inline int32_t requantize(int32_t acc, const QuantMultiplier& m, int32_t zero_point, int32_t qmin, int32_t qmax) {
  int64_t r = rounding_scale(acc, m) + zero_point;
  r = r < qmin ? qmin : r;
  r = r > qmax ? qmax : r;
  return static_cast<int32_t>(r);
}

/// The multiplier that rescales codes from one per-tensor scale to another,
/// s_from / s_to (concat and the average pools, which also divide by the
/// window size: s_from / (s_to * divisor)).
QuantMultiplier rescale_multiplier(float from_scale, float to_scale, int64_t divisor = 1);

/// The rule of a quantized add (a residual): both inputs' offsets from their
/// zero points scaled to the output scale with one shared shift, summed
/// exactly in int64, then rounded once:
///   out = clamp(rounding_shift(da * a + db * b, shift) + zero_point, lo, hi)
/// with a = round_half_even(s_a / s_out * 2^shift) (likewise b), and shift
/// the largest in [1, 62] that keeps both below 2^31.
struct AddMultipliers {
  /// round_half_even(s_a / s_out * 2^shift) and the same for b; the larger
  /// is in [2^30, 2^31).
  int64_t a = 0, b = 0;
  /// The shared right shift, in [1, 62].
  int32_t shift = 1;
};
/// The AddMultipliers for input scales s_a, s_b and output scale s_out.
/// ValueError unless all three are finite and > 0 and max(s_a, s_b) / s_out
/// lies in [2^-31, 2^30).
AddMultipliers add_multipliers(float a_scale, float b_scale, float out_scale);
/// The same choice for two ratios given directly (the LSTM's gate sums, whose
/// inputs are int32 accumulators at scales s_x * s_w / s_gate): ValueError
/// unless both are finite and > 0 and the larger lies in [2^-31, 2^30).
AddMultipliers add_multipliers_for(double a_ratio, double b_ratio);
/// The add rule above on zero-point offsets da = a - zp_a and db = b - zp_b
/// (codes of at most 8 bits): the output code, clamped to [lo, hi] (the output
/// range, or activation_bounds() for a fused ReLU/ReLU6).
inline int32_t requantize_add(int32_t da, int32_t db, const AddMultipliers& m, int32_t zero_point, int32_t lo,
                              int32_t hi) {
  int64_t r = rounding_shift(da * m.a + db * m.b, m.shift) + zero_point;
  r = r < lo ? lo : r;
  r = r > hi ? hi : r;
  return static_cast<int32_t>(r);
}

/// The int32 bias of a layer: round_half_even(bias / (s_in * s_w)) with the
/// bias scale s_in * s_w and the division in double, saturated to int32.
int32_t quantize_bias(float bias, float input_scale, float weight_scale);

/// Activation fused into a quantized layer's output.
enum class Activation : int32_t { none = 0, relu = 1, relu6 = 2 };

/// Output clamp bounds [lo, hi] that fuse an activation: ReLU raises lo to
/// the zero point (real 0); ReLU6 also lowers hi to quantize_value(6). The
/// bounds stay within [qmin, qmax].
struct ClampBounds {
  /// The smallest and largest output code, qmin <= lo <= hi <= qmax.
  int32_t lo, hi;
};
/// The bounds for `act` over output codes [qmin, qmax] with the given scale and
/// zero point. ValueError unless qmin <= zero_point <= qmax and the scale is
/// finite and > 0.
ClampBounds activation_bounds(Activation act, float output_scale, int32_t zero_point, int32_t qmin, int32_t qmax);

}  // namespace qforge::quant
