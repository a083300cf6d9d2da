// AVX-512 VNNI requantizing u8 x s8 GEMM: tiles of 4 rows x up to 64 output
// channels (4 blocks of 16), one vpdpbusd per row and block per 4 values of K. B is packed (per call, or once
// by qgemm_pack__avx512vnni_4x64) into
// [N/16][K/4][16 channels][4 bytes] (zero-padded), with each channel's sum of
// weights kept for the input zero point:
//   sum_k (a - zp) * b = sum_k a * b - zp * sum_k b.
// vpdpbusd adds u8 x s8 products into int32 without saturation, so the dot
// product is exact. Requantization is vectorized, 8 lanes of int64 at a time,
// and computes qmath's requantize() exactly: the bias added in int64 and
// saturated to int32, the 64-bit product with the multiplier (vpmuldq), an
// arithmetic shift per channel (vpsravq), the half-to-even correction from
// the remainder, the zero point and the clamp.
#include <immintrin.h>

#include <cstdint>
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

/// Per-channel requantization constants of one block of 16 channels, as two
/// halves of 8 int64 lanes.
struct Requant16 {
  __m512i zp_bsum;  // a_zero_point * sum_k b, int32 lanes
  __m512i bias[2], mult[2], shift[2], half[2];
};

Requant16 make_requant(const QGemmParams& p, const int32_t* bsum, int64_t n0) {
  alignas(64) int32_t zb[16];
  alignas(64) int64_t bias[16], mult[16], shift[16], half[16];
  for (int j = 0; j < 16; ++j) {
    const int64_t n = n0 + j;
    const bool valid = n < p.N;
    zb[j] = p.a_zero_point * bsum[j];
    bias[j] = valid && p.bias ? p.bias[n] : 0;
    mult[j] = valid ? p.requant[n].multiplier : (1 << 30);
    shift[j] = valid ? p.requant[n].shift : 31;
    half[j] = int64_t{1} << (shift[j] - 1);
  }
  Requant16 r;
  r.zp_bsum = _mm512_load_si512(zb);
  for (int h = 0; h < 2; ++h) {
    r.bias[h] = _mm512_load_si512(bias + 8 * h);
    r.mult[h] = _mm512_load_si512(mult + 8 * h);
    r.shift[h] = _mm512_load_si512(shift + 8 * h);
    r.half[h] = _mm512_load_si512(half + 8 * h);
  }
  return r;
}

/// requantize() of 8 exact int32 sums (in int64 lanes) for 8 channels.
inline __m512i requant8(__m512i sum, const Requant16& r, int h, __m512i zp, __m512i lo, __m512i hi) {
  const __m512i i32min = _mm512_set1_epi64(INT32_MIN), i32max = _mm512_set1_epi64(INT32_MAX);
  __m512i acc = _mm512_add_epi64(sum, r.bias[h]);
  acc = _mm512_min_epi64(_mm512_max_epi64(acc, i32min), i32max);
  const __m512i prod = _mm512_mul_epi32(acc, r.mult[h]);  // low 32 bits of each lane, signed: exact
  __m512i q = _mm512_srav_epi64(prod, r.shift[h]);
  const __m512i rem = _mm512_sub_epi64(prod, _mm512_sllv_epi64(q, r.shift[h]));
  const __mmask8 above = _mm512_cmpgt_epi64_mask(rem, r.half[h]);
  const __mmask8 tie_odd = _mm512_mask_test_epi64_mask(_mm512_cmpeq_epi64_mask(rem, r.half[h]), q, _mm512_set1_epi64(1));
  q = _mm512_mask_add_epi64(q, above | tie_odd, q, _mm512_set1_epi64(1));
  q = _mm512_add_epi64(q, zp);
  return _mm512_min_epi64(_mm512_max_epi64(q, lo), hi);
}

/// R rows x NV blocks of 16 channels: each broadcast of 4 input bytes feeds
/// NV vpdpbusd, so the loads per multiply fall as NV grows.
template <int R, int NV>
inline void tile(const QGemmParams& p, const int32_t* packed, int64_t block_stride, const Requant16* rq, int64_t K4,
                 int64_t m0, int64_t n0) {
  __m512i acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = p.a + (m0 + r) * p.lda;
  const int64_t full = p.K / 4;
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    __m512i b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(packed + v * block_stride + k4 * 16);
    for (int r = 0; r < R; ++r) {
      int32_t a4;
      if (k4 < full) {
        __builtin_memcpy(&a4, rows[r] + 4 * k4, 4);
      } else {
        a4 = load4(rows[r], 4 * k4, p.K);
      }
      const __m512i av = _mm512_set1_epi32(a4);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, b[v]);
    }
  }
  const __m512i zp = _mm512_set1_epi64(p.out_zero_point), lo = _mm512_set1_epi64(p.out_lo),
                hi = _mm512_set1_epi64(p.out_hi);
  for (int v = 0; v < NV; ++v) {
    const int64_t nn = std::min<int64_t>(16, p.N - (n0 + 16 * v));
    const __mmask16 store_mask = static_cast<__mmask16>((1u << nn) - 1);
    for (int r = 0; r < R; ++r) {
      // The exact sum of (a - zp) * b: both terms fit int32 (K is bounded), so does the difference.
      const __m512i sum = _mm512_sub_epi32(acc[r][v], rq[v].zp_bsum);
      const __m512i q0 = requant8(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(sum)), rq[v], 0, zp, lo, hi);
      const __m512i q1 = requant8(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(sum, 1)), rq[v], 1, zp, lo, hi);
      const __m128i bytes = _mm_unpacklo_epi64(_mm512_cvtepi64_epi8(q0), _mm512_cvtepi64_epi8(q1));
      _mm_mask_storeu_epi8(p.c + (m0 + r) * p.ldc + n0 + 16 * v, store_mask, bytes);
    }
  }
}

template <int NV>
void run_blocks(const QGemmParams& p, const int32_t* packed, int64_t block_stride, const Requant16* rq, int64_t K4,
                int64_t n0) {
  int64_t m = 0;
  for (; m + 4 <= p.M; m += 4) tile<4, NV>(p, packed, block_stride, rq, K4, m, n0);
  for (; m < p.M; ++m) tile<1, NV>(p, packed, block_stride, rq, K4, m, n0);
}

}  // namespace

namespace {

/// [NB][K4][16 channels][4 bytes] (zero-padded), then the NB * 16 channel sums.
void pack_into(std::vector<int32_t>& out, const int8_t* b0, int64_t ldb, int64_t N, int64_t K) {
  const int64_t K4 = (K + 3) / 4, NB = (N + 15) / 16;
  out.assign(NB * K4 * 16 + NB * 16, 0);
  int32_t* bsum = out.data() + NB * K4 * 16;
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* b = b0 + n * ldb;
    int32_t* dst = out.data() + (n / 16) * K4 * 16 + (n % 16);
    int32_t s = 0;
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      uint8_t t[4] = {0, 0, 0, 0};
      for (int i = 0; i < 4 && 4 * k4 + i < K; ++i) {
        t[i] = static_cast<uint8_t>(b[4 * k4 + i]);
        s += b[4 * k4 + i];
      }
      __builtin_memcpy(dst + k4 * 16, t, 4);
    }
    bsum[n] = s;
  }
}

}  // namespace

std::vector<int32_t> qgemm_pack__avx512vnni_4x64(const int8_t* b, int64_t ldb, int64_t N, int64_t K) {
  std::vector<int32_t> out;
  pack_into(out, b, ldb, N, K);
  return out;
}

void qu8s8_gemm_requant__avx512vnni_4x64(const QGemmParams& p) {
  if (p.M == 0 || p.N == 0) return;
  const int64_t K4 = (p.K + 3) / 4, NB = (p.N + 15) / 16;
  const int32_t* base = p.b_packed;
  if (!base) {
    thread_local std::vector<int32_t> tl;
    pack_into(tl, p.b, p.ldb, p.N, p.K);
    base = tl.data();
  }
  const int32_t* packed = base;
  const int32_t* bsum = base + NB * K4 * 16;
  // Up to 4 blocks of 16 channels per pass over the rows.
  for (int64_t nb = 0; nb < NB; nb += 4) {
    const int64_t nv = std::min<int64_t>(4, NB - nb);
    Requant16 rq[4];
    for (int64_t v = 0; v < nv; ++v) rq[v] = make_requant(p, bsum + (nb + v) * 16, (nb + v) * 16);
    const int32_t* pk = packed + nb * K4 * 16;
    const int64_t stride = K4 * 16;
    switch (nv) {
      case 4: run_blocks<4>(p, pk, stride, rq, K4, nb * 16); break;
      case 3: run_blocks<3>(p, pk, stride, rq, K4, nb * 16); break;
      case 2: run_blocks<2>(p, pk, stride, rq, K4, nb * 16); break;
      default: run_blocks<1>(p, pk, stride, rq, K4, nb * 16); break;
    }
  }
}

}  // namespace qforge::quant::kernels
