// AVX2 requantizing u8 x s8 GEMM, exact: vpmaddubsw would add two u8 x s8
// products into a saturating int16 (255 * 127 * 2 overflows it), so both
// operands are widened to int16 instead and multiplied with vpmaddwd, whose
// pair sums land in int32 exactly. Tiles of 4 rows x 16 output channels (two
// ymm accumulators per row), K in pairs. B is packed into
// [N/16][K/2][16 channels][2 x int16] (zero-padded); the input zero point goes
// through per-channel weight sums as in the VNNI kernel, and the result
// through qmath's requantize(). qgemm_pack__avx2_4x16 packs once.
#include <immintrin.h>

#include <vector>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

/// a[k] and a[k + 1] (0 past K) as two int16 in one int32.
inline int32_t load2(const uint8_t* a, int64_t k, int64_t K) {
  const uint32_t lo = a[k];
  const uint32_t hi = k + 1 < K ? a[k + 1] : 0;
  return static_cast<int32_t>(lo | (hi << 16));
}

template <int R>
inline void tile(const QGemmParams& p, const int32_t* packed, const int32_t* bsum, int64_t K2, int64_t m0, int64_t n0) {
  __m256i acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = p.a + (m0 + r) * p.lda;
  const int64_t full = p.K / 2;
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    // 16 words = 16 channels x 2 int16 (vector loads may alias any type).
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + k2 * 16));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + k2 * 16 + 8));
    for (int r = 0; r < R; ++r) {
      const int32_t a2 = k2 < full ? static_cast<int32_t>(rows[r][2 * k2] | (uint32_t{rows[r][2 * k2 + 1]} << 16))
                                   : load2(rows[r], 2 * k2, p.K);
      const __m256i av = _mm256_set1_epi32(a2);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }
  const int64_t nn = std::min<int64_t>(16, p.N - n0);
  alignas(32) int32_t dot[16];
  for (int r = 0; r < R; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(dot), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(dot + 8), acc[r][1]);
    for (int64_t j = 0; j < nn; ++j) {
      const int64_t n = n0 + j;
      store_output(p, m0 + r, n, static_cast<int64_t>(dot[j]) - static_cast<int64_t>(p.a_zero_point) * bsum[j]);
    }
  }
}

}  // namespace

namespace {

/// int16 pairs [NB][K2][16 channels][2] (zero-padded; written with memcpy into
/// int32 words and read with vector loads), then the NB * 16 channel sums.
void pack_into(std::vector<int32_t>& out, const int8_t* b0, int64_t ldb, int64_t N, int64_t K) {
  const int64_t K2 = (K + 1) / 2, NB = (N + 15) / 16;
  out.assign(NB * K2 * 16 + NB * 16, 0);
  int32_t* bsum = out.data() + NB * K2 * 16;
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* b = b0 + n * ldb;
    int32_t* dst = out.data() + (n / 16) * K2 * 16 + (n % 16);
    int32_t s = 0;
    for (int64_t k2 = 0; k2 < K2; ++k2) {
      int16_t pair[2] = {b[2 * k2], static_cast<int16_t>(2 * k2 + 1 < K ? b[2 * k2 + 1] : 0)};
      s += pair[0] + pair[1];
      __builtin_memcpy(dst + k2 * 16, pair, 4);
    }
    bsum[n] = s;
  }
}

}  // namespace

std::vector<int32_t> qgemm_pack__avx2_4x16(const int8_t* b, int64_t ldb, int64_t N, int64_t K) {
  std::vector<int32_t> out;
  pack_into(out, b, ldb, N, K);
  return out;
}

void qu8s8_gemm_requant__avx2_4x16(const QGemmParams& p0) {
  if (p0.M == 0 || p0.N == 0) return;
  if (p0.pool > 1) return gemm_pooled_via_c32(&qu8s8_gemm_requant__avx2_4x16, p0);
  thread_local std::vector<uint8_t> rows;
  const QGemmParams p = gather_segmented_rows(p0, rows);
  const int64_t K2 = (p.K + 1) / 2, NB = (p.N + 15) / 16;
  const int32_t* base = p.b_packed;
  if (!base) {
    thread_local std::vector<int32_t> tl;
    pack_into(tl, p.b, p.ldb, p.N, p.K);
    base = tl.data();
  }
  const int32_t* bsum_all = base + NB * K2 * 16;
  for (int64_t nb = 0; nb < NB; ++nb) {
    const int32_t* pk = base + nb * K2 * 16;
    const int32_t* bs = bsum_all + nb * 16;
    int64_t m = 0;
    for (; m + 4 <= p.M; m += 4) tile<4>(p, pk, bs, K2, m, nb * 16);
    for (; m < p.M; ++m) tile<1>(p, pk, bs, K2, m, nb * 16);
  }
}

}  // namespace qforge::quant::kernels
