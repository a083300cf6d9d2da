// AVX2 requantizing u8 x s8 GEMM, exact. vpmaddubsw would add two u8 x s8
// products into a saturating int16 (255 * 127 * 2 overflows it), so both
// operands are widened to int16 and multiplied with vpmaddwd, whose pair sums
// land in int32 exactly. Two multiplies per 32 products, as many as
// vpmaddubsw plus its widening vpmaddwd would take.
//
// - B is packed once into [N/16][K/2][16 channels][2 x int16] (zero-padded),
//   then the channel sums (kept for the packed layout's sake; unused here).
// - A is widened to int16 with the zero point already subtracted (a - zp
//   lies in [-255, 255]), so the sums are the exact dot products and a pair
//   is one broadcast dword. Segmented rows (a convolution's implicit im2col)
//   widen the span of A they read once and the tiles broadcast from it run
//   by run; other rows are widened per block of up to 48.
// - Tiles of 6 rows x 16 channels: 12 accumulators, two B vectors and one
//   broadcast. A fused max pool of up to 6 rows takes the max of each
//   group's sums in the tile (tiles of 4 rows for groups of 4).
// - The requantization is vectorized when every channel of a block has a
//   multiplier in [2^-23, 1) (shift in [31, 54]) and its sums plus bias
//   provably fit int32: then each rounded value fits int32, and the 64-bit
//   products are taken on the even and odd dword lanes in place. Otherwise
//   the block goes through qmath's requantize() element by element.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "quant/kernels/avx2/requant_avx2.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

constexpr int kRows = 6;
constexpr int64_t kBlockRows = 48;

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

/// len bytes of u8 codes as int16 (code - zp) at dst.
inline void widen_run(const uint8_t* src, int64_t len, __m256i zp16, int16_t* dst) {
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) {
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), _mm256_sub_epi16(w, zp16));
  }
  // Runs are whole groups of 4 bytes (the segmented-row contract); a
  // contiguous row's last 1-3 bytes go one by one.
  const __m128i zp8 = _mm256_castsi256_si128(zp16);
  for (; k + 8 <= len; k += 8) {
    const __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + k)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm_sub_epi16(w, zp8));
  }
  for (; k + 4 <= len; k += 4) {
    int32_t four;
    __builtin_memcpy(&four, src + k, 4);
    const __m128i w = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(four));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + k), _mm_sub_epi16(w, zp8));
  }
  const int16_t zp = static_cast<int16_t>(_mm256_extract_epi16(zp16, 0));
  for (; k < len; ++k) dst[k] = static_cast<int16_t>(src[k] - zp);
}

/// Rows [m0, m0 + rows) of A as int16 (a - zp), K2 pairs per row (a zero
/// after an odd K).
void pack_rows(const QGemmParams& p, int64_t m0, int64_t rows, int64_t K2, int16_t* dst) {
  const __m256i zp16 = _mm256_set1_epi16(static_cast<int16_t>(p.a_zero_point));
  const int64_t len = p.K / p.segments;
  for (int64_t r = 0; r < rows; ++r) {
    int16_t* d = dst + r * 2 * K2;
    const int64_t m = m0 + r;
    if (!p.a_offsets)
      widen_run(p.a + m * p.lda, p.K, zp16, d);
    else
      for (int64_t s = 0; s < p.segments; ++s) widen_run(p.a + segment_offset(p, m, s), len, zp16, d + s * len);
    if (p.K % 2) d[p.K] = 0;
  }
}

/// acc0 += a * b0, acc1 += a * b1 (int16 pairs, a one broadcast dword). One
/// asm statement per row, on named locals: GCC 12 otherwise hoists all the
/// products ahead of the sums, or keeps an accumulator array in memory, and
/// spills.
#define QF_AVX2_ROW(r, c0, c1)                                       \
  if constexpr (R > r) {                                             \
    __m256i av, t;                                                   \
    __asm__(                                                         \
        "vpbroadcastd %[a], %[av]\n\t"                               \
        "vpmaddwd %[b0], %[av], %[t]\n\t"                            \
        "vpaddd %[t], %[x0], %[x0]\n\t"                              \
        "vpmaddwd %[b1], %[av], %[t]\n\t"                            \
        "vpaddd %[t], %[x1], %[x1]"                                  \
        : [x0] "+x"(c0), [x1] "+x"(c1), [av] "=&x"(av), [t] "=&x"(t) \
        : [a] "m"(a##r[k2]), [b0] "x"(b0), [b1] "x"(b1));            \
  }

/// The exact sums of R rows x 16 channels. Each row is `nseg` runs of `run2`
/// int16 pairs (a - zp), run s of row r at rows[r * nseg + s]; the packed B
/// goes through the runs in order.
template <int R>
__attribute__((noinline)) void dot_tile(const int32_t* packed, const int32_t* const* rows, int64_t nseg, int64_t run2,
                                        __m256i* out) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
          c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t s = 0; s < nseg; ++s, packed += run2 * 16) {
    const int32_t *a0 = rows[s], *a1 = nullptr, *a2 = nullptr, *a3 = nullptr, *a4 = nullptr, *a5 = nullptr;
    if constexpr (R > 1) a1 = rows[nseg + s];
    if constexpr (R > 2) a2 = rows[2 * nseg + s];
    if constexpr (R > 3) a3 = rows[3 * nseg + s];
    if constexpr (R > 4) a4 = rows[4 * nseg + s];
    if constexpr (R > 5) a5 = rows[5 * nseg + s];
    for (int64_t k2 = 0; k2 < run2; ++k2) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + k2 * 16));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + k2 * 16 + 8));
      QF_AVX2_ROW(0, c00, c01)
      QF_AVX2_ROW(1, c10, c11)
      QF_AVX2_ROW(2, c20, c21)
      QF_AVX2_ROW(3, c30, c31)
      QF_AVX2_ROW(4, c40, c41)
      QF_AVX2_ROW(5, c50, c51)
    }
  }
  // Stored row by row: copying through an array of all 12 made GCC keep
  // the accumulators of the shorter tiles on the stack.
  out[0] = c00, out[1] = c01;
  if constexpr (R > 1) out[2] = c10, out[3] = c11;
  if constexpr (R > 2) out[4] = c20, out[5] = c21;
  if constexpr (R > 3) out[6] = c30, out[7] = c31;
  if constexpr (R > 4) out[8] = c40, out[9] = c41;
  if constexpr (R > 5) out[10] = c50, out[11] = c51;
}
#undef QF_AVX2_ROW

/// Rows [m0, m0 + R) x channels [n0, n0 + 16) of C from their run pointers
/// (dot_tile): the sums, then the block's requantization or int32 outputs.
template <int R>
void tile(const QGemmParams& p, const int32_t* packed, const Block& blk, const int32_t* const* rows, int64_t nseg,
          int64_t run2, int64_t m0, int64_t n0) {
  __m256i acc[R][2];
  dot_tile<R>(packed, rows, nseg, run2, &acc[0][0]);
  // Fused max pool (QGemmParams::pool; R and m0 are multiples of it): the
  // max of each group's exact sums, before the bias and the requantization,
  // which never decrease as the sum grows.
  const int64_t pool = p.pool, outs = R / pool;
  if (pool > 1)
    for (int64_t g = 0; g < outs; ++g)
      for (int h = 0; h < 2; ++h) {
        __m256i v = acc[g * pool][h];
        for (int64_t i = 1; i < pool; ++i) v = _mm256_max_epi32(v, acc[g * pool + i][h]);
        acc[g][h] = v;
      }
  m0 /= pool;
  const int64_t nn = std::min<int64_t>(16, p.N - n0);
  if (blk.vector) {
    if (p.c32) {
      for (int64_t r = 0; r < outs; ++r) {
        alignas(32) int32_t out[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_add_epi32(acc[r][0], blk.bias[0]));
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_add_epi32(acc[r][1], blk.bias[1]));
        std::copy(out, out + nn, p.c32 + (m0 + r) * p.ldc + n0);
      }
      return;
    }
    for (int64_t r = 0; r < outs; ++r) {
      const __m128i bytes = requant16_bytes(acc[r][0], acc[r][1], blk);
      uint8_t* out = p.c + (m0 + r) * p.ldc + n0;
      if (nn == 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
      else {
        alignas(16) uint8_t tmp[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
        std::copy(tmp, tmp + nn, out);
      }
    }
    return;
  }
  alignas(32) int32_t dot[16];
  for (int64_t r = 0; r < outs; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(dot), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(dot + 8), acc[r][1]);
    for (int64_t j = 0; j < nn; ++j) store_output(p, m0 + r, n0 + j, dot[j]);
  }
}

/// Runs rows [m0, m1) against channel blocks [nb0, nb1): tiles of kRows rows
/// (with pooled rows, the largest multiple of the group size up to kRows; m0
/// and m1 are then multiples of it) and a shorter last one. rows_of(m, ptrs)
/// fills the nseg run pointers of row m.
template <class RowsOf>
void run_rows(const QGemmParams& p, const int32_t* base, const std::vector<Block>& blocks, int64_t K2, int64_t nseg,
              int64_t run2, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1, RowsOf rows_of) {
  using TileFn = void (*)(const QGemmParams&, const int32_t*, const Block&, const int32_t* const*, int64_t, int64_t,
                          int64_t, int64_t);
  static constexpr TileFn kTile[kRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};
  thread_local std::vector<const int32_t*> ptrs;
  ptrs.resize(static_cast<size_t>(kRows * nseg));
  const int64_t step = kRows / p.pool * p.pool;
  for (int64_t m = m0; m < m1; m += step) {
    const int64_t R = std::min<int64_t>(step, m1 - m);
    for (int64_t r = 0; r < R; ++r) rows_of(m + r, ptrs.data() + r * nseg);
    for (int64_t nb = nb0; nb < nb1; ++nb)
      kTile[R](p, base + nb * K2 * 16, blocks[nb], ptrs.data(), nseg, run2, m, nb * 16);
  }
}

}  // namespace

std::vector<int32_t> qgemm_pack__avx2_6x16(const int8_t* b, int64_t ldb, int64_t N, int64_t K) {
  std::vector<int32_t> out;
  pack_into(out, b, ldb, N, K);
  return out;
}

void qu8s8_gemm_requant__avx2_6x16(const QGemmParams& p) {
  if (p.M == 0 || p.N == 0) return;
  if (p.pool > kRows) return gemm_pooled_via_c32(&qu8s8_gemm_requant__avx2_6x16, p);
  const int64_t K2 = (p.K + 1) / 2, NB = (p.N + 15) / 16;
  const int32_t* base = p.b_packed;
  if (!base) {
    thread_local std::vector<int32_t> tl;
    pack_into(tl, p.b, p.ldb, p.N, p.K);
    base = tl.data();
  }
  thread_local std::vector<Block> blocks;
  blocks.resize(static_cast<size_t>(NB));
  for (int64_t nb = 0; nb < NB; ++nb) blocks[nb] = make_block(p, nb * 16);
  // Channel blocks in chunks whose packed B (K2 * 64 bytes a block) stays
  // within about 256 KB of L2 while every row passes (a conv's weights are
  // one chunk).
  const int64_t chunk = std::max<int64_t>(1, (256 << 10) / (K2 * 64));
  thread_local std::vector<int16_t> wide;
  if (p.a_offsets) {
    // Segmented rows (a convolution's implicit im2col): the span of A they
    // read is widened once, and the tiles broadcast straight from it, so an
    // input byte read by several taps is widened once, not once per tap.
    // Taken when that span is at most the rows' own size.
    const int64_t len = p.K / p.segments;
    // The span: over the row offsets (evenly spaced runs: the last run is
    // (segments - 1) strides on) or over every run's offset.
    const bool even = p.segment_stride > 0;
    const int64_t n_off = even ? p.M : p.M * p.segments;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t i = 0; i < n_off; ++i) {
      lo = std::min(lo, p.a_offsets[i]);
      hi = std::max(hi, p.a_offsets[i]);
    }
    hi += len + (even ? (p.segments - 1) * p.segment_stride : 0);
    if (hi - lo <= p.M * p.K) {
      wide.resize(static_cast<size_t>(hi - lo));
      widen_run(p.a + lo, hi - lo, _mm256_set1_epi16(static_cast<int16_t>(p.a_zero_point)), wide.data());
      const int16_t* w = wide.data();
      for (int64_t nc = 0; nc < NB; nc += chunk)
        run_rows(p, base, blocks, K2, p.segments, len / 2, 0, p.M, nc, std::min(NB, nc + chunk),
                 [&](int64_t m, const int32_t** out) {
                   for (int64_t s = 0; s < p.segments; ++s)
                     out[s] = reinterpret_cast<const int32_t*>(w + (segment_offset(p, m, s) - lo));
                 });
      return;
    }
  }
  // Otherwise blocks of kBlockRows rows are widened into contiguous rows,
  // again for each chunk.
  const int64_t block_rows = kBlockRows / p.pool * p.pool;  // whole pooled groups
  wide.resize(static_cast<size_t>(std::min(p.M, block_rows) * 2 * K2));
  for (int64_t nc = 0; nc < NB; nc += chunk)
    for (int64_t mb = 0; mb < p.M; mb += block_rows) {
      const int64_t rows = std::min(block_rows, p.M - mb);
      pack_rows(p, mb, rows, K2, wide.data());
      run_rows(p, base, blocks, K2, 1, K2, mb, mb + rows, nc, std::min(NB, nc + chunk),
               [&](int64_t m, const int32_t** out) {
                 out[0] = reinterpret_cast<const int32_t*>(wide.data() + (m - mb) * 2 * K2);
               });
    }
}

}  // namespace qforge::quant::kernels
