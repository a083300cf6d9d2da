#pragma once
// Vectorized requantization for the AVX-512 kernels (GEMM and depthwise):
// qmath's requantize() on 8 int64 lanes at a time, exactly. Include only from
// files compiled with the AVX-512 flags.
#include <immintrin.h>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {
namespace {

/// Per-channel requantization constants of one block of 16 channels, as two
/// halves of 8 int64 lanes.
struct Requant16 {
  __m512i zp_bsum;  // a_zero_point * sum_k b, int32 lanes
  __m512i bias[2], mult[2], shift[2], half[2];
};

inline Requant16 make_requant(const QGemmParams& p, const int32_t* bsum, int64_t n0) {
  alignas(64) int32_t zb[16];
  alignas(64) int64_t bias[16], mult[16], shift[16], half[16];
  for (int j = 0; j < 16; ++j) {
    const int64_t n = n0 + j;
    const bool valid = n < p.N;
    zb[j] = p.a_zero_point * bsum[j];
    bias[j] = valid && p.bias ? p.bias[n] : 0;
    const bool rq = valid && !p.c32;  // the int32 mode has no multipliers
    mult[j] = rq ? p.requant[n].multiplier : (1 << 30);
    shift[j] = rq ? p.requant[n].shift : 31;
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

}  // namespace
}  // namespace qforge::quant::kernels
