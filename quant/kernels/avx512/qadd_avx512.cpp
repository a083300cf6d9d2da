// AVX-512 quantized add: qmath's add rule on 8 int64 lanes at a time, 16
// codes per step. The offsets from the zero points (9-bit signed) times the
// multipliers (< 2^31) are exact 64-bit products (vpmuldq); their sum (below
// 2^40) is shifted right arithmetically (floor), and the remainder against
// half of 2^shift adds the half-to-even correction, exactly as
// rounding_shift() does. A tail of fewer than 16 codes uses masked loads and
// stores. Shifts of 10 and more (every practical scale ratio: below 2^21)
// take a faster form in 32-bit lanes (add16_narrow).
#include <immintrin.h>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

struct AddConsts {
  __m512i zpa, zpb, ma, mb, half, one, zp, lo, hi;
  __m128i shift;
  int32_t s;
};

/// The output codes (in int64 lanes) of 8 input codes each of a and b.
inline __m512i add8(__m128i a8, __m128i b8, const AddConsts& c) {
  const __m512i da = _mm512_sub_epi64(_mm512_cvtepu8_epi64(a8), c.zpa);
  const __m512i db = _mm512_sub_epi64(_mm512_cvtepu8_epi64(b8), c.zpb);
  const __m512i v = _mm512_add_epi64(_mm512_mul_epi32(da, c.ma), _mm512_mul_epi32(db, c.mb));
  __m512i q = _mm512_sra_epi64(v, c.shift);
  const __m512i rem = _mm512_sub_epi64(v, _mm512_sll_epi64(q, c.shift));
  const __mmask8 above = _mm512_cmpgt_epi64_mask(rem, c.half);
  const __mmask8 tie_odd = _mm512_mask_test_epi64_mask(_mm512_cmpeq_epi64_mask(rem, c.half), q, c.one);
  q = _mm512_mask_add_epi64(q, above | tie_odd, q, c.one);
  q = _mm512_add_epi64(q, c.zp);
  return _mm512_min_epi64(_mm512_max_epi64(q, c.lo), c.hi);
}

/// 16 codes: two halves of 8 lanes, packed back to bytes.
inline __m128i add16(__m128i a, __m128i b, const AddConsts& c) {
  const __m512i lo = add8(a, b, c);
  const __m512i hi = add8(_mm_srli_si128(a, 8), _mm_srli_si128(b, 8), c);
  return _mm_unpacklo_epi64(_mm512_cvtepi64_epi8(lo), _mm512_cvtepi64_epi8(hi));
}

/// The same rule on 16 codes in 32-bit lanes, for shift >= 10: the offsets
/// da, db (9-bit signed) sit in 16 dword lanes; vpmuldq multiplies the even
/// lanes, and the odd lanes after a 32-bit right shift, into exact int64
/// products. Each sum v (|v| < 2^40) rounds half to even in one step,
///   round_half_even(v / 2^s) = (v + 2^(s-1) - 1 + odd) >> s,
/// odd being bit s of v (the parity of floor(v / 2^s)); with s >= 10 the
/// result is below 2^31 in magnitude, so its low dword is exact and the two
/// halves interleave back into dwords for the clamp and the zero point.
struct NarrowConsts {
  __m512i zpa, zpb, ma, mb, half_m1, bit, zp, lo, hi;
  __m128i shift;
};

inline __m512i round_pair(__m512i da, __m512i db, const NarrowConsts& c) {
  const __m512i v = _mm512_add_epi64(_mm512_mul_epi32(da, c.ma), _mm512_mul_epi32(db, c.mb));
  const __mmask8 odd = _mm512_test_epi64_mask(v, c.bit);
  const __m512i w = _mm512_add_epi64(v, c.half_m1);
  return _mm512_sra_epi64(_mm512_mask_add_epi64(w, odd, w, _mm512_set1_epi64(1)), c.shift);
}

inline __m128i add16_narrow(__m128i a, __m128i b, const NarrowConsts& c) {
  const __m512i da = _mm512_sub_epi32(_mm512_cvtepu8_epi32(a), c.zpa);
  const __m512i db = _mm512_sub_epi32(_mm512_cvtepu8_epi32(b), c.zpb);
  const __m512i even = round_pair(da, db, c);
  const __m512i odd = round_pair(_mm512_srli_epi64(da, 32), _mm512_srli_epi64(db, 32), c);
  __m512i q = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  q = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(q, c.zp), c.lo), c.hi);
  return _mm512_cvtepi32_epi8(q);
}

/// Runs add16(a, b) over the codes 16 at a time, the tail with masked loads
/// and stores.
template <typename Add16>
inline void add_blocks(const QAddParams& p, Add16 add16) {
  int64_t i = 0;
  for (; i + 16 <= p.n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p.a + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p.b + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p.y + i), add16(a, b));
  }
  if (i < p.n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (p.n - i)) - 1);
    const __m128i a = _mm_maskz_loadu_epi8(k, p.a + i);
    const __m128i b = _mm_maskz_loadu_epi8(k, p.b + i);
    _mm_mask_storeu_epi8(p.y + i, k, add16(a, b));
  }
}

}  // namespace

void qu8_add__avx512_16(const QAddParams& p) {
  if (p.m.shift >= 10) {
    NarrowConsts c;
    c.zpa = _mm512_set1_epi32(p.a_zero_point);
    c.zpb = _mm512_set1_epi32(p.b_zero_point);
    c.ma = _mm512_set1_epi64(p.m.a);
    c.mb = _mm512_set1_epi64(p.m.b);
    c.half_m1 = _mm512_set1_epi64((int64_t{1} << (p.m.shift - 1)) - 1);
    c.bit = _mm512_set1_epi64(int64_t{1} << p.m.shift);
    c.zp = _mm512_set1_epi32(p.out_zero_point);
    c.lo = _mm512_set1_epi32(p.out_lo);
    c.hi = _mm512_set1_epi32(p.out_hi);
    c.shift = _mm_cvtsi32_si128(p.m.shift);
    add_blocks(p, [&c](__m128i a, __m128i b) { return add16_narrow(a, b, c); });
    return;
  }
  AddConsts c;
  c.zpa = _mm512_set1_epi64(p.a_zero_point);
  c.zpb = _mm512_set1_epi64(p.b_zero_point);
  c.ma = _mm512_set1_epi64(p.m.a);
  c.mb = _mm512_set1_epi64(p.m.b);
  c.half = _mm512_set1_epi64(int64_t{1} << (p.m.shift - 1));
  c.one = _mm512_set1_epi64(1);
  c.zp = _mm512_set1_epi64(p.out_zero_point);
  c.lo = _mm512_set1_epi64(p.out_lo);
  c.hi = _mm512_set1_epi64(p.out_hi);
  c.shift = _mm_cvtsi32_si128(p.m.shift);
  add_blocks(p, [&c](__m128i a, __m128i b) { return add16(a, b, c); });
}

}  // namespace qforge::quant::kernels
