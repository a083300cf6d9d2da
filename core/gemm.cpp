#include "core/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"
#include "core/parallel.h"

namespace qforge {
namespace {

template <class T>
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto opa = ta ? CblasTrans : CblasNoTrans;
  const auto opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, opa, opb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, opa, opb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

template <class T>
void gemm_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  QF_CHECK(M >= 0 && N >= 0 && K >= 0) << "gemm: negative size M=" << M << " N=" << N << " K=" << K;
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const double flops = 2.0 * M * N * K;
  const int nt = num_threads();
  if (nt == 1 || flops < 4e6 || in_parallel_region()) {
    blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the larger of M and N into column or row panels; each thread runs a
  // single-threaded BLAS call on its panel.
  if (N >= M) {
    const int64_t grain = std::max<int64_t>(64, (N / nt + 15) / 16 * 16);
    parallel_for(0, N, grain, [&](int64_t b, int64_t e) {
      const T* Bp = tb ? B + b * ldb : B + b;
      blas_gemm(ta, tb, M, e - b, K, alpha, A, lda, Bp, ldb, beta, C + b, ldc);
    });
  } else {
    const int64_t grain = std::max<int64_t>(16, (M / nt + 7) / 8 * 8);
    parallel_for(0, M, grain, [&](int64_t b, int64_t e) {
      const T* Ap = ta ? A + b : A + b * lda;
      blas_gemm(ta, tb, e - b, N, K, alpha, Ap, lda, B, ldb, beta, C + b * ldc, ldc);
    });
  }
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_impl<float>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_impl<double>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* gemm_backend() { return "openblas"; }

}  // namespace qforge
