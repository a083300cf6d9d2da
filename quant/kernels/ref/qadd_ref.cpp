// Quantized add, reference: qmath's requantize_add() on every element, the
// oracle of the SIMD add kernels.
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

void qu8_add__ref(const QAddParams& p) {
  for (int64_t i = 0; i < p.n; ++i)
    p.y[i] = static_cast<uint8_t>(requantize_add(p.a[i] - p.a_zero_point, p.b[i] - p.b_zero_point, p.m,
                                                 p.out_zero_point, p.out_lo, p.out_hi));
}

}  // namespace qforge::quant::kernels
