// AVX-512 depthwise convolution: 16 channels per vector. Each tap widens 16
// input codes (minus the zero point) and 16 weights to int32 and multiplies
// them exactly (vpmulld); the sum over the window is exact, and the
// requantization is the GEMM kernel's vectorized rule (requant_avx512.h).
// Channel tails use masked loads and stores.
#include <immintrin.h>

#include <vector>

#include "quant/kernels/avx512/requant_avx512.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

void qu8s8_dwconv_requant__avx512_16c(const QDwParams& p) {
  const int64_t CB = (p.C + 15) / 16;
  // Per-block requantization constants, through the GEMM's builder (input
  // zero point 0 and no weight sums: the zero point is subtracted per tap).
  QGemmParams g;
  g.N = p.C;
  g.bias = p.bias;
  g.requant = p.requant;
  alignas(64) const int32_t no_sums[16] = {};
  std::vector<Requant16> rq;
  rq.reserve(static_cast<size_t>(CB));
  for (int64_t cb = 0; cb < CB; ++cb) rq.push_back(make_requant(g, no_sums, cb * 16));
  const __m512i xzp = _mm512_set1_epi32(p.x_zero_point);
  const __m512i zp = _mm512_set1_epi64(p.out_zero_point), lo = _mm512_set1_epi64(p.out_lo),
                hi = _mm512_set1_epi64(p.out_hi);
  for (int64_t oh = p.oh_begin; oh < p.oh_end; ++oh) {
    const int64_t ih0 = oh * p.stride_h - p.pad_h;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t iw0 = ow * p.stride_w - p.pad_w;
      uint8_t* out = p.y + (oh * p.OW + ow) * p.C;
      for (int64_t cb = 0; cb < CB; ++cb) {
        const int64_t c0 = cb * 16, nn = std::min<int64_t>(16, p.C - c0);
        const __mmask16 mask = static_cast<__mmask16>((1u << nn) - 1);
        __m512i acc = _mm512_setzero_si512();
        for (int64_t i = 0; i < p.KH; ++i) {
          const int64_t ih = ih0 + i * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t j = 0; j < p.KW; ++j) {
            const int64_t iw = iw0 + j * p.dil_w;
            if (iw < 0 || iw >= p.W) continue;
            const __m512i xv = _mm512_sub_epi32(
                _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, p.x + (ih * p.W + iw) * p.C + c0)), xzp);
            const __m512i wv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p.w + (i * p.KW + j) * p.C + c0));
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, wv));
          }
        }
        const __m512i q0 = requant8(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)), rq[cb], 0, zp, lo, hi);
        const __m512i q1 = requant8(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)), rq[cb], 1, zp, lo, hi);
        _mm_mask_storeu_epi8(out + c0, mask, _mm_unpacklo_epi64(_mm512_cvtepi64_epi8(q0), _mm512_cvtepi64_epi8(q1)));
      }
    }
  }
}

}  // namespace qforge::quant::kernels
