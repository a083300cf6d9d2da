// AVX2 depthwise convolution: 8 channels per vector, input codes (minus the
// zero point) and weights widened to int32 and multiplied exactly (vpmulld);
// the window sums are then requantized per channel with qmath's rule, in
// scalar code as in the AVX2 GEMM. A channel tail goes through zero-padded
// copies.
#include <immintrin.h>

#include <cstring>

#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

inline __m256i load8_u8(const uint8_t* p, int64_t n) {
  int64_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(n));
  return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v));
}

inline __m256i load8_s8(const int8_t* p, int64_t n) {
  int64_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(n));
  return _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v));
}

}  // namespace

void qu8s8_dwconv_requant__avx2_8c(const QDwParams& p) {
  const __m256i xzp = _mm256_set1_epi32(p.x_zero_point);
  alignas(32) int32_t sums[8];
  for (int64_t oh = p.oh_begin; oh < p.oh_end; ++oh) {
    const int64_t ih0 = oh * p.stride_h - p.pad_h;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t iw0 = ow * p.stride_w - p.pad_w;
      uint8_t* out = p.y + (oh * p.OW + ow) * p.C;
      for (int64_t c0 = 0; c0 < p.C; c0 += 8) {
        const int64_t nn = std::min<int64_t>(8, p.C - c0);
        __m256i acc = _mm256_setzero_si256();
        for (int64_t i = 0; i < p.KH; ++i) {
          const int64_t ih = ih0 + i * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t j = 0; j < p.KW; ++j) {
            const int64_t iw = iw0 + j * p.dil_w;
            if (iw < 0 || iw >= p.W) continue;
            const __m256i xv = _mm256_sub_epi32(load8_u8(p.x + (ih * p.W + iw) * p.C + c0, nn), xzp);
            const __m256i wv = load8_s8(p.w + (i * p.KW + j) * p.C + c0, nn);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(xv, wv));
          }
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(sums), acc);
        for (int64_t k = 0; k < nn; ++k) out[c0 + k] = finish_dw(p, c0 + k, sums[k]);
      }
    }
  }
}

}  // namespace qforge::quant::kernels
