#pragma once
// Single-threaded f32 GEMM kernels behind qforge::gemm (core/gemm.h). Same
// contract as gemm(), on one thread. Internal to core.

#include <cstdint>

namespace qforge::detail {

/// AVX-512F implementation; call only when the CPU has AVX-512F.
void sgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

/// Row-pointer forms (see gemm_rows_nn / gemm_rows_nt in core/gemm.h), AVX-512F.
void sgemm_rows_nn_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                          const float* const* brows, float beta, float* C, int64_t ldc);
void sgemm_rows_nt_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                          const float* const* brows, float beta, float* C, int64_t ldc);

/// Pixel-segment form (see gemm_rows_segments in core/gemm.h), AVX-512F.
void sgemm_segments_avx512(int64_t K, int64_t N, int64_t nseg, int64_t seglen, const float* const* brows,
                           const int64_t* off, const float* G, int64_t ldg, float* CT, int64_t ldc, int64_t step);

/// Scattered-pixel form (see gemm_rows_pixels in core/gemm.h), AVX-512F.
void sgemm_pixels_avx512(int64_t P, int64_t N, int64_t K, const float* const* brows, const int64_t* poff,
                         const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
/// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols, AVX-512F.
void transpose_avx512(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd);

/// Scalar reference, the oracle for the kernels' tests.
void sgemm_reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void sgemm_pixels_reference(int64_t P, int64_t N, int64_t K, const float* const* brows, const int64_t* poff,
                            const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void sgemm_segments_reference(int64_t K, int64_t N, int64_t nseg, int64_t seglen, const float* const* brows,
                              const int64_t* off, const float* G, int64_t ldg, float* CT, int64_t ldc, int64_t step);

}  // namespace qforge::detail
