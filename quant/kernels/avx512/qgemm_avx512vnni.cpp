// AVX-512 VNNI requantizing u8 x s8 GEMM: tiles of 4 rows x 16 output
// channels, one vpdpbusd per row per 4 values of K. B is packed per call into
// [N/16][K/4][16 channels][4 bytes] (zero-padded), with each channel's sum of
// weights kept for the input zero point:
//   sum_k (a - zp) * b = sum_k a * b - zp * sum_k b.
// vpdpbusd adds u8 x s8 products into int32 without saturation, so the dot
// product is exact; the zero-point and bias terms are added in int64 and the
// result goes through qmath's requantize(), as in the reference.
#include <immintrin.h>

#include <vector>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

/// Four bytes of a row starting at k (zeros past K), as one int32.
inline int32_t load4(const uint8_t* a, int64_t k, int64_t K) {
  if (k + 4 <= K) {
    int32_t v;
    __builtin_memcpy(&v, a + k, 4);
    return v;
  }
  uint8_t t[4] = {0, 0, 0, 0};
  for (int64_t i = 0; k + i < K; ++i) t[i] = a[k + i];
  int32_t v;
  __builtin_memcpy(&v, t, 4);
  return v;
}

template <int R>
inline void tile(const QGemmParams& p, const int32_t* packed, const int32_t* bsum, int64_t K4, int64_t m0, int64_t n0) {
  __m512i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = p.a + (m0 + r) * p.lda;
  const int64_t full = p.K / 4;
  for (int64_t k4 = 0; k4 < full; ++k4) {
    const __m512i b = _mm512_loadu_si512(packed + k4 * 16);
    for (int r = 0; r < R; ++r) {
      int32_t a4;
      __builtin_memcpy(&a4, rows[r] + 4 * k4, 4);
      acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(a4), b);
    }
  }
  for (int64_t k4 = full; k4 < K4; ++k4) {
    const __m512i b = _mm512_loadu_si512(packed + k4 * 16);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(load4(rows[r], 4 * k4, p.K)), b);
  }
  const int64_t nn = std::min<int64_t>(16, p.N - n0);
  alignas(64) int32_t dot[16];
  for (int r = 0; r < R; ++r) {
    _mm512_store_si512(dot, acc[r]);
    uint8_t* c = p.c + (m0 + r) * p.ldc + n0;
    for (int64_t j = 0; j < nn; ++j) {
      const int64_t n = n0 + j;
      const int64_t full_acc = static_cast<int64_t>(dot[j]) - static_cast<int64_t>(p.a_zero_point) * bsum[j] +
                               (p.bias ? p.bias[n] : 0);
      c[j] = static_cast<uint8_t>(
          requantize(saturate_i32(full_acc), p.requant[n], p.out_zero_point, p.out_lo, p.out_hi));
    }
  }
}

}  // namespace

void qu8s8_gemm_requant__avx512vnni_4x16(const QGemmParams& p) {
  if (p.M == 0 || p.N == 0) return;
  const int64_t K4 = (p.K + 3) / 4, NB = (p.N + 15) / 16;
  thread_local std::vector<int32_t> packed, bsum;
  packed.assign(NB * K4 * 16, 0);
  bsum.assign(NB * 16, 0);
  for (int64_t n = 0; n < p.N; ++n) {
    const int8_t* b = p.b + n * p.ldb;
    int32_t* dst = packed.data() + (n / 16) * K4 * 16 + (n % 16);
    int32_t s = 0;
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      uint8_t t[4] = {0, 0, 0, 0};
      for (int i = 0; i < 4 && 4 * k4 + i < p.K; ++i) {
        t[i] = static_cast<uint8_t>(b[4 * k4 + i]);
        s += b[4 * k4 + i];
      }
      __builtin_memcpy(dst + k4 * 16, t, 4);
    }
    bsum[n] = s;
  }
  for (int64_t nb = 0; nb < NB; ++nb) {
    const int32_t* pk = packed.data() + nb * K4 * 16;
    const int32_t* bs = bsum.data() + nb * 16;
    int64_t m = 0;
    for (; m + 4 <= p.M; m += 4) tile<4>(p, pk, bs, K4, m, nb * 16);
    for (; m < p.M; ++m) tile<1>(p, pk, bs, K4, m, nb * 16);
  }
}

}  // namespace qforge::quant::kernels
