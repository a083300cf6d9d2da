// AVX2 depthwise convolution: 16 channels per step in two vectors of 8,
// input codes (minus the zero point) and weights widened to int32 and
// multiplied exactly (vpmulld). The window sums are requantized with the
// GEMM's vectorized rule (requant_avx2.h) when the block allows it, else per
// channel with qmath's rule. A channel tail goes through zero-padded copies.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "quant/kernels/avx2/requant_avx2.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {

namespace {

inline __m256i load8_u8(const uint8_t* p, int64_t n) {
  int64_t v = 0;
  if (n > 0) std::memcpy(&v, p, static_cast<size_t>(std::min<int64_t>(n, 8)));
  return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v));
}

inline __m256i load8_s8(const int8_t* p, int64_t n) {
  int64_t v = 0;
  if (n > 0) std::memcpy(&v, p, static_cast<size_t>(std::min<int64_t>(n, 8)));
  return _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v));
}

}  // namespace

void qu8s8_dwconv_requant__avx2_8c(const QDwParams& p) {
  const int64_t CB = (p.C + 15) / 16;
  // Per-block requantization constants through the GEMM's builder: K taps of
  // |x - zp| <= 255 times |w| <= 128 bound the sums as for a GEMM.
  QGemmParams g;
  g.N = p.C;
  g.K = p.KH * p.KW;
  g.bias = p.bias;
  g.requant = p.requant;
  g.out_zero_point = p.out_zero_point;
  g.out_lo = p.out_lo;
  g.out_hi = p.out_hi;
  std::vector<Block> blocks;
  blocks.reserve(static_cast<size_t>(CB));
  for (int64_t cb = 0; cb < CB; ++cb) blocks.push_back(make_block(g, cb * 16));
  const __m256i xzp = _mm256_set1_epi32(p.x_zero_point);
  for (int64_t oh = p.oh_begin; oh < p.oh_end; ++oh) {
    const int64_t ih0 = oh * p.stride_h - p.pad_h;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t iw0 = ow * p.stride_w - p.pad_w;
      uint8_t* out = p.y + (oh * p.OW + ow) * p.C;
      for (int64_t cb = 0; cb < CB; ++cb) {
        const int64_t c0 = cb * 16, nn = std::min<int64_t>(16, p.C - c0);
        __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
        for (int64_t i = 0; i < p.KH; ++i) {
          const int64_t ih = ih0 + i * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t j = 0; j < p.KW; ++j) {
            const int64_t iw = iw0 + j * p.dil_w;
            if (iw < 0 || iw >= p.W) continue;
            const uint8_t* x = p.x + (ih * p.W + iw) * p.C + c0;
            const int8_t* w = p.w + (i * p.KW + j) * p.C + c0;
            // A padding lane multiplies 0 - zp by weight 0: it adds nothing.
            acc0 = _mm256_add_epi32(acc0, _mm256_mullo_epi32(_mm256_sub_epi32(load8_u8(x, nn), xzp), load8_s8(w, nn)));
            if (nn > 8)
              acc1 = _mm256_add_epi32(
                  acc1, _mm256_mullo_epi32(_mm256_sub_epi32(load8_u8(x + 8, nn - 8), xzp), load8_s8(w + 8, nn - 8)));
          }
        }
        if (blocks[cb].vector) {
          const __m128i bytes = requant16_bytes(acc0, acc1, blocks[cb]);
          if (nn == 16)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c0), bytes);
          else {
            alignas(16) uint8_t tmp[16];
            _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
            std::memcpy(out + c0, tmp, static_cast<size_t>(nn));
          }
          continue;
        }
        alignas(32) int32_t sums[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(sums), acc0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), acc1);
        for (int64_t k = 0; k < nn; ++k) out[c0 + k] = finish_dw(p, c0 + k, sums[k]);
      }
    }
  }
}

}  // namespace qforge::quant::kernels
