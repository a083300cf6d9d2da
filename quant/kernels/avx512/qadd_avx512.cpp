// AVX-512 quantized add: qmath's add rule, exactly, in one of three forms by
// the shift s of the multipliers (the rule needs 40-bit sums: offsets from
// the zero points of 9 bits signed times multipliers below 2^31).
// - 17 <= s <= 37 (every practical scale ratio, 2^-7 to 2^14): 64 codes per
//   step in 32-bit lanes, the multipliers split at bit 16 into vpdpwssd
//   (add_split.h).
// - Other shifts of 10 and more: 16 codes per step, exact 64-bit products
//   (vpmuldq) in the even and odd dword lanes (add16_narrow).
// - Shifts below 10: 8 int64 lanes at a time (add16).
// Tails use masked loads and stores.
#include <immintrin.h>

#include "quant/kernels/add_split.h"
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

/// The split form (add_split.h) in registers.
struct SplitConsts {
  __m512i m_lo, m_hi, l0, h0, bit, lo, hi;
  __m128i u;
};

SplitConsts split_consts(const AddSplit& a, const QAddParams& p) {
  SplitConsts c;
  c.m_lo = _mm512_set1_epi32(a.m_lo);
  c.m_hi = _mm512_set1_epi32(a.m_hi);
  c.l0 = _mm512_set1_epi32(a.l0);
  c.h0 = _mm512_set1_epi32(a.h0);
  c.bit = _mm512_set1_epi32(a.bit);
  c.lo = _mm512_set1_epi8(static_cast<char>(p.out_lo));
  c.hi = _mm512_set1_epi8(static_cast<char>(p.out_hi));
  c.u = _mm_cvtsi32_si128(a.u);
  return c;
}

/// 16 output codes (dwords, unclamped) of 16 (a, b) int16 pairs.
template <bool ZpOdd>
inline __m512i split16(__m512i pairs, const SplitConsts& c) {
  const __m512i l = _mm512_dpwssd_epi32(c.l0, pairs, c.m_lo);
  const __m512i h = _mm512_dpwssd_epi32(c.h0, pairs, c.m_hi);
  const __m512i t = _mm512_add_epi32(h, _mm512_srai_epi32(l, 16));
  const __mmask16 odd = ZpOdd ? _mm512_testn_epi32_mask(t, c.bit) : _mm512_test_epi32_mask(t, c.bit);
  const __m512i l_odd = _mm512_mask_sub_epi32(l, odd, l, _mm512_set1_epi32(-1));
  return _mm512_sra_epi32(_mm512_add_epi32(h, _mm512_srai_epi32(l_odd, 16)), c.u);
}

/// 64 codes: the unpacks interleave a and b as int16 pairs, in the lane
/// order that vpackssdw and vpackuswb undo; the packs saturate to [0, 255],
/// then the clamp to [lo, hi] runs on bytes.
template <bool ZpOdd>
inline __m512i add64_split(__m512i a, __m512i b, const SplitConsts& c) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i ab0 = _mm512_unpacklo_epi8(a, b), ab1 = _mm512_unpackhi_epi8(a, b);
  // Per 128-bit lane: codes 0-3, 4-7, 8-11 and 12-15 as (a, b) int16 pairs.
  const __m512i r0 = split16<ZpOdd>(_mm512_unpacklo_epi8(ab0, zero), c);
  const __m512i r1 = split16<ZpOdd>(_mm512_unpackhi_epi8(ab0, zero), c);
  const __m512i r2 = split16<ZpOdd>(_mm512_unpacklo_epi8(ab1, zero), c);
  const __m512i r3 = split16<ZpOdd>(_mm512_unpackhi_epi8(ab1, zero), c);
  const __m512i y = _mm512_packus_epi16(_mm512_packs_epi32(r0, r1), _mm512_packs_epi32(r2, r3));
  return _mm512_min_epu8(_mm512_max_epu8(y, c.lo), c.hi);
}

template <bool ZpOdd>
void add_blocks_split(const QAddParams& p, const AddSplit& split) {
  const SplitConsts c = split_consts(split, p);
  int64_t i = 0;
  for (; i + 64 <= p.n; i += 64) {
    const __m512i a = _mm512_loadu_si512(p.a + i), b = _mm512_loadu_si512(p.b + i);
    _mm512_storeu_si512(p.y + i, add64_split<ZpOdd>(a, b, c));
  }
  if (i < p.n) {
    const __mmask64 k = (~uint64_t{0}) >> (64 - (p.n - i));
    const __m512i a = _mm512_maskz_loadu_epi8(k, p.a + i), b = _mm512_maskz_loadu_epi8(k, p.b + i);
    _mm512_mask_storeu_epi8(p.y + i, k, add64_split<ZpOdd>(a, b, c));
  }
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
  AddSplit split;
  if (add_split(p, &split)) {
    if (split.zp_odd)
      add_blocks_split<true>(p, split);
    else
      add_blocks_split<false>(p, split);
    return;
  }
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
