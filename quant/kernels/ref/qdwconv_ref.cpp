// Scalar reference of the depthwise convolution: the oracle of the SIMD
// depthwise kernels.
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

void qu8s8_dwconv_requant__ref(const QDwParams& p) {
  for (int64_t oh = p.oh_begin; oh < p.oh_end; ++oh)
    for (int64_t ow = 0; ow < p.OW; ++ow)
      for (int64_t c = 0; c < p.C; ++c) {
        int64_t acc = 0;
        for (int64_t i = 0; i < p.KH; ++i) {
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t j = 0; j < p.KW; ++j) {
            const int64_t iw = ow * p.stride_w - p.pad_w + j * p.dil_w;
            if (iw < 0 || iw >= p.W) continue;
            acc += (static_cast<int32_t>(p.x[(ih * p.W + iw) * p.C + c]) - p.x_zero_point) *
                   p.w[(i * p.KW + j) * p.C + c];
          }
        }
        p.y[(oh * p.OW + ow) * p.C + c] = finish_dw(p, c, acc);
      }
}

}  // namespace qforge::quant::kernels
