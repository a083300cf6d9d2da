#pragma once
// Dense matrix multiply for the float paths (training, FP32 inference).

#include <cstdint>

namespace qforge {

/// Both overloads: C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, all row-major.
/// op(X) is X, or X transposed when the matching flag is set; lda/ldb/ldc are
/// the row strides of the matrices as stored. With beta == 0, C is not read.
/// Large products are split over qforge's thread pool (see core/parallel.h);
/// the split never divides K, so results do not depend on the thread count.
/// Negative sizes throw ValueError; M or N of 0 returns without touching C.
/// The f32 overload runs the backend that gemm_backend() names, picked on first use
/// (QFORGE_GEMM=avx512|openblas|reference forces one; another value, or avx512
/// without AVX-512F, throws ValueError).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
/// The f64 overload: always OpenBLAS dgemm (QFORGE_GEMM does not apply).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

/// C[M,N] = alpha * A[M,K] * B + beta * C, where row k of B is the contiguous
/// array brows[k][0..N) (rows may overlap: convolution passes shifted views of
/// one padded image). A and C are row-major with strides lda and ldc.
/// Single-threaded when called inside a parallel region, else split over N.
void gemm_rows_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* const* brows, float beta, float* C, int64_t ldc);
/// C[M,N] = alpha * A[M,K] * B^T + beta * C, where row n of B is the
/// contiguous array brows[n][0..K). Split over M when not nested.
void gemm_rows_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* const* brows, float beta, float* C, int64_t ldc);

/// CT[k, j] += sum over segments s < nseg and t < seglen of
///   brows[k][off[s] + t * step] * G[(s * seglen + t) * ldg + j],   for k < K, j < N:
/// a product whose inner dimension runs over pixel segments (a convolution's
/// output rows) that the row views brows[k] reach at offsets off[s], with G
/// pixel-major (one row of N channels per pixel). A convolution's weight
/// gradient, transposed, is this product, with G the output gradient and
/// brows the shifted input rows; the columns between segments are skipped
/// (and, for a strided conv, step > 1 reads every step-th column).
/// Single-threaded when called inside a parallel region, else split over K.
void gemm_rows_segments(int64_t K, int64_t N, int64_t nseg, int64_t seglen, const float* const* brows,
                        const int64_t* off, const float* G, int64_t ldg, float* CT, int64_t ldc,
                        int64_t step = 1);

/// C[p, j] = beta * C[p, j] + sum over k < K of brows[k][poff[p]] * B[k * ldb + j],
/// for p < P and j < N: the product of the previous form with its result
/// pixel-major, at any positions poff of the row views. A convolution's
/// output, transposed, is this product over its output positions only (not
/// the gap columns of its grid). With beta == 0, C is not read.
/// Single-threaded when called inside a parallel region, else split over P.
void gemm_rows_pixels(int64_t P, int64_t N, int64_t K, const float* const* brows, const int64_t* poff,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

/// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: the transpose
/// of a row-major [rows, cols] matrix, on the calling thread (16 x 16 AVX-512
/// blocks where the CPU has them).
void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd);

/// True when gemm_rows_segments, gemm_rows_pixels and transpose run vector
/// kernels (the avx512 backend); otherwise they are scalar reference loops,
/// and callers should prefer the other products.
bool gemm_rows_kernels_available();

/// Which implementation serves the f32 gemm: "avx512", "openblas" or
/// "reference" (QFORGE_GEMM forces one).
const char* gemm_backend();

}  // namespace qforge
