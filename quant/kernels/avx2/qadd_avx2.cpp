// AVX2 quantized add: qmath's add rule, exactly.
// - Shifts 17 to 37 (every practical scale ratio, 2^-7 to 2^14): 32 codes per
//   step in 32-bit lanes, the multipliers split at bit 16 into vpmaddwd
//   (add_split.h).
// - Other shifts: 4 int64 lanes at a time, 16 codes per step. The products of
//   the zero-point offsets and the multipliers are exact (vpmuldq). AVX2 has no 64-bit arithmetic shift, so the floor of
// v / 2^shift is built from the logical one: for v < 0, ~v >= 0 and
// ~(~v >> s) = floor(v / 2^s). The remainder then decides the rounding, ties
// to even, as in rounding_shift(). A tail goes through zero-padded copies.
#include <immintrin.h>

#include <cstring>

#include "quant/kernels/add_split.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

struct AddConsts {
  __m256i zpa, zpb, ma, mb, half, one, zp, lo, hi;
  __m128i shift;
};

/// The output codes (in int64 lanes) of 4 codes of a and b (the low 4 bytes).
inline __m256i add4(__m128i a4, __m128i b4, const AddConsts& c) {
  const __m256i da = _mm256_sub_epi64(_mm256_cvtepu8_epi64(a4), c.zpa);
  const __m256i db = _mm256_sub_epi64(_mm256_cvtepu8_epi64(b4), c.zpb);
  const __m256i v = _mm256_add_epi64(_mm256_mul_epi32(da, c.ma), _mm256_mul_epi32(db, c.mb));
  const __m256i neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);  // all ones where v < 0
  __m256i q = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(v, neg), c.shift), neg);
  const __m256i rem = _mm256_sub_epi64(v, _mm256_sll_epi64(q, c.shift));
  const __m256i above = _mm256_cmpgt_epi64(rem, c.half);
  const __m256i tie_odd = _mm256_and_si256(_mm256_cmpeq_epi64(rem, c.half),
                                           _mm256_cmpeq_epi64(_mm256_and_si256(q, c.one), c.one));
  q = _mm256_sub_epi64(q, _mm256_or_si256(above, tie_odd));  // masks are -1: subtracting adds 1
  q = _mm256_add_epi64(q, c.zp);
  // Clamp (AVX2 has no 64-bit min/max): compare and blend.
  q = _mm256_blendv_epi8(q, c.lo, _mm256_cmpgt_epi64(c.lo, q));
  q = _mm256_blendv_epi8(q, c.hi, _mm256_cmpgt_epi64(q, c.hi));
  return q;
}

/// 16 codes: four groups of 4 lanes, packed back to bytes (each code is in
/// [0, 255], the low byte of its lane).
inline __m128i add16(__m128i a, __m128i b, const AddConsts& c) {
  const __m256i r0 = add4(a, b, c);
  const __m256i r1 = add4(_mm_srli_si128(a, 4), _mm_srli_si128(b, 4), c);
  const __m256i r2 = add4(_mm_srli_si128(a, 8), _mm_srli_si128(b, 8), c);
  const __m256i r3 = add4(_mm_srli_si128(a, 12), _mm_srli_si128(b, 12), c);
  // Lanes 0..3 of each hold one code in their low 32 bits: gather them as
  // int32 (0, 2, 4, 6), then pack to 16 and 8 bits.
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m128i d0 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r0, pick));
  const __m128i d1 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r1, pick));
  const __m128i d2 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r2, pick));
  const __m128i d3 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r3, pick));
  return _mm_packus_epi16(_mm_packs_epi32(d0, d1), _mm_packs_epi32(d2, d3));
}

/// Runs block(a, b, y) over the codes W at a time (block reads and writes
/// W codes at the given pointers), the tail through zero-padded copies.
template <int W, typename Block>
void add_blocks(const QAddParams& p, Block block) {
  int64_t i = 0;
  for (; i + W <= p.n; i += W) block(p.a + i, p.b + i, p.y + i);
  if (i < p.n) {
    const size_t rest = static_cast<size_t>(p.n - i);
    alignas(32) uint8_t ta[W] = {}, tb[W] = {}, ty[W];
    std::memcpy(ta, p.a + i, rest);
    std::memcpy(tb, p.b + i, rest);
    block(ta, tb, ty);
    std::memcpy(p.y + i, ty, rest);
  }
}

/// The split form (add_split.h) in registers.
struct SplitConsts {
  __m256i m_lo, m_hi, l0, h0, bit, parity_ref, lo, hi;
  __m128i u;
};

/// 8 output codes (dwords, unclamped) of 8 (a, b) int16 pairs. odd is a
/// 0 / -1 mask: bit u of t compared with the value that means odd.
inline __m256i split8(__m256i pairs, const SplitConsts& c) {
  const __m256i l = _mm256_add_epi32(c.l0, _mm256_madd_epi16(pairs, c.m_lo));
  const __m256i h = _mm256_add_epi32(c.h0, _mm256_madd_epi16(pairs, c.m_hi));
  const __m256i t = _mm256_add_epi32(h, _mm256_srai_epi32(l, 16));
  const __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(t, c.bit), c.parity_ref);
  return _mm256_sra_epi32(_mm256_add_epi32(h, _mm256_srai_epi32(_mm256_sub_epi32(l, odd), 16)), c.u);
}

/// 32 codes: the unpacks interleave a and b as int16 pairs, in the lane
/// order that vpackssdw and vpackuswb undo; the packs saturate to [0, 255],
/// then the clamp to [lo, hi] runs on bytes.
inline __m256i add32_split(__m256i a, __m256i b, const SplitConsts& c) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i ab0 = _mm256_unpacklo_epi8(a, b), ab1 = _mm256_unpackhi_epi8(a, b);
  const __m256i r0 = split8(_mm256_unpacklo_epi8(ab0, zero), c);
  const __m256i r1 = split8(_mm256_unpackhi_epi8(ab0, zero), c);
  const __m256i r2 = split8(_mm256_unpacklo_epi8(ab1, zero), c);
  const __m256i r3 = split8(_mm256_unpackhi_epi8(ab1, zero), c);
  const __m256i y = _mm256_packus_epi16(_mm256_packs_epi32(r0, r1), _mm256_packs_epi32(r2, r3));
  return _mm256_min_epu8(_mm256_max_epu8(y, c.lo), c.hi);
}

void add_blocks_split(const QAddParams& p, const AddSplit& s) {
  SplitConsts c;
  c.m_lo = _mm256_set1_epi32(s.m_lo);
  c.m_hi = _mm256_set1_epi32(s.m_hi);
  c.l0 = _mm256_set1_epi32(s.l0);
  c.h0 = _mm256_set1_epi32(s.h0);
  c.bit = _mm256_set1_epi32(s.bit);
  c.parity_ref = _mm256_set1_epi32(s.zp_odd ? 0 : s.bit);
  c.lo = _mm256_set1_epi8(static_cast<char>(p.out_lo));
  c.hi = _mm256_set1_epi8(static_cast<char>(p.out_hi));
  c.u = _mm_cvtsi32_si128(s.u);
  add_blocks<32>(p, [&c](const uint8_t* a, const uint8_t* b, uint8_t* y) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y),
                        add32_split(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)),
                                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), c));
  });
}

}  // namespace

void qu8_add__avx2_4l(const QAddParams& p) {
  AddSplit split;
  if (add_split(p, &split)) {
    add_blocks_split(p, split);
    return;
  }
  AddConsts c;
  c.zpa = _mm256_set1_epi64x(p.a_zero_point);
  c.zpb = _mm256_set1_epi64x(p.b_zero_point);
  c.ma = _mm256_set1_epi64x(p.m.a);
  c.mb = _mm256_set1_epi64x(p.m.b);
  c.half = _mm256_set1_epi64x(int64_t{1} << (p.m.shift - 1));
  c.one = _mm256_set1_epi64x(1);
  c.zp = _mm256_set1_epi64x(p.out_zero_point);
  c.lo = _mm256_set1_epi64x(p.out_lo);
  c.hi = _mm256_set1_epi64x(p.out_hi);
  c.shift = _mm_cvtsi32_si128(p.m.shift);
  add_blocks<16>(p, [&c](const uint8_t* a, const uint8_t* b, uint8_t* y) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y), add16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)),
                                                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), c));
  });
}

}  // namespace qforge::quant::kernels
