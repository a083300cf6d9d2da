// Scalar reference of the requantizing u8 x s8 GEMM: the oracle that every
// SIMD kernel must equal bit for bit.
#include <vector>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

void qu8s8_gemm_requant__ref(const QGemmParams& p) {
  std::vector<uint8_t> row(static_cast<size_t>(p.a_offsets ? p.K : 0));
  for (int64_t m = 0; m < p.M; ++m) {
    const uint8_t* a = gemm_row(p, m, row.data());
    for (int64_t n = 0; n < p.N; ++n) {
      const int8_t* b = p.b + n * p.ldb;
      int64_t sum = 0;
      for (int64_t k = 0; k < p.K; ++k) sum += (static_cast<int32_t>(a[k]) - p.a_zero_point) * b[k];
      store_output(p, m, n, sum);
    }
  }
}

}  // namespace qforge::quant::kernels
