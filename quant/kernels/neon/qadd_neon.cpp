// NEON quantized add: qmath's add rule, exactly, 8 codes per step.
// - Shifts 17 to 37 (every practical scale ratio, 2^-7 to 2^14): 32-bit
//   lanes, the multipliers split at bit 16 into widening multiply-adds
//   (vmlal_n_s16; add_split.h).
// - Other shifts: 2 int64 lanes per vector. The zero-point offsets (int16)
//   times the multipliers (< 2^31) are
// exact widening products (vmull_s32); the sum is shifted right
// arithmetically (vshlq_s64 by -shift, a floor), and the remainder against
// half of 2^shift adds the half-to-even correction, as in rounding_shift().
// A tail goes through zero-padded copies.
#include <arm_neon.h>

#include <cstring>

#include "quant/kernels/add_split.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

struct AddConsts {
  int32x2_t ma, mb;
  int64x2_t right, left, half, one, zp, lo, hi;
  int16x8_t zpa, zpb;
};

/// The output codes of 2 lanes: da and db are two int32 offsets each.
inline int64x2_t add2(int32x2_t da, int32x2_t db, const AddConsts& c) {
  const int64x2_t v = vaddq_s64(vmull_s32(da, c.ma), vmull_s32(db, c.mb));
  int64x2_t q = vshlq_s64(v, c.right);  // arithmetic: floor
  const int64x2_t rem = vsubq_s64(v, vshlq_s64(q, c.left));
  const uint64x2_t above = vcgtq_s64(rem, c.half);
  const uint64x2_t tie_odd = vandq_u64(vceqq_s64(rem, c.half), vtstq_s64(q, c.one));
  q = vsubq_s64(q, vreinterpretq_s64_u64(vorrq_u64(above, tie_odd)));  // masks are -1
  q = vaddq_s64(q, c.zp);
  q = vbslq_s64(vcgtq_s64(c.lo, q), c.lo, q);
  q = vbslq_s64(vcgtq_s64(q, c.hi), c.hi, q);
  return q;
}

/// 8 codes of a and b to 8 output codes.
inline uint8x8_t add8(uint8x8_t a, uint8x8_t b, const AddConsts& c) {
  const int16x8_t da = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(a)), c.zpa);
  const int16x8_t db = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(b)), c.zpb);
  const int32x4_t da_lo = vmovl_s16(vget_low_s16(da)), da_hi = vmovl_s16(vget_high_s16(da));
  const int32x4_t db_lo = vmovl_s16(vget_low_s16(db)), db_hi = vmovl_s16(vget_high_s16(db));
  const int64x2_t r0 = add2(vget_low_s32(da_lo), vget_low_s32(db_lo), c);
  const int64x2_t r1 = add2(vget_high_s32(da_lo), vget_high_s32(db_lo), c);
  const int64x2_t r2 = add2(vget_low_s32(da_hi), vget_low_s32(db_hi), c);
  const int64x2_t r3 = add2(vget_high_s32(da_hi), vget_high_s32(db_hi), c);
  // Each lane holds a code in [0, 255]: narrow 64 -> 32 -> 16 -> 8 bits.
  const int32x4_t lo32 = vcombine_s32(vmovn_s64(r0), vmovn_s64(r1));
  const int32x4_t hi32 = vcombine_s32(vmovn_s64(r2), vmovn_s64(r3));
  return vmovn_u16(vreinterpretq_u16_s16(vcombine_s16(vmovn_s32(lo32), vmovn_s32(hi32))));
}

/// Runs block(a, b, y) over the codes 8 at a time, the tail through
/// zero-padded copies.
template <typename Block>
void add_blocks(const QAddParams& p, Block block) {
  int64_t i = 0;
  for (; i + 8 <= p.n; i += 8) vst1_u8(p.y + i, block(vld1_u8(p.a + i), vld1_u8(p.b + i)));
  if (i < p.n) {
    const size_t rest = static_cast<size_t>(p.n - i);
    uint8_t ta[8] = {}, tb[8] = {}, ty[8];
    std::memcpy(ta, p.a + i, rest);
    std::memcpy(tb, p.b + i, rest);
    vst1_u8(ty, block(vld1_u8(ta), vld1_u8(tb)));
    std::memcpy(p.y + i, ty, rest);
  }
}

/// The split form (add_split.h) in registers.
struct SplitConsts {
  int16_t ml_a, ml_b, mh_a, mh_b;
  int32x4_t l0, h0, bit, neg_u;
  uint32x4_t flip;  // all ones when the output zero point is odd
  uint8x8_t lo, hi;
};

/// 4 output codes (unclamped) of 4 codes each of a and b (as int16).
inline int32x4_t split4(int16x4_t a, int16x4_t b, const SplitConsts& c) {
  int32x4_t l = vmlal_n_s16(vmlal_n_s16(c.l0, a, c.ml_a), b, c.ml_b);
  const int32x4_t h = vmlal_n_s16(vmlal_n_s16(c.h0, a, c.mh_a), b, c.mh_b);
  const uint32x4_t odd = veorq_u32(vtstq_s32(vsraq_n_s32(h, l, 16), c.bit), c.flip);  // -1 where odd
  l = vsubq_s32(l, vreinterpretq_s32_u32(odd));
  return vshlq_s32(vsraq_n_s32(h, l, 16), c.neg_u);
}

/// 8 codes: saturating narrows to [0, 255], then the clamp to [lo, hi].
inline uint8x8_t add8_split(uint8x8_t a, uint8x8_t b, const SplitConsts& c) {
  const int16x8_t a16 = vreinterpretq_s16_u16(vmovl_u8(a)), b16 = vreinterpretq_s16_u16(vmovl_u8(b));
  const int32x4_t r0 = split4(vget_low_s16(a16), vget_low_s16(b16), c);
  const int32x4_t r1 = split4(vget_high_s16(a16), vget_high_s16(b16), c);
  const uint8x8_t y = vqmovun_s16(vcombine_s16(vqmovn_s32(r0), vqmovn_s32(r1)));
  return vmin_u8(vmax_u8(y, c.lo), c.hi);
}

void add_blocks_split(const QAddParams& p, const AddSplit& s) {
  SplitConsts c;
  c.ml_a = static_cast<int16_t>(s.m_lo & 0xFFFF);
  c.ml_b = static_cast<int16_t>(static_cast<uint32_t>(s.m_lo) >> 16);
  c.mh_a = static_cast<int16_t>(s.m_hi & 0xFFFF);
  c.mh_b = static_cast<int16_t>(static_cast<uint32_t>(s.m_hi) >> 16);
  c.l0 = vdupq_n_s32(s.l0);
  c.h0 = vdupq_n_s32(s.h0);
  c.bit = vdupq_n_s32(s.bit);
  c.neg_u = vdupq_n_s32(-s.u);
  c.flip = vdupq_n_u32(s.zp_odd ? ~0u : 0u);
  c.lo = vdup_n_u8(static_cast<uint8_t>(p.out_lo));
  c.hi = vdup_n_u8(static_cast<uint8_t>(p.out_hi));
  add_blocks(p, [&c](uint8x8_t a, uint8x8_t b) { return add8_split(a, b, c); });
}

}  // namespace

void qu8_add__neon_8(const QAddParams& p) {
  AddSplit split;
  if (add_split(p, &split)) {
    add_blocks_split(p, split);
    return;
  }
  AddConsts c;
  c.ma = vdup_n_s32(static_cast<int32_t>(p.m.a));
  c.mb = vdup_n_s32(static_cast<int32_t>(p.m.b));
  c.right = vdupq_n_s64(-p.m.shift);
  c.left = vdupq_n_s64(p.m.shift);
  c.half = vdupq_n_s64(int64_t{1} << (p.m.shift - 1));
  c.one = vdupq_n_s64(1);
  c.zp = vdupq_n_s64(p.out_zero_point);
  c.lo = vdupq_n_s64(p.out_lo);
  c.hi = vdupq_n_s64(p.out_hi);
  c.zpa = vdupq_n_s16(static_cast<int16_t>(p.a_zero_point));
  c.zpb = vdupq_n_s16(static_cast<int16_t>(p.b_zero_point));
  add_blocks(p, [&c](uint8x8_t a, uint8x8_t b) { return add8(a, b, c); });
}

}  // namespace qforge::quant::kernels
