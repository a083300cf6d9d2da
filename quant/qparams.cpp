#include "quant/qparams.h"

#include <algorithm>
#include <sstream>

namespace qforge::quant {

void QuantSpec::validate() const {
  QF_CHECK(bits >= 2 && bits <= 8) << "quantization bits must be 2..8, got " << bits;
  QF_CHECK(!reduce_range || bits >= 3) << "reduce_range needs at least 3 bits, got " << bits;
  QF_CHECK(axis >= 0) << "quantization axis must be >= 0, got " << axis;
}

int32_t QuantSpec::qmin() const {
  const int b = reduce_range ? bits - 1 : bits;
  return is_signed ? -(1 << (b - 1)) : 0;
}

int32_t QuantSpec::qmax() const {
  const int b = reduce_range ? bits - 1 : bits;
  return is_signed ? (1 << (b - 1)) - 1 : (1 << b) - 1;
}

std::string QuantSpec::describe() const {
  std::ostringstream os;
  os << (is_signed ? "int" : "uint") << bits << (scheme == QScheme::symmetric ? " symmetric" : " affine");
  if (per_channel) {
    os << " per-channel(axis " << axis << ")";
  } else {
    os << " per-tensor";
  }
  if (reduce_range) os << " reduce-range";
  return os.str();
}

Tensor QParams::scale_tensor() const { return Tensor::from_vector(scale, {static_cast<int64_t>(scale.size())}); }

Tensor QParams::zero_point_tensor() const {
  return Tensor::from_vector(zero_point, {static_cast<int64_t>(zero_point.size())});
}

QParams qparams_from_range(const std::vector<float>& mins, const std::vector<float>& maxs, const QuantSpec& spec) {
  spec.validate();
  QF_CHECK(!mins.empty() && mins.size() == maxs.size())
      << "qparams_from_range: need equal, non-empty min and max lists, got " << mins.size() << " and "
      << maxs.size();
  QParams p;
  p.qmin = spec.qmin();
  p.qmax = spec.qmax();
  p.axis = spec.per_channel ? spec.axis : -1;
  p.scale.resize(mins.size());
  p.zero_point.resize(mins.size());
  const double levels = static_cast<double>(p.qmax) - p.qmin;
  for (size_t c = 0; c < mins.size(); ++c) {
    QF_CHECK(std::isfinite(mins[c]) && std::isfinite(maxs[c]) && mins[c] <= maxs[c])
        << "qparams_from_range: channel " << c << " has range [" << mins[c] << ", " << maxs[c]
        << "]; need finite min <= max (did the observer see inf or NaN?)";
    const double lo = std::min<double>(mins[c], 0.0), hi = std::max<double>(maxs[c], 0.0);
    double scale;
    int32_t zp;
    if (spec.scheme == QScheme::symmetric) {
      const double amax = std::max(-lo, hi);
      scale = amax / (levels / 2);
      zp = spec.is_signed ? 0 : (p.qmin + p.qmax + 1) / 2;
    } else {
      scale = (hi - lo) / levels;
      zp = 0;  // set below, once the scale is final
    }
    if (hi == lo) scale = kEmptyRangeScale;
    scale = std::max<double>(scale, kMinScale);
    const float fs = static_cast<float>(scale);
    if (spec.scheme == QScheme::affine) {
      const double z = p.qmin - std::nearbyint(lo / fs);
      zp = static_cast<int32_t>(std::clamp<double>(z, p.qmin, p.qmax));
    }
    p.scale[c] = fs;
    p.zero_point[c] = zp;
  }
  return p;
}

}  // namespace qforge::quant
