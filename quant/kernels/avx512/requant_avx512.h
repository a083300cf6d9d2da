#pragma once
// Vectorized requantization for the AVX-512 kernels (GEMM and depthwise):
// qmath's requantize() exactly, the 64-bit products on 8 int64 lanes at a
// time (requant8 for depthwise, requant16 for a GEMM block of 16 channels). Include only from
// files compiled with the AVX-512 flags.
#include <immintrin.h>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {
namespace {

/// Per-channel requantization constants of one block of 16 channels, as two
/// halves of 8 int64 lanes.
struct Requant16 {
  __m512i zp_bsum;  // a_zero_point * sum_k b, int32 lanes
  __m512i bias[2], mult[2], shift[2], half_m1[2];  // half_m1: 2^(shift - 1) - 1
  /// (bias - a_zero_point * sum_k b) wrapped to int32 lanes, and whether
  /// every channel's accumulator provably fits int32 (K * 255 * 128 + |bias|
  /// < 2^31): then the raw sums plus offset32, in wrapping int32 arithmetic,
  /// are the exact accumulators and no saturation is needed.
  __m512i offset32;
  bool exact32 = false;
  __m512i bit[2];  // 2^shift: the parity bit of floor(v / 2^shift)
  /// Every channel's shift is >= 31 (its multiplier below 1), and exact32:
  /// then every rounded value fits int32 and requant16 works on the even and
  /// odd dword lanes in place (constants of channels 0, 2, ..., 14 in
  /// *_even, 1, 3, ..., 15 in *_odd) instead of widening to int64 lanes.
  bool narrow = false;
  __m512i mult_even, mult_odd, shift_even, shift_odd, half_m1_even, half_m1_odd, bit_even, bit_odd;
};

inline Requant16 make_requant(const QGemmParams& p, const int32_t* bsum, int64_t n0) {
  alignas(64) int32_t zb[16], off[16];
  alignas(64) int64_t bias[16], mult[16], shift[16], half_m1[16], bit[16];
  const int64_t max_dot = p.K * 255 * 128;
  bool exact32 = true;
  for (int j = 0; j < 16; ++j) {
    const int64_t n = n0 + j;
    const bool valid = n < p.N;
    zb[j] = p.a_zero_point * bsum[j];
    bias[j] = valid && p.bias ? p.bias[n] : 0;
    const bool rq = valid && !p.c32;  // the int32 mode has no multipliers
    mult[j] = rq ? p.requant[n].multiplier : (1 << 30);
    shift[j] = rq ? p.requant[n].shift : 31;
    half_m1[j] = (int64_t{1} << (shift[j] - 1)) - 1;
    bit[j] = int64_t{1} << shift[j];
    off[j] = static_cast<int32_t>(static_cast<uint32_t>(bias[j] - int64_t{p.a_zero_point} * bsum[j]));
    exact32 = exact32 && max_dot + (bias[j] < 0 ? -bias[j] : bias[j]) <= INT32_MAX;
  }
  Requant16 r;
  r.zp_bsum = _mm512_load_si512(zb);
  r.offset32 = _mm512_load_si512(off);
  r.exact32 = exact32;
  bool narrow = exact32;
  alignas(64) int64_t lanes[8][8];  // mult, shift, half_m1, bit: even, odd
  for (int j = 0; j < 8; ++j) {
    narrow = narrow && shift[2 * j] >= 31 && shift[2 * j + 1] >= 31;
    lanes[0][j] = mult[2 * j], lanes[1][j] = mult[2 * j + 1];
    lanes[2][j] = shift[2 * j], lanes[3][j] = shift[2 * j + 1];
    lanes[4][j] = half_m1[2 * j], lanes[5][j] = half_m1[2 * j + 1];
    lanes[6][j] = bit[2 * j], lanes[7][j] = bit[2 * j + 1];
  }
  r.narrow = narrow;
  r.mult_even = _mm512_load_si512(lanes[0]);
  r.mult_odd = _mm512_load_si512(lanes[1]);
  r.shift_even = _mm512_load_si512(lanes[2]);
  r.shift_odd = _mm512_load_si512(lanes[3]);
  r.half_m1_even = _mm512_load_si512(lanes[4]);
  r.half_m1_odd = _mm512_load_si512(lanes[5]);
  r.bit_even = _mm512_load_si512(lanes[6]);
  r.bit_odd = _mm512_load_si512(lanes[7]);
  for (int h = 0; h < 2; ++h) {
    r.bias[h] = _mm512_load_si512(bias + 8 * h);
    r.mult[h] = _mm512_load_si512(mult + 8 * h);
    r.shift[h] = _mm512_load_si512(shift + 8 * h);
    r.half_m1[h] = _mm512_load_si512(half_m1 + 8 * h);
    r.bit[h] = _mm512_load_si512(bit + 8 * h);
  }
  return r;
}

/// requantize() of 8 exact int32 sums (in int64 lanes) for 8 channels.
/// Rounding half to even in one step: with q = floor(v / 2^s) and its parity
/// odd = q & 1, round_half_even(v / 2^s) = floor((v + 2^(s-1) - 1 + odd) / 2^s)
/// (the remainder r rounds up exactly when r > half, or r == half and q is
/// odd). |v| < 2^62, so the sum cannot overflow.
inline __m512i requant8(__m512i sum, const Requant16& r, int h, __m512i zp, __m512i lo, __m512i hi) {
  const __m512i i32min = _mm512_set1_epi64(INT32_MIN), i32max = _mm512_set1_epi64(INT32_MAX);
  __m512i acc = _mm512_add_epi64(sum, r.bias[h]);
  acc = _mm512_min_epi64(_mm512_max_epi64(acc, i32min), i32max);
  const __m512i prod = _mm512_mul_epi32(acc, r.mult[h]);  // low 32 bits of each lane, signed: exact
  const __m512i odd = _mm512_and_si512(_mm512_srav_epi64(prod, r.shift[h]), _mm512_set1_epi64(1));
  __m512i q = _mm512_srav_epi64(_mm512_add_epi64(_mm512_add_epi64(prod, r.half_m1[h]), odd), r.shift[h]);
  q = _mm512_add_epi64(q, zp);
  return _mm512_min_epi64(_mm512_max_epi64(q, lo), hi);
}

/// round_half_even(acc * multiplier / 2^shift) of 8 int32 accumulators (in
/// int64 lanes), the same one-step rounding as requant8, with the parity bit
/// tested directly (vptestmq) instead of shifted out.
inline __m512i round8(__m512i acc, const Requant16& r, int h) {
  const __m512i prod = _mm512_mul_epi32(acc, r.mult[h]);
  const __mmask8 odd = _mm512_test_epi64_mask(prod, r.bit[h]);
  const __m512i v = _mm512_mask_add_epi64(_mm512_add_epi64(prod, r.half_m1[h]), odd,
                                          _mm512_add_epi64(prod, r.half_m1[h]), _mm512_set1_epi64(1));
  return _mm512_srav_epi64(v, r.shift[h]);
}

/// The 16 output codes of 16 raw dot-product sums (int32 lanes, before the
/// zero-point correction) of one block: requantize() for each channel, as
/// bytes. Uses the int32 fast path when r.exact32 holds; otherwise widens
/// first and saturates like saturate_i32. lo_zp/hi_zp are the clamp bounds
/// minus the zero point (int32 lanes), so that the clamp happens before the
/// zero point is added and a huge value cannot overflow.
/// round_half_even(acc * m / 2^s) of the low dwords of 8 int64 lanes (the
/// same one-step rounding as round8; vpmuldq reads only the low dwords).
inline __m512i round_low_dwords(__m512i acc, __m512i mult, __m512i half_m1, __m512i bit, __m512i shift) {
  const __m512i prod = _mm512_mul_epi32(acc, mult);
  const __mmask8 odd = _mm512_test_epi64_mask(prod, bit);
  const __m512i w = _mm512_add_epi64(prod, half_m1);
  return _mm512_srav_epi64(_mm512_mask_add_epi64(w, odd, w, _mm512_set1_epi64(1)), shift);
}

/// requant16 when r.narrow holds: |acc| <= 2^31 and multipliers below 2^31
/// with shifts >= 31, so every rounded value lies in (-2^31, 2^31), the low
/// dword of each int64 result is exact, and the odd lanes' results shift
/// back up into place. For loops that test r.narrow once, outside.
__attribute__((always_inline)) inline __m128i requant16_narrow(__m512i raw, const Requant16& r, __m512i zp32,
                                                               __m512i lo_zp, __m512i hi_zp) {
  const __m512i acc = _mm512_add_epi32(raw, r.offset32);
  const __m512i even = round_low_dwords(acc, r.mult_even, r.half_m1_even, r.bit_even, r.shift_even);
  const __m512i odd = round_low_dwords(_mm512_srli_epi64(acc, 32), r.mult_odd, r.half_m1_odd, r.bit_odd, r.shift_odd);
  __m512i q = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  q = _mm512_min_epi32(_mm512_max_epi32(q, lo_zp), hi_zp);
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(q, zp32));
}

__attribute__((always_inline)) inline __m128i requant16(__m512i raw, const Requant16& r, __m512i zp32, __m512i lo_zp,
                                                        __m512i hi_zp) {
  if (r.narrow) return requant16_narrow(raw, r, zp32, lo_zp, hi_zp);
  __m512i a0, a1;
  if (r.exact32) {
    const __m512i acc = _mm512_add_epi32(raw, r.offset32);
    a0 = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc));
    a1 = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1));
  } else {
    const __m512i i32min = _mm512_set1_epi64(INT32_MIN), i32max = _mm512_set1_epi64(INT32_MAX);
    const __m512i sum = _mm512_sub_epi32(raw, r.zp_bsum);
    a0 = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(sum)), r.bias[0]);
    a1 = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(sum, 1)), r.bias[1]);
    a0 = _mm512_min_epi64(_mm512_max_epi64(a0, i32min), i32max);
    a1 = _mm512_min_epi64(_mm512_max_epi64(a1, i32min), i32max);
  }
  // Saturating narrow to int32 (the clamp below is within [-255, 255]).
  __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtsepi64_epi32(round8(a0, r, 0))),
                                 _mm512_cvtsepi64_epi32(round8(a1, r, 1)), 1);
  q = _mm512_min_epi32(_mm512_max_epi32(q, lo_zp), hi_zp);
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(q, zp32));
}

/// The int32 output mode (QGemmParams::c32) of 16 raw dot-product sums of
/// one block: saturate_i32(sum - zp * sum_k b + bias) per channel, in int64
/// lanes.
inline __m512i acc16(__m512i raw, const Requant16& r) {
  const __m512i i32min = _mm512_set1_epi64(INT32_MIN), i32max = _mm512_set1_epi64(INT32_MAX);
  const __m512i sum = _mm512_sub_epi32(raw, r.zp_bsum);
  __m512i h0 = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(sum)), r.bias[0]);
  __m512i h1 = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(sum, 1)), r.bias[1]);
  h0 = _mm512_min_epi64(_mm512_max_epi64(h0, i32min), i32max);
  h1 = _mm512_min_epi64(_mm512_max_epi64(h1, i32min), i32max);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(h0)), _mm512_cvtepi64_epi32(h1), 1);
}

}  // namespace
}  // namespace qforge::quant::kernels
