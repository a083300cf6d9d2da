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

/// Scalar reference, the oracle for the kernels' tests.
void sgemm_reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace qforge::detail
