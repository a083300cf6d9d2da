#pragma once
// The split form of qmath's add rule, shared by the SIMD add kernels (plain
// C++: no ISA flags needed). Not installed.
//
// For shifts 17 <= s <= 37, each multiplier splits as m = mh * 2^16 + ml with
// ml in [-2^15, 2^15) and mh < 2^15 (unless m is within 2^15 of 2^31), so
// that the codes, interleaved as int16 pairs (a, b), meet the multiplier
// pairs (ml_a, ml_b) and (mh_a, mh_b) in 16-bit multiply-adds with exact
// 32-bit sums:
//   L = a * ml_a + b * ml_b - (zp_a * ml_a + zp_b * ml_b)   (|L| < 2^25)
//   H = the same with mh                                      (|H| < 2^25)
// and the rule's exact sum is v = H * 2^16 + L. With u = s - 16,
// Kh = 2^(u-1) - 1 and K = 2^(s-1) - 1 = Kh * 2^16 + 0xFFFF, the rounding
// half to even is
//   floor((v + K + odd) / 2^s) = floor((H + Kh + floor((L + 0xFFFF + odd) / 2^16)) / 2^u)
// (nested floors), odd being the parity of floor(v / 2^s). That parity only
// matters on a tie, v = (2q + 1) * 2^(s-1), where L is a multiple of 2^16,
// so (L + 0xFFFF) >> 16 is exact there and bit u of
//   T = H + Kh + zp_out * 2^u + ((L + 0xFFFF) >> 16) = (q + zp_out) * 2^u + 2^u - 1
// is the parity of q + zp_out. Elsewhere any odd gives the same result.
// The sums start at the constant terms (l0: 0xFFFF in L; h0: Kh and
// zp_out * 2^u in H, below 2^30 as u <= 21), so that a code is
//   t = h + (l >> 16);  odd = bit u of t, flipped when zp_out is odd;
//   code = (h + ((l + odd) >> 16)) >> u,
// before the clamp to [out_lo, out_hi].
#include <cstdint>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

struct AddSplit {
  /// (ml_a, ml_b) and (mh_a, mh_b) as int16 pairs, a in the low half.
  int32_t m_lo = 0, m_hi = 0;
  /// The starting sums of L and H.
  int32_t l0 = 0, h0 = 0;
  /// u = s - 16, and 2^u (the parity bit).
  int32_t u = 0, bit = 0;
  /// The output zero point is odd: odd = bit u of t is clear.
  bool zp_odd = false;
};

/// The split constants of p, or false when the form does not apply (the
/// shift is outside [17, 37], or a multiplier's high half would not fit int16).
inline bool add_split(const QAddParams& p, AddSplit* out) {
  const auto low = [](int64_t v) { return (v + 0x8000) % 0x10000 - 0x8000; };
  const int64_t la = low(p.m.a), lb = low(p.m.b), ha = (p.m.a - la) >> 16, hb = (p.m.b - lb) >> 16;
  if (p.m.shift < 17 || p.m.shift > 37 || ha >= 0x8000 || hb >= 0x8000) return false;
  const auto pair = [](int64_t x, int64_t y) {
    return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(x)) |
                                (static_cast<uint32_t>(static_cast<uint16_t>(y)) << 16));
  };
  AddSplit& c = *out;
  c.u = p.m.shift - 16;
  c.m_lo = pair(la, lb);
  c.m_hi = pair(ha, hb);
  c.l0 = static_cast<int32_t>(0xFFFF - p.a_zero_point * la - p.b_zero_point * lb);
  c.h0 = static_cast<int32_t>(-p.a_zero_point * ha - p.b_zero_point * hb + ((int64_t{1} << (c.u - 1)) - 1) +
                              (static_cast<int64_t>(p.out_zero_point) << c.u));
  c.bit = int32_t{1} << c.u;
  c.zp_odd = (p.out_zero_point & 1) != 0;
  return true;
}

}  // namespace qforge::quant::kernels
