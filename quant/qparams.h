#pragma once
// Quantization parameters and the one set of rules that turns a real range
// into them. Every fake-quant path and observer uses these functions, and
// the int8 runtime's arithmetic (quant/runtime/qmath.h) follows the same
// rounding; docs/quantization.md states the rules.
//
// Rounding: real -> integer rounds half to even, q = nearbyint(x * inv_scale)
// with inv_scale = 1.0f / scale computed in float (what PyTorch's fake-quant
// does, and what cvtps2dq does under the default MXCSR).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/runtime/qmath.h"

namespace qforge::quant {

/// How a real range maps onto the codes.
enum class QScheme {
  /// zero point fixed (0 for signed, 2^(bits-1) for unsigned); range
  /// [-amax, amax] with amax = max(|min|, |max|).
  symmetric,
  /// zero point chosen so that [min, max] (widened to contain 0) maps onto
  /// [qmin, qmax].
  affine,
};

/// What to quantize to: bit width, signedness, scheme and granularity.
struct QuantSpec {
  /// Bit width, 2..8 (validate()).
  int bits = 8;
  /// Signed codes (two's complement range) or unsigned ones (from 0).
  bool is_signed = true;
  /// Symmetric (fixed zero point) or affine (fitted zero point).
  QScheme scheme = QScheme::symmetric;
  /// Per channel along `axis` (weights: axis 0, the output channels).
  bool per_channel = false;
  /// The channel axis when per_channel (validate(): >= 0).
  int axis = 0;
  /// Use one bit less of range (for kernels that need the headroom).
  bool reduce_range = false;

  /// Throws ValueError unless bits is 2..8 (and reduce_range leaves >= 2)
  /// and the axis is valid.
  void validate() const;
  /// The smallest code: -2^(b-1) signed, 0 unsigned, where b is bits (bits - 1
  /// with reduce_range). Does not validate.
  int32_t qmin() const;
  /// The largest code: 2^(b-1) - 1 signed, 2^b - 1 unsigned (b as for qmin()).
  int32_t qmax() const;
  /// "int8 symmetric per-channel(axis 0)".
  std::string describe() const;
};

/// Scales and zero points, one per tensor or one per channel. Scales are
/// finite and > 0; zero points are integers in [qmin, qmax]; real 0.0 maps
/// exactly to the zero point.
struct QParams {
  /// [C] scales (C = 1 per tensor).
  std::vector<float> scale;
  /// [C] zero points, one per scale.
  std::vector<int32_t> zero_point;
  /// The code range (QuantSpec::qmin()/qmax() of the spec they came from).
  int32_t qmin = -128, qmax = 127;
  /// -1 for per tensor, else the channel axis.
  int axis = -1;

  bool per_channel() const { return axis >= 0; }
  size_t channels() const { return scale.size(); }
  /// The scales as a new f32 [C] tensor (C = 1 per tensor; copied).
  Tensor scale_tensor() const;
  /// The zero points as a new i32 [C] tensor (copied).
  Tensor zero_point_tensor() const;
};

/// The scale used when a range is empty (all values 0): 1.0, so that 0 is
/// exact and later requantization multipliers stay finite.
constexpr float kEmptyRangeScale = 1.0f;
/// The smallest scale ever produced (PyTorch's float32 eps).
constexpr float kMinScale = 1.1920928955078125e-07f;

/// QParams for per-channel (or, with one entry, per-tensor) ranges. mins and
/// maxs must be finite with min <= max (ValueError otherwise, naming the
/// channel). The range is widened to contain 0.
QParams qparams_from_range(const std::vector<float>& mins, const std::vector<float>& maxs, const QuantSpec& spec);

// round_half_even(), quantize_value() and dequantize_value() come from
// quant/runtime/qmath.h, the one header of the integer arithmetic.

}  // namespace qforge::quant
