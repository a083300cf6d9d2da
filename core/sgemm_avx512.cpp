// Single-threaded f32 GEMM for CPUs with AVX-512F. Compiled with AVX-512 flags
// on this file only; callers reach it through core/gemm.cpp after a cpuid
// check.
//
// Two paths:
// - packed (any op(A), op(B) except A row-major with B transposed): BLIS-style
//   blocking with an 8x32 register tile (16 zmm accumulators), A packed as
//   [k][8] micro-panels, B packed as [k][32] micro-panels;
// - dot (C = A B^T with both A and B contiguous along K): 4x4 tiles of dot
//   products with 16-wide loads along K and a horizontal sum at the end. It
//   serves weight gradients, where both operands are contiguous in K and
//   packing would be a transpose.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <utility>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/sgemm_kernels.h"

namespace qforge::detail {
namespace {

constexpr int kMR = 8;
constexpr int kNR = 32;
constexpr int kKC = 256;
constexpr int kMC = 128;

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

// The K block: K in equal blocks of at most kKC (288 = 144 + 144, not 256 + 32).
inline int64_t k_block(int64_t K) {
  const int64_t kblocks = (K + kKC - 1) / kKC;
  return (K + kblocks - 1) / kblocks;
}

// Per-thread packing buffers, allocated once.
float* pack_a_buffer() {
  thread_local std::unique_ptr<float, AlignedFree> buf(
      static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kMC * kKC)));
  return buf.get();
}
float* pack_b_buffer() {
  thread_local std::unique_ptr<float, AlignedFree> buf(
      static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kKC * kNR)));
  return buf.get();
}

// Packs rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) as micro-panels of kMR
// rows, each laid out [k][kMR]; the last panel's missing rows are left alone
// (the kernel for mr < kMR never reads them).
void pack_a(bool ta, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t ir = 0; ir < mc; ir += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, mc - ir);
    float* d = dst + ir * kc;
    if (ta) {  // op(A)(i, k) = A[k * lda + i]: rows of a panel are contiguous
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = A + (p0 + k) * lda + i0 + ir;
        if (mr == kMR) {
          _mm256_storeu_ps(d + k * kMR, _mm256_loadu_ps(s));
        } else {
          for (int64_t i = 0; i < mr; ++i) d[k * kMR + i] = s[i];
        }
      }
    } else {  // op(A)(i, k) = A[i * lda + k]
      for (int64_t i = 0; i < mr; ++i) {
        const float* s = A + (i0 + ir + i) * lda + p0;
        for (int64_t k = 0; k < kc; ++k) d[k * kMR + i] = s[k];
      }
    }
  }
}

// Where op(B) comes from: a strided matrix, or a table of row pointers (row k
// of op(B) is rows[k][0..N)).
struct BSource {
  const float* B = nullptr;
  int64_t ldb = 0;
  bool tb = false;
  const float* const* rows = nullptr;
};

// Packs rows [p0, p0+kc) x cols [j0, j0+nr) of op(B) as one [k][kNR] panel,
// zero-filling columns past nr.
void pack_b(const BSource& b, int64_t p0, int64_t kc, int64_t j0, int64_t nr, float* dst) {
  if (!b.tb) {  // op(B)(k, j) = row_k[j]
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr > 16 ? static_cast<__mmask16>((1u << (nr - 16)) - 1) : 0;
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = (b.rows ? b.rows[p0 + k] : b.B + (p0 + k) * b.ldb) + j0;
      _mm512_store_ps(dst + k * kNR, _mm512_maskz_loadu_ps(m0, s));
      _mm512_store_ps(dst + k * kNR + 16, _mm512_maskz_loadu_ps(m1, s + 16));
    }
  } else {  // op(B)(k, j) = B[j * ldb + k]
    for (int64_t j = 0; j < kNR; ++j) {
      if (j < nr) {
        const float* s = b.B + (j0 + j) * b.ldb + p0;
        for (int64_t k = 0; k < kc; ++k) dst[k * kNR + j] = s[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) dst[k * kNR + j] = 0.0f;
      }
    }
  }
}

// C[mr x nr] = alpha * Apanel * Bpanel + beta * C, with beta == 0 never
// reading C.
template <int MR>
void kernel_packed(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t nr, float alpha,
                   float beta) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b + k * kNR);
    const __m512 b1 = _mm512_load_ps(b + k * kNR + 16);
    const float* ak = a + k * kMR;
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(ak[i]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
  }
  const __mmask16 m0 = nr >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << nr) - 1);
  const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr > 16 ? static_cast<__mmask16>((1u << (nr - 16)) - 1) : 0;
  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* r = c + i * ldc;
    __m512 v0 = _mm512_mul_ps(va, acc0[i]);
    __m512 v1 = _mm512_mul_ps(va, acc1[i]);
    if (beta != 0.0f) {
      v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, r), v0);
      v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, r + 16), v1);
    }
    _mm512_mask_storeu_ps(r, m0, v0);
    _mm512_mask_storeu_ps(r + 16, m1, v1);
  }
}

using PackedKernel = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, float, float);
constexpr PackedKernel kPackedKernels[kMR + 1] = {nullptr,
                                                  kernel_packed<1>,
                                                  kernel_packed<2>,
                                                  kernel_packed<3>,
                                                  kernel_packed<4>,
                                                  kernel_packed<5>,
                                                  kernel_packed<6>,
                                                  kernel_packed<7>,
                                                  kernel_packed<8>};

void sgemm_packed(bool ta, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const BSource& bsrc, float beta, float* C, int64_t ldc) {
  float* ap = pack_a_buffer();
  float* bp = pack_b_buffer();
  const int64_t kstep = k_block(K);
  for (int64_t p0 = 0; p0 < K; p0 += kstep) {
    const int64_t kc = std::min<int64_t>(kstep, K - p0);
    const float beta_eff = p0 == 0 ? beta : 1.0f;
    for (int64_t i0 = 0; i0 < M; i0 += kMC) {
      const int64_t mc = std::min<int64_t>(kMC, M - i0);
      pack_a(ta, A, lda, i0, mc, p0, kc, ap);
      for (int64_t j0 = 0; j0 < N; j0 += kNR) {
        const int64_t nr = std::min<int64_t>(kNR, N - j0);
        pack_b(bsrc, p0, kc, j0, nr, bp);
        for (int64_t ir = 0; ir < mc; ir += kMR) {
          const int64_t mr = std::min<int64_t>(kMR, mc - ir);
          kPackedKernels[mr](kc, ap + ir * kc, bp, C + (i0 + ir) * ldc + j0, ldc, nr, alpha, beta_eff);
        }
      }
    }
  }
}

// ---- rows path: C = alpha * A B + beta * C, B rows read in place -----------
//
// For B given as row pointers with contiguous columns (a convolution's shifted
// image rows), packing B costs about as much as the few micro-tiles that reuse
// each panel when M is small. So B is read straight from its rows, 48 columns
// at a time, and only A (the weights, small) is packed, once per call.

constexpr int kRowsMR = 8;
constexpr int kRowsNV = 3;  // 16-wide vectors per tile row: 8 x 48 tiles, 24 accumulators
constexpr int kRowsNR = 16 * kRowsNV;

// C[mr x nr] = alpha * Apanel[kc][kRowsMR] * B(rows[0..kc), cols j0..j0+nr) + beta * C.
template <int MR, bool kFull>
void kernel_rows(int64_t kc, const float* a, const float* const* rows, int64_t j0, float* c, int64_t ldc,
                 int64_t nr, float alpha, float beta) {
  __mmask16 m[kRowsNV];
  for (int v = 0; v < kRowsNV; ++v) {
    const int64_t left = nr - 16 * v;
    m[v] = left >= 16 ? 0xFFFF : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
  }
  __m512 acc[MR][kRowsNV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < kRowsNV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const float* b = rows[k] + j0;
    __m512 bv[kRowsNV];
    for (int v = 0; v < kRowsNV; ++v)
      bv[v] = kFull ? _mm512_loadu_ps(b + 16 * v) : _mm512_maskz_loadu_ps(m[v], b + 16 * v);
    const float* ak = a + k * kRowsMR;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(ak[i]);
      for (int v = 0; v < kRowsNV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* r = c + i * ldc;
    for (int v = 0; v < kRowsNV; ++v) {
      __m512 x = _mm512_mul_ps(va, acc[i][v]);
      if (beta != 0.0f) x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[v], r + 16 * v), x);
      _mm512_mask_storeu_ps(r + 16 * v, m[v], x);
    }
  }
}

using RowsKernel = void (*)(int64_t, const float*, const float* const*, int64_t, float*, int64_t, int64_t, float,
                            float);
// [full tile][rows]: full tiles load B without masks (mask registers rebuilt
// every iteration cost a port-5 uop each, beside the FMAs).
template <bool kFull>
constexpr RowsKernel kRowsKernels[kRowsMR + 1] = {
    nullptr,                  kernel_rows<1, kFull>, kernel_rows<2, kFull>, kernel_rows<3, kFull>,
    kernel_rows<4, kFull>,    kernel_rows<5, kFull>, kernel_rows<6, kFull>, kernel_rows<7, kFull>,
    kernel_rows<8, kFull>};

void sgemm_rows_direct(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                       const float* const* brows, float beta, float* C, int64_t ldc) {
  // A as panels of kRowsMR rows, each [K][kRowsMR]; panel p starts at p * K * kRowsMR.
  thread_local std::vector<float> apack;
  const int64_t panels = (M + kRowsMR - 1) / kRowsMR;
  apack.resize(static_cast<size_t>(panels * K * kRowsMR));
  for (int64_t p = 0; p < panels; ++p) {
    float* d = apack.data() + p * K * kRowsMR;
    const int64_t mr = std::min<int64_t>(kRowsMR, M - p * kRowsMR);
    for (int64_t i = 0; i < mr; ++i) {
      const float* s = A + (p * kRowsMR + i) * lda;
      for (int64_t k = 0; k < K; ++k) d[k * kRowsMR + i] = s[k];
    }
  }
  const int64_t kstep = k_block(K);  // a block's B rows stay in L1
  for (int64_t p0 = 0; p0 < K; p0 += kstep) {
    const int64_t kc = std::min<int64_t>(kstep, K - p0);
    const float beta_eff = p0 == 0 ? beta : 1.0f;
    for (int64_t j0 = 0; j0 < N; j0 += kRowsNR) {
      const int64_t nr = std::min<int64_t>(kRowsNR, N - j0);
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t mr = std::min<int64_t>(kRowsMR, M - p * kRowsMR);
        (nr == kRowsNR ? kRowsKernels<true> : kRowsKernels<false>)[mr](kc, apack.data() + (p * K + p0) * kRowsMR, brows + p0, j0, C + p * kRowsMR * ldc + j0,
                         ldc, nr, alpha, beta_eff);
      }
    }
  }
}

// ---- dot path: C = alpha * A B^T + beta * C, A [M x K], B [N x K] ----------

// The sums of four vectors, [hsum(a), hsum(b), hsum(c), hsum(d)], by a
// shuffle tree (about a dozen instructions instead of four reductions). The
// order of additions is fixed, so results are deterministic.
inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Fold 512 -> 256 bits, two vectors per register.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  // Fold 256 -> 128 bits: 128-bit lane j holds 4 partial sums of vector j.
  const __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  // Transpose the 4x4 inside the lanes and add: lane j's four partials -> one sum.
  const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(y, y), _mm512_unpackhi_ps(y, y));  // [p0+p2, p0+p2, p1+p3, p1+p3]
  const __m512 t2 = _mm512_add_ps(t1, _mm512_permute_ps(t1, 0x4E));                      // every element: the lane sum
  // Element 0 of each lane j.
  const __m512i idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, t2));
}

// C tile [RI x RJ] = alpha * (A rows) . (B rows) + beta * C, dot products along K.
template <int RI, int RJ>
void kernel_dot(int64_t K, const float* A, int64_t lda, const float* const* Brow, float* C, int64_t ldc,
                float alpha, float beta) {
  __m512 acc[RI * RJ];
  for (int t = 0; t < RI * RJ; ++t) acc[t] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 b[RJ];
    for (int j = 0; j < RJ; ++j) b[j] = _mm512_loadu_ps(Brow[j] + k);
#pragma GCC unroll 8
    for (int i = 0; i < RI; ++i) {
      __m512 a = _mm512_loadu_ps(A + i * lda + k);
      // Keep a in a register: GCC would otherwise fold the load into each of
      // the RJ FMAs, tripling the loads.
      if constexpr (RJ > 1) asm("" : "+v"(a));
      for (int j = 0; j < RJ; ++j) acc[i * RJ + j] = _mm512_fmadd_ps(a, b[j], acc[i * RJ + j]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 b[RJ];
    for (int j = 0; j < RJ; ++j) b[j] = _mm512_maskz_loadu_ps(m, Brow[j] + k);
    for (int i = 0; i < RI; ++i) {
      const __m512 a = _mm512_maskz_loadu_ps(m, A + i * lda + k);
      for (int j = 0; j < RJ; ++j) acc[i * RJ + j] = _mm512_fmadd_ps(a, b[j], acc[i * RJ + j]);
    }
  }
  constexpr int kN = RI * RJ, kGroups = (kN + 3) / 4;
  alignas(16) float sums[kGroups * 4];
  for (int q = 0; q < kGroups; ++q) {
    const __m512 z = _mm512_setzero_ps();
    const int t = 4 * q;
    _mm_store_ps(sums + t, hsum4(acc[t], t + 1 < kN ? acc[t + 1] : z, t + 2 < kN ? acc[t + 2] : z,
                                 t + 3 < kN ? acc[t + 3] : z));
  }
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) {
      const float s = alpha * sums[i * RJ + j];
      float& c = C[i * ldc + j];
      c = beta == 0.0f ? s : s + beta * c;
    }
}

using DotKernel = void (*)(int64_t, const float*, int64_t, const float* const*, float*, int64_t, float, float);

// 8x3 tiles: 24 accumulators, 11 loads per 24 FMAs. Three B rows are the
// three horizontal taps of one image row in a convolution's weight gradient.
constexpr int kDotRI = 8, kDotRJ = 3;

template <int RI, int... RJ>
constexpr std::array<DotKernel, sizeof...(RJ)> dot_row(std::integer_sequence<int, RJ...>) {
  return {kernel_dot<RI, RJ + 1>...};
}
template <int... RI>
constexpr std::array<std::array<DotKernel, kDotRJ>, sizeof...(RI)> dot_table(std::integer_sequence<int, RI...>) {
  return {dot_row<RI + 1>(std::make_integer_sequence<int, kDotRJ>())...};
}
constexpr auto kDotKernels = dot_table(std::make_integer_sequence<int, kDotRI>());

DotKernel dot_kernel(int ri, int rj) { return kDotKernels[ri - 1][rj - 1]; }

// B row j is brow(j), a pointer to K contiguous floats. With a_outer, each
// block of A rows stays in L1 while every B row streams past it (right for
// convolution, where consecutive B rows are shifted views of one image row and
// so share cache lines); otherwise blocks of B rows stay while A streams.
template <class RowFn>
void sgemm_dot(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, RowFn brow, float beta,
               float* C, int64_t ldc, bool a_outer = false) {
  constexpr int64_t kRI = kDotRI, kRJ = kDotRJ;
  if (a_outer) {
    for (int64_t i0 = 0; i0 < M; i0 += kRI) {
      const int64_t ri = std::min<int64_t>(kRI, M - i0);
      for (int64_t j0 = 0; j0 < N; j0 += kRJ) {
        const int64_t rj = std::min<int64_t>(kRJ, N - j0);
        const float* rows[kRJ];
        for (int64_t j = 0; j < rj; ++j) rows[j] = brow(j0 + j);
        dot_kernel(static_cast<int>(ri), static_cast<int>(rj))(K, A + i0 * lda, lda, rows, C + i0 * ldc + j0, ldc,
                                                                alpha, beta);
      }
    }
    return;
  }
  for (int64_t j0 = 0; j0 < N; j0 += kRJ) {
    const int64_t rj = std::min<int64_t>(kRJ, N - j0);
    const float* rows[kRJ];
    for (int64_t j = 0; j < rj; ++j) rows[j] = brow(j0 + j);
    for (int64_t i0 = 0; i0 < M; i0 += kRI) {
      const int64_t ri = std::min<int64_t>(kRI, M - i0);
      dot_kernel(static_cast<int>(ri), static_cast<int>(rj))(K, A + i0 * lda, lda, rows, C + i0 * ldc + j0, ldc,
                                                              alpha, beta);
    }
  }
}

// ---- weight gradient over pixel segments (output channels in the lanes) ----
//
// CT[k][j] += sum over pixels p of rows[k][pixel p's offset] * G[p][j]. Each
// tile keeps MR x NV vectors of CT in registers while the pixels stream:
// per pixel, NV loads of G's row and MR broadcasts, one from each B row, so
// there is no horizontal reduction and no cache-line-split load (the dot
// kernel has both), and pixels outside the segments (a convolution's gap
// columns) are never visited.
// Stores an MR x NV-vector tile of accumulators into C rows ldc apart, the
// last vector masked unless kFull.
template <int MR, int NV, bool kFull>
[[gnu::always_inline]] inline void store_tile(const __m512 (&acc)[MR][NV], float* c, int64_t ldc, __mmask16 mlast) {
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      if (kFull || v + 1 < NV)
        _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
      else
        _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mlast, acc[i][v]);
    }
}

template <int MR, int NV, bool kFull>
void kernel_seg(const float* const* rows, const int64_t* off, int64_t nseg, int64_t seglen, const float* g,
                int64_t ldg, float* c, int64_t ldc, __mmask16 mlast, int64_t step) {
  __m512 acc[MR][NV];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v)
      acc[i][v] = kFull || v + 1 < NV ? _mm512_loadu_ps(c + i * ldc + 16 * v)
                                      : _mm512_maskz_loadu_ps(mlast, c + i * ldc + 16 * v);
  for (int64_t s = 0; s < nseg; ++s) {
    const float* p[MR];
    for (int i = 0; i < MR; ++i) p[i] = rows[i] + off[s];
    for (int64_t t = 0, e = seglen * step; t < e; t += step) {
      __m512 b[NV];
      for (int v = 0; v < NV; ++v)
        b[v] = kFull || v + 1 < NV ? _mm512_loadu_ps(g + 16 * v) : _mm512_maskz_loadu_ps(mlast, g + 16 * v);
      g += ldg;
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const __m512 a = _mm512_set1_ps(p[i][t]);
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
      }
    }
  }
  store_tile<MR, NV, kFull>(acc, c, ldc, mlast);
}

// Tile rows per vector count: 24 accumulators where the pointers fit.
constexpr int seg_mr(int nv) { return nv == 4 ? 6 : nv == 3 ? 8 : 12; }

template <int NV>
void seg_panel(int64_t K, int64_t nr, int64_t nseg, int64_t seglen, const float* const* rows, const int64_t* off,
               const float* g, int64_t ldg, float* CT, int64_t ldc, int64_t step) {
  constexpr int MR = seg_mr(NV);
  const bool full = nr == 16 * NV;
  const __mmask16 mlast = static_cast<__mmask16>((1u << (nr - 16 * (NV - 1))) - 1);
  const auto kernel = full ? kernel_seg<MR, NV, true> : kernel_seg<MR, NV, false>;
  // Blocks of whole segments whose G rows (about 24 KB) stay in L1 while every
  // tile of CT rows passes over them.
  const int64_t per_block = std::max<int64_t>(1, 6144 / (16 * NV) / std::max<int64_t>(seglen, 1));
  for (int64_t s0 = 0; s0 < nseg; s0 += per_block) {
    const int64_t ns = std::min(per_block, nseg - s0);
    const float* gb = g + s0 * seglen * ldg;
    int64_t k0 = 0;
    for (; k0 + MR <= K; k0 += MR)
      kernel(rows + k0, off + s0, ns, seglen, gb, ldg, CT + k0 * ldc, ldc, mlast, step);
    if (k0 < K) {  // the last rows: repeat the last B row into a scratch tile
      const int64_t mr = K - k0;
      const float* r[MR];
      alignas(64) float tile[MR * 64];
      for (int i = 0; i < MR; ++i) {
        r[i] = rows[std::min<int64_t>(k0 + i, K - 1)];
        for (int64_t j = 0; j < nr; ++j) tile[i * 64 + j] = i < mr ? CT[(k0 + i) * ldc + j] : 0.0f;
      }
      kernel(r, off + s0, ns, seglen, gb, ldg, tile, 64, mlast, step);
      for (int64_t i = 0; i < mr; ++i)
        for (int64_t j = 0; j < nr; ++j) CT[(k0 + i) * ldc + j] = tile[i * 64 + j];
    }
  }
}

// Transposes the 16 x 16 block at src (row stride lds) into dst (row stride
// ldd): 16 loads, three rounds of shuffles, 16 stores.
inline void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // per 128-bit lane k: columns 4k..4k+3 of rows i..i+3
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int h = 0; h < 2; ++h)  // row quads 4h*2 and 4h*2+4: even and odd lanes
    for (int j = 0; j < 4; ++j) {
      t[8 * h + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + 4 + j], 0x88);
      t[8 * h + 4 + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {  // column j from lanes 0 and 2, column j + 8 from lanes 1 and 3
    _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    _mm512_storeu_ps(dst + (j + 8) * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD));
  }
}
// ---- products over scattered pixels (output channels in the lanes) --------
//
// C[p][j] = beta * C[p][j] + sum over k of rows[k][poff[p]] * B[k][j]. A tile
// holds MR pixels x NV vectors of channels; per k it loads NV vectors of B's
// row k and broadcasts the MR pixels of row view k, so the pixels can be any
// positions of the views (a convolution's outputs, without the gap columns of
// its grid).
template <int MR, int NV, bool kFull>
void kernel_pixels(int64_t kc, const float* const* rows, const int64_t* poff, const float* b, int64_t ldb, float* c,
                   int64_t ldc, float beta, __mmask16 mlast) {
  int64_t o[MR];
  for (int i = 0; i < MR; ++i) o[i] = poff[i];
  __m512 acc[MR][NV];
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      if (beta == 0.0f) {
        acc[i][v] = _mm512_setzero_ps();
      } else {
        const __m512 x = kFull || v + 1 < NV ? _mm512_loadu_ps(c + i * ldc + 16 * v)
                                             : _mm512_maskz_loadu_ps(mlast, c + i * ldc + 16 * v);
        acc[i][v] = _mm512_mul_ps(vb, x);
      }
    }
  for (int64_t k = 0; k < kc; ++k) {
    const float* p = rows[k];
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = kFull || v + 1 < NV ? _mm512_loadu_ps(b + k * ldb + 16 * v)
                                  : _mm512_maskz_loadu_ps(mlast, b + k * ldb + 16 * v);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(p[o[i]]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
    }
  }
  store_tile<MR, NV, kFull>(acc, c, ldc, mlast);
}

template <int NV>
void pixels_panel(int64_t P, int64_t nr, int64_t K, const float* const* rows, const int64_t* poff, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int MR = seg_mr(NV);
  const bool full = nr == 16 * NV;
  const __mmask16 mlast = static_cast<__mmask16>((1u << (nr - 16 * (NV - 1))) - 1);
  const auto kernel = full ? kernel_pixels<MR, NV, true> : kernel_pixels<MR, NV, false>;
  // K blocks whose B rows (about 32 KB) stay in L1 while every pixel tile passes.
  const int64_t kb = 8192 / (16 * NV);
  for (int64_t k0 = 0; k0 < K; k0 += kb) {
    const int64_t kc = std::min(kb, K - k0);
    const float beta_eff = k0 == 0 ? beta : 1.0f;
    int64_t p0 = 0;
    for (; p0 + MR <= P; p0 += MR)
      kernel(kc, rows + k0, poff + p0, B + k0 * ldb, ldb, C + p0 * ldc, ldc, beta_eff, mlast);
    if (p0 < P) {  // the last pixels: repeat the last one into a scratch tile
      const int64_t mr = P - p0;
      int64_t o[MR];
      alignas(64) float tile[MR * 64];
      for (int i = 0; i < MR; ++i) {
        o[i] = poff[std::min<int64_t>(p0 + i, P - 1)];
        for (int64_t j = 0; j < nr; ++j) tile[i * 64 + j] = i < mr ? C[(p0 + i) * ldc + j] : 0.0f;
      }
      kernel(kc, rows + k0, o, B + k0 * ldb, ldb, tile, 64, beta_eff, mlast);
      for (int64_t i = 0; i < mr; ++i)
        for (int64_t j = 0; j < nr; ++j) C[(p0 + i) * ldc + j] = tile[i * 64 + j];
    }
  }
}

}  // namespace

void sgemm_pixels_avx512(int64_t P, int64_t N, int64_t K, const float* const* brows, const int64_t* poff,
                         const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t j0 = 0; j0 < N; j0 += 64) {
    const int64_t nr = std::min<int64_t>(64, N - j0);
    switch ((nr + 15) / 16) {
      case 4: pixels_panel<4>(P, nr, K, brows, poff, B + j0, ldb, beta, C + j0, ldc); break;
      case 3: pixels_panel<3>(P, nr, K, brows, poff, B + j0, ldb, beta, C + j0, ldc); break;
      case 2: pixels_panel<2>(P, nr, K, brows, poff, B + j0, ldb, beta, C + j0, ldc); break;
      default: pixels_panel<1>(P, nr, K, brows, poff, B + j0, ldb, beta, C + j0, ldc); break;
    }
  }
}

void transpose_avx512(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  const int64_t r16 = rows / 16 * 16, c16 = cols / 16 * 16;
  for (int64_t i = 0; i < r16; i += 16)
    for (int64_t j = 0; j < c16; j += 16) transpose16(src + i * lds + j, lds, dst + j * ldd + i, ldd);
  for (int64_t i = 0; i < rows; ++i)  // the edges
    for (int64_t j = i < r16 ? c16 : 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

void sgemm_segments_avx512(int64_t K, int64_t N, int64_t nseg, int64_t seglen, const float* const* brows,
                           const int64_t* off, const float* G, int64_t ldg, float* CT, int64_t ldc, int64_t step) {
  for (int64_t j0 = 0; j0 < N; j0 += 64) {
    const int64_t nr = std::min<int64_t>(64, N - j0);
    switch ((nr + 15) / 16) {
      case 4: seg_panel<4>(K, nr, nseg, seglen, brows, off, G + j0, ldg, CT + j0, ldc, step); break;
      case 3: seg_panel<3>(K, nr, nseg, seglen, brows, off, G + j0, ldg, CT + j0, ldc, step); break;
      case 2: seg_panel<2>(K, nr, nseg, seglen, brows, off, G + j0, ldg, CT + j0, ldc, step); break;
      default: seg_panel<1>(K, nr, nseg, seglen, brows, off, G + j0, ldg, CT + j0, ldc, step); break;
    }
  }
}

void sgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!ta && tb) {
    sgemm_dot(M, N, K, alpha, A, lda, [&](int64_t j) { return B + j * ldb; }, beta, C, ldc);
  } else {
    BSource b;
    b.B = B;
    b.ldb = ldb;
    b.tb = tb;
    sgemm_packed(ta, M, N, K, alpha, A, lda, b, beta, C, ldc);
  }
}

void sgemm_rows_nn_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                          const float* const* brows, float beta, float* C, int64_t ldc) {
  sgemm_rows_direct(M, N, K, alpha, A, lda, brows, beta, C, ldc);
}

void sgemm_rows_nt_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                          const float* const* brows, float beta, float* C, int64_t ldc) {
  sgemm_dot(M, N, K, alpha, A, lda, [&](int64_t j) { return brows[j]; }, beta, C, ldc, /*a_outer=*/true);
}

}  // namespace qforge::detail
