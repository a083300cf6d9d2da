#pragma once
// Vectorized requantization for the AVX2 kernels (GEMM and depthwise):
// qmath's requantize() exactly, for blocks of 16 channels whose multipliers
// lie in [2^-23, 1) and whose sums plus bias provably fit int32 (Block::vector;
// other blocks take requantize() per element). Include only from files
// compiled with the AVX2 flags.
#include <immintrin.h>

#include <algorithm>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {
namespace {

/// One block of 16 channels' requantization constants for the vector path.
/// The rounding works on v + 2^62 (see round4), so the outputs come out
/// offset by D = 2^(62 - shift) per channel, and the clamp and zero point
/// absorb that offset.
struct Block {
  /// Every channel: shift in [31, 54] and |sum| + |bias| fits int32.
  bool vector = false;
  /// Per half of 8 channels, int32 lanes: the bias, the clamp bounds plus D
  /// (compared unsigned) and zero point minus D.
  __m256i bias[2], lo_d[2], hi_d[2], zp_d[2];
  /// Per half, int64 lanes of the even and odd channels: multiplier, shift
  /// and 2^(shift - 1) - 1 + 2^62.
  __m256i mult_e[2], mult_o[2], shift_e[2], shift_o[2], add_e[2], add_o[2];
};

/// The constants of channels [n0, n0 + 16) of p (channels past N get
/// harmless ones). The int32 bound is p.K * 255 * 128 + |bias|: K products of
/// |a - zp| <= 255 and |b| <= 128.
inline Block make_block(const QGemmParams& p, int64_t n0) {
  Block blk;
  alignas(32) int32_t bias[16], lo_d[16], hi_d[16], zp_d[16];
  alignas(32) int64_t mult[16], shift[16], add[16];
  const int64_t max_dot = p.K * 255 * 128;
  bool vec = true;
  for (int j = 0; j < 16; ++j) {
    const int64_t n = n0 + j;
    const bool valid = n < p.N;
    const int64_t b = valid && p.bias ? p.bias[n] : 0;
    bias[j] = static_cast<int32_t>(b);
    vec = vec && max_dot + (b < 0 ? -b : b) <= INT32_MAX;
    const bool rq = valid && !p.c32;
    mult[j] = rq ? p.requant[n].multiplier : (1 << 30);
    shift[j] = rq ? p.requant[n].shift : 31;
    vec = vec && shift[j] >= 31 && shift[j] <= 54;
    const int64_t s = std::clamp<int64_t>(shift[j], 31, 54);
    add[j] = (int64_t{1} << (s - 1)) - 1 + (int64_t{1} << 62);
    const int64_t d = int64_t{1} << (62 - s);
    lo_d[j] = static_cast<int32_t>(static_cast<uint32_t>(p.out_lo - p.out_zero_point + d));
    hi_d[j] = static_cast<int32_t>(static_cast<uint32_t>(p.out_hi - p.out_zero_point + d));
    zp_d[j] = static_cast<int32_t>(static_cast<uint32_t>(p.out_zero_point - d));
  }
  blk.vector = vec;
  for (int h = 0; h < 2; ++h) {
    auto load = [&](const int32_t* v) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(v + 8 * h)); };
    blk.bias[h] = load(bias), blk.lo_d[h] = load(lo_d), blk.hi_d[h] = load(hi_d), blk.zp_d[h] = load(zp_d);
    auto pick = [&](const int64_t* v, int odd) {
      const int64_t* q = v + 8 * h + odd;
      return _mm256_set_epi64x(q[6], q[4], q[2], q[0]);
    };
    blk.mult_e[h] = pick(mult, 0), blk.mult_o[h] = pick(mult, 1);
    blk.shift_e[h] = pick(shift, 0), blk.shift_o[h] = pick(shift, 1);
    blk.add_e[h] = pick(add, 0), blk.add_o[h] = pick(add, 1);
  }
  return blk;
}

/// round_half_even(acc * mult / 2^s) + 2^(62 - s) in the low dwords of 4
/// int64 lanes (the acc in their low dwords). qmath's rounding in one step:
/// with q = floor(prod / 2^s) and odd its parity, the result is
/// floor((prod + 2^(s-1) - 1 + odd) / 2^s). AVX2 has no arithmetic 64-bit
/// shift, so 2^62 is added first: |prod| < 2^62 makes the sum non-negative
/// and below 2^64, and a logical shift then floors it. With s in [31, 54] and
/// |acc| < 2^31 the offset result lies in [0, 2^32).
inline __m256i round4(__m256i acc, __m256i mult, __m256i shift, __m256i add) {
  const __m256i prod = _mm256_mul_epi32(acc, mult);
  const __m256i odd = _mm256_and_si256(_mm256_srlv_epi64(prod, shift), _mm256_set1_epi64x(1));
  return _mm256_srlv_epi64(_mm256_add_epi64(_mm256_add_epi64(prod, add), odd), shift);
}

/// The output codes (int32 lanes) of 8 exact sums of half h.
inline __m256i requant8(__m256i sum, const Block& b, int h) {
  const __m256i acc = _mm256_add_epi32(sum, b.bias[h]);
  const __m256i e = round4(acc, b.mult_e[h], b.shift_e[h], b.add_e[h]);
  const __m256i o = round4(_mm256_srli_epi64(acc, 32), b.mult_o[h], b.shift_o[h], b.add_o[h]);
  __m256i q = _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA);
  q = _mm256_min_epu32(_mm256_max_epu32(q, b.lo_d[h]), b.hi_d[h]);
  return _mm256_add_epi32(q, b.zp_d[h]);
}

/// The 16 output codes, as bytes in channel order, of two halves of exact
/// sums (channels 0-7 and 8-15 of the block).
inline __m128i requant16_bytes(__m256i sum0, __m256i sum1, const Block& b) {
  const __m256i q0 = requant8(sum0, b, 0), q1 = requant8(sum1, b, 1);
  // packs interleaves the 128-bit halves; the permute restores channel order.
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

}  // namespace
}  // namespace qforge::quant::kernels
