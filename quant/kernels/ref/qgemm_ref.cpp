// Scalar reference of the requantizing u8 x s8 GEMM: the oracle that every
// SIMD kernel must equal bit for bit.
#include <algorithm>
#include <vector>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

void qu8s8_gemm_requant__ref(const QGemmParams& p) {
  std::vector<uint8_t> row(static_cast<size_t>(p.a_offsets ? p.K : 0));
  // With a pooled mode, each output is the largest of its group's outputs
  // (taken here after requantization: the contract's definition).
  for (int64_t m = 0; m < p.M; ++m) {
    const uint8_t* a = gemm_row(p, m, row.data());
    const int64_t out_row = m / p.pool;
    const bool first = m % p.pool == 0;
    for (int64_t n = 0; n < p.N; ++n) {
      const int8_t* b = p.b + n * p.ldb;
      int64_t sum = 0;
      for (int64_t k = 0; k < p.K; ++k) sum += (static_cast<int32_t>(a[k]) - p.a_zero_point) * b[k];
      if (p.c32) {
        int32_t& c = p.c32[out_row * p.ldc + n];
        const int32_t v = finish_acc(p, n, sum);
        c = first ? v : std::max(c, v);
      } else {
        uint8_t& c = p.c[out_row * p.ldc + n];
        const uint8_t v = finish_output(p, n, sum);
        c = first ? v : std::max(c, v);
      }
    }
  }
}

}  // namespace qforge::quant::kernels
