// NEON (AArch64 Advanced SIMD) requantizing u8 x s8 GEMM, exact: inputs and
// weights are widened to int16 and multiplied into int32 lanes with
// vmlal_n_s16 / vmlal_high_n_s16 (no saturating step anywhere). Tiles of 4
// rows x 8 output channels; B is packed per call into [N/8][K][8 x int16]
// (zero-padded), the input zero point goes through per-channel weight sums,
// and each output through qmath's requantize(), as in the reference.
#include <arm_neon.h>

#include <vector>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

template <int R>
inline void tile(const QGemmParams& p, const int16_t* packed, const int32_t* bsum, int64_t m0, int64_t n0) {
  int32x4_t lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = vdupq_n_s32(0);
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = p.a + (m0 + r) * p.lda;
  for (int64_t k = 0; k < p.K; ++k) {
    const int16x8_t b = vld1q_s16(packed + k * 8);
    for (int r = 0; r < R; ++r) {
      const int16_t a = static_cast<int16_t>(rows[r][k]);
      lo[r] = vmlal_n_s16(lo[r], vget_low_s16(b), a);
      hi[r] = vmlal_high_n_s16(hi[r], b, a);
    }
  }
  const int64_t nn = std::min<int64_t>(8, p.N - n0);
  int32_t dot[8];
  for (int r = 0; r < R; ++r) {
    vst1q_s32(dot, lo[r]);
    vst1q_s32(dot + 4, hi[r]);
    for (int64_t j = 0; j < nn; ++j) {
      const int64_t n = n0 + j;
      store_output(p, m0 + r, n, static_cast<int64_t>(dot[j]) - static_cast<int64_t>(p.a_zero_point) * bsum[j]);
    }
  }
}

}  // namespace

void qu8s8_gemm_requant__neon_4x8(const QGemmParams& p0) {
  if (p0.M == 0 || p0.N == 0) return;
  if (p0.pool > 1) return gemm_pooled_via_c32(&qu8s8_gemm_requant__neon_4x8, p0);
  thread_local std::vector<uint8_t> rows;
  const QGemmParams p = gather_segmented_rows(p0, rows);
  const int64_t NB = (p.N + 7) / 8;
  thread_local std::vector<int16_t> packed;
  thread_local std::vector<int32_t> bsum;
  packed.assign(NB * p.K * 8, 0);
  bsum.assign(NB * 8, 0);
  for (int64_t n = 0; n < p.N; ++n) {
    const int8_t* b = p.b + n * p.ldb;
    int16_t* dst = packed.data() + (n / 8) * p.K * 8 + (n % 8);
    int32_t s = 0;
    for (int64_t k = 0; k < p.K; ++k) {
      dst[k * 8] = b[k];
      s += b[k];
    }
    bsum[n] = s;
  }
  for (int64_t nb = 0; nb < NB; ++nb) {
    const int16_t* pk = packed.data() + nb * p.K * 8;
    const int32_t* bs = bsum.data() + nb * 8;
    int64_t m = 0;
    for (; m + 4 <= p.M; m += 4) tile<4>(p, pk, bs, m, nb * 8);
    for (; m < p.M; ++m) tile<1>(p, pk, bs, m, nb * 8);
  }
}

}  // namespace qforge::quant::kernels
