#include "core/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "core/sgemm_kernels.h"
#include "core/tensor.h"

namespace qforge {

namespace detail {
void sgemm_reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      float& c = C[i * ldc + j];
      c = beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
    }
}
void sgemm_pixels_reference(int64_t P, int64_t N, int64_t K, const float* const* brows, const int64_t* poff,
                            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += brows[k][poff[p]] * B[k * ldb + j];
      float& c = C[p * ldc + j];
      c = beta == 0.0f ? acc : acc + beta * c;
    }
}
void sgemm_segments_reference(int64_t K, int64_t N, int64_t nseg, int64_t seglen, const float* const* brows,
                              const int64_t* off, const float* G, int64_t ldg, float* CT, int64_t ldc, int64_t step) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t s = 0; s < nseg; ++s)
      for (int64_t t = 0; t < seglen; ++t) {
        const float a = brows[k][off[s] + t * step];
        const float* g = G + (s * seglen + t) * ldg;
        for (int64_t j = 0; j < N; ++j) CT[k * ldc + j] += a * g[j];
      }
}
}  // namespace detail

namespace {

using SgemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                         float, float*, int64_t);

void sgemm_openblas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
              B, ldb, beta, C, ldc);
}

struct SgemmBackend {
  const char* name;
  SgemmFn fn;
};

// Chosen once: QFORGE_GEMM=avx512|openblas|reference forces a path; otherwise
// AVX-512F CPUs get qforge's kernel and others OpenBLAS.
SgemmBackend pick_backend() {
  const bool has512 = __builtin_cpu_supports("avx512f");
  if (const char* e = std::getenv("QFORGE_GEMM")) {
    if (!std::strcmp(e, "openblas")) return {"openblas", sgemm_openblas};
    if (!std::strcmp(e, "reference")) return {"reference", detail::sgemm_reference};
    if (!std::strcmp(e, "avx512")) {
      QF_CHECK(has512) << "QFORGE_GEMM=avx512, but this CPU lacks AVX-512F";
      return {"avx512", detail::sgemm_avx512};
    }
    QF_THROW(ValueError) << "QFORGE_GEMM must be avx512, openblas or reference, got '" << e << "'";
  }
  if (has512) return {"avx512", detail::sgemm_avx512};
  return {"openblas", sgemm_openblas};
}

const SgemmBackend& backend() {
  static const SgemmBackend b = pick_backend();
  return b;
}

template <class T>
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto opa = ta ? CblasTrans : CblasNoTrans;
  const auto opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    (void)opa;
    (void)opb;
    backend().fn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, opa, opb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

// Whether each element's sum runs in an order fixed by K alone (qforge's
// kernels and the reference), so that any split of M or N gives the same bits.
template <class T>
bool order_fixed_per_element() {
  if constexpr (std::is_same_v<T, float>) return backend().fn != sgemm_openblas;
  return false;
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
  if (!order_fixed_per_element<T>()) {
    // OpenBLAS's sums depend on the panel it is handed (its edge kernels and
    // blocking follow the panel's shape), so the panels must depend on the
    // shape alone, the same for any thread count and for nested calls: an
    // even number of them (two threads share them evenly), at least 2 and
    // about 1024 columns (512 rows) each. Few, wide panels keep OpenBLAS's
    // per-call cost small.
    if (flops < 4e6) return blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const bool cols = N >= M;
    const int64_t extent = cols ? N : M, target = cols ? 1024 : 512, align = cols ? 32 : 16;
    int64_t panels = std::max<int64_t>(2, (extent + target - 1) / target);
    panels += panels % 2;
    const int64_t width = ((extent + panels - 1) / panels + align - 1) / align * align;
    parallel_chunks((extent + width - 1) / width, [&](int64_t c) {
      const int64_t b = c * width, n = std::min(width, extent - b);
      if (cols)
        blas_gemm(ta, tb, M, n, K, alpha, A, lda, tb ? B + b * ldb : B + b, ldb, beta, C + b, ldc);
      else
        blas_gemm(ta, tb, n, N, K, alpha, ta ? A + b : A + b * lda, lda, B, ldb, beta, C + b * ldc, ldc);
    });
    return;
  }
  if (nt == 1 || flops < 4e6 || in_parallel_region()) {
    blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the larger of M and N into column or row panels; each thread runs a
  // single-threaded kernel on its panel.
  if (N >= M) {
    const int64_t grain = std::max<int64_t>(32, (N / nt + 31) / 32 * 32);
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

const char* gemm_backend() { return backend().name; }

namespace {
// Without the AVX-512 kernel, gather the rows into a dense matrix and use
// gemm(). The matrix comes from the tensor allocator's cache: a std::vector
// here was zeroed and, above glibc's mmap threshold, page-faulted afresh on
// every call (about 15% of ResNet-20's QAT step on an AVX2-only CPU).
void rows_fallback(bool nt, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                   const float* const* brows, float beta, float* C, int64_t ldc) {
  const int64_t nrows = nt ? N : K, ncols = nt ? K : N;
  Tensor dense = Tensor::empty({nrows * ncols});
  float* d = dense.data<float>();
  for (int64_t r = 0; r < nrows; ++r) std::copy(brows[r], brows[r] + ncols, d + r * ncols);
  gemm(false, nt, M, N, K, alpha, A, lda, d, ncols, beta, C, ldc);
}
bool use_avx512_rows() { return backend().fn == detail::sgemm_avx512; }
// Small products, nested calls and one-thread runs stay on the calling thread.
bool run_inline(int64_t M, int64_t N, int64_t K) {
  return num_threads() == 1 || in_parallel_region() || 2.0 * M * N * K < 4e6;
}
}  // namespace

void gemm_rows_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* const* brows, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (!use_avx512_rows() || K == 0) return rows_fallback(false, M, N, K, alpha, A, lda, brows, beta, C, ldc);
  if (run_inline(M, N, K)) {
    detail::sgemm_rows_nn_avx512(M, N, K, alpha, A, lda, brows, beta, C, ldc);
    return;
  }
  const int64_t grain = std::max<int64_t>(32, (N / num_threads() + 31) / 32 * 32);
  parallel_for(0, N, grain, [&](int64_t b, int64_t e) {
    std::vector<const float*> shifted(brows, brows + K);
    for (auto& p : shifted) p += b;
    detail::sgemm_rows_nn_avx512(M, e - b, K, alpha, A, lda, shifted.data(), beta, C + b, ldc);
  });
}

void gemm_rows_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* const* brows, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (!use_avx512_rows() || K == 0) return rows_fallback(true, M, N, K, alpha, A, lda, brows, beta, C, ldc);
  if (run_inline(M, N, K)) {
    detail::sgemm_rows_nt_avx512(M, N, K, alpha, A, lda, brows, beta, C, ldc);
    return;
  }
  parallel_for(0, M, 4, [&](int64_t b, int64_t e) {
    detail::sgemm_rows_nt_avx512(e - b, N, K, alpha, A + b * lda, lda, brows, beta, C + b * ldc, ldc);
  });
}

void gemm_rows_segments(int64_t K, int64_t N, int64_t nseg, int64_t seglen, const float* const* brows,
                        const int64_t* off, const float* G, int64_t ldg, float* CT, int64_t ldc, int64_t step) {
  QF_CHECK(K >= 0 && N >= 0 && nseg >= 0 && seglen >= 0 && step >= 1)
      << "gemm_rows_segments: bad size (K " << K << ", N " << N << ", nseg " << nseg << ", seglen " << seglen
      << ", step " << step << ")";
  if (K == 0 || N == 0 || nseg == 0 || seglen == 0) return;
  const auto run = use_avx512_rows() ? detail::sgemm_segments_avx512 : detail::sgemm_segments_reference;
  if (run_inline(K, N, nseg * seglen)) return run(K, N, nseg, seglen, brows, off, G, ldg, CT, ldc, step);
  parallel_for(0, K, 24, [&](int64_t b, int64_t e) {
    run(e - b, N, nseg, seglen, brows + b, off, G, ldg, CT + b * ldc, ldc, step);
  });
}

bool gemm_rows_kernels_available() { return use_avx512_rows(); }

void gemm_rows_pixels(int64_t P, int64_t N, int64_t K, const float* const* brows, const int64_t* poff,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  QF_CHECK(P >= 0 && N >= 0 && K >= 0) << "gemm_rows_pixels: negative size (P " << P << ", N " << N << ", K " << K
                                       << ")";
  if (P == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t p = 0; p < P; ++p)
      for (int64_t j = 0; j < N; ++j) C[p * ldc + j] = beta == 0.0f ? 0.0f : beta * C[p * ldc + j];
    return;
  }
  const auto run = use_avx512_rows() ? detail::sgemm_pixels_avx512 : detail::sgemm_pixels_reference;
  if (run_inline(P, N, K)) return run(P, N, K, brows, poff, B, ldb, beta, C, ldc);
  parallel_for(0, P, 96, [&](int64_t b, int64_t e) { run(e - b, N, K, brows, poff + b, B, ldb, beta, C + b * ldc, ldc); });
}

void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  QF_CHECK(rows >= 0 && cols >= 0) << "transpose: negative size (" << rows << " x " << cols << ")";
  if (use_avx512_rows()) return detail::transpose_avx512(src, rows, cols, lds, dst, ldd);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

}  // namespace qforge
