// NEON depthwise convolution: 8 channels per step. Input codes minus the zero
// point ([-255, 255]) and weights fit int16; vmlal_s16 / vmlal_high_s16
// accumulate their products exactly into int32 lanes. The window sums are
// requantized per channel with qmath's rule. A channel tail goes through
// zero-padded copies.
#include <arm_neon.h>

#include <cstring>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

void qu8s8_dwconv_requant__neon_8c(const QDwParams& p) {
  const int16x8_t xzp = vdupq_n_s16(static_cast<int16_t>(p.x_zero_point));
  int32_t sums[8];
  for (int64_t oh = p.oh_begin; oh < p.oh_end; ++oh) {
    const int64_t ih0 = oh * p.stride_h - p.pad_h;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t iw0 = ow * p.stride_w - p.pad_w;
      uint8_t* out = p.y + (oh * p.OW + ow) * p.C;
      for (int64_t c0 = 0; c0 < p.C; c0 += 8) {
        const int64_t nn = std::min<int64_t>(8, p.C - c0);
        int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
        for (int64_t i = 0; i < p.KH; ++i) {
          const int64_t ih = ih0 + i * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t j = 0; j < p.KW; ++j) {
            const int64_t iw = iw0 + j * p.dil_w;
            if (iw < 0 || iw >= p.W) continue;
            uint8_t xb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int8_t wb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            std::memcpy(xb, p.x + (ih * p.W + iw) * p.C + c0, static_cast<size_t>(nn));
            std::memcpy(wb, p.w + (i * p.KW + j) * p.C + c0, static_cast<size_t>(nn));
            const int16x8_t xs = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vld1_u8(xb))), xzp);
            const int16x8_t ws = vmovl_s8(vld1_s8(wb));
            lo = vmlal_s16(lo, vget_low_s16(xs), vget_low_s16(ws));
            hi = vmlal_high_s16(hi, xs, ws);
          }
        }
        vst1q_s32(sums, lo);
        vst1q_s32(sums + 4, hi);
        for (int64_t k = 0; k < nn; ++k) out[c0 + k] = finish_dw(p, c0 + k, sums[k]);
      }
    }
  }
}

}  // namespace qforge::quant::kernels
