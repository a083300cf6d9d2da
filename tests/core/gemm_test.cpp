#include "core/gemm.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "core/parallel.h"
#include "core/rng.h"
#include "core/sgemm_kernels.h"

using namespace qforge;

namespace {

struct Dims {
  int64_t M, N, K;
};

// Sizes 1-10, tile multiples (8, 32, 256), powers of two +-1 and remainders.
std::vector<Dims> gemm_sizes() {
  std::vector<Dims> d;
  for (int64_t m : {1, 3, 7, 8, 9, 10})
    for (int64_t n : {1, 5, 16, 31, 32, 33})
      for (int64_t k : {1, 2, 15, 17, 64}) d.push_back({m, n, k});
  d.push_back({63, 65, 255});
  d.push_back({129, 97, 257});
  d.push_back({64, 576, 288});
  d.push_back({16, 144, 1024});
  return d;
}

void check_kernel(void (*kernel)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                                 int64_t, float, float*, int64_t)) {
  Generator g(1);
  for (const Dims& d : gemm_sizes())
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 0.5f}) {
          // Padded leading dimensions catch stride mistakes.
          const int64_t lda = (ta ? d.M : d.K) + 3, ldb = (tb ? d.K : d.N) + 5, ldc = d.N + 2;
          Tensor A = Tensor::empty({(ta ? d.K : d.M) * lda}), B = Tensor::empty({(tb ? d.N : d.K) * ldb});
          Tensor C = Tensor::empty({d.M * ldc});
          uniform_(A, -1, 1, g);
          uniform_(B, -1, 1, g);
          uniform_(C, -1, 1, g);
          Tensor R = C.clone();
          kernel(ta, tb, d.M, d.N, d.K, 1.5f, A.data<float>(), lda, B.data<float>(), ldb, beta, C.data<float>(), ldc);
          detail::sgemm_reference(ta, tb, d.M, d.N, d.K, 1.5f, A.data<float>(), lda, B.data<float>(), ldb, beta,
                                  R.data<float>(), ldc);
          for (int64_t i = 0; i < d.M; ++i)
            for (int64_t j = 0; j < d.N; ++j)
              ASSERT_NEAR(C.data<float>()[i * ldc + j], R.data<float>()[i * ldc + j], 2e-5f * (d.K + 4))
                  << "M=" << d.M << " N=" << d.N << " K=" << d.K << " ta=" << ta << " tb=" << tb << " beta=" << beta
                  << " at " << i << "," << j;
          // Padding columns of C stay untouched.
          for (int64_t i = 0; i < d.M; ++i)
            for (int64_t j = d.N; j < ldc; ++j) ASSERT_EQ(C.data<float>()[i * ldc + j], R.data<float>()[i * ldc + j]);
        }
}

}  // namespace

TEST(Sgemm, Avx512MatchesReference) {
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "CPU lacks AVX-512F";
  check_kernel(detail::sgemm_avx512);
}

TEST(Sgemm, ThreadedGemmMatchesReferenceAndIsThreadCountInvariant) {
  // Wide (split into column panels) and tall (row panels).
  for (const auto [M, N, K] : {std::array<int64_t, 3>{96, 700, 300}, std::array<int64_t, 3>{700, 96, 300}}) {
    Generator g(2);
    Tensor A = Tensor::empty({M, K}), B = Tensor::empty({K, N});
    uniform_(A, -1, 1, g);
    uniform_(B, -1, 1, g);
    Tensor R = Tensor::empty({M, N});
    detail::sgemm_reference(false, false, M, N, K, 1.0f, A.data<float>(), K, B.data<float>(), N, 0.0f, R.data<float>(),
                            N);
    std::vector<double> first;
    for (int t : {1, 2, 3}) {
      set_num_threads(t);
      Tensor C = Tensor::empty({M, N});
      gemm(false, false, M, N, K, 1.0f, A.data<float>(), K, B.data<float>(), N, 0.0f, C.data<float>(), N);
      for (int64_t i = 0; i < M * N; ++i) ASSERT_NEAR(C.data<float>()[i], R.data<float>()[i], 1e-3);
      if (first.empty())
        first = C.to_vector();
      else
        EXPECT_EQ(C.to_vector(), first) << "threads " << t << ", M " << M << ", N " << N;
    }
  }
  set_num_threads(2);
}

TEST(Sgemm, DoubleGemm) {
  const double A[] = {1, 2, 3, 4, 5, 6};  // 2x3
  const double B[] = {1, 0, 0, 1, 1, 1};  // 3x2
  double C[4] = {};
  gemm(false, false, 2, 2, 3, 1.0, A, 3, B, 2, 0.0, C, 2);
  EXPECT_EQ(C[0], 4);
  EXPECT_EQ(C[3], 11);
  EXPECT_NE(std::string(gemm_backend()), "");
}

// The row-pointer forms (convolution's shifted rows): B rows overlap, as
// shifted views of one buffer. Checked against the reference on the gathered
// dense matrix, in one thread (the kernels) and two (the split over N or M).
TEST(Sgemm, RowPointerFormsMatchReference) {
  Generator g(2);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<Dims> sizes = gemm_sizes();
    sizes.push_back({64, 2000, 144});  // large enough to be split over threads
    sizes.push_back({40, 300, 1100});
    for (const Dims& d : sizes)
      for (int nt = 0; nt < 2; ++nt)
        for (float beta : {0.0f, 0.5f}) {
          const int64_t nrows = nt ? d.N : d.K, ncols = nt ? d.K : d.N;
          // Row r starts at r * 3 floats into one buffer, so rows overlap; the
          // buffer ends where the last row does (an over-read shows under ASan).
          Tensor buf = Tensor::empty({(nrows - 1) * 3 + ncols});
          uniform_(buf, -1, 1, g);
          std::vector<const float*> rows(static_cast<size_t>(nrows));
          Tensor dense = Tensor::empty({nrows * ncols});
          for (int64_t r = 0; r < nrows; ++r) {
            rows[r] = buf.data<float>() + r * 3;
            std::copy(rows[r], rows[r] + ncols, dense.data<float>() + r * ncols);
          }
          const int64_t lda = d.K + 3, ldc = d.N + 2;
          Tensor A = Tensor::empty({d.M * lda}), C = Tensor::empty({d.M * ldc});
          uniform_(A, -1, 1, g);
          uniform_(C, -1, 1, g);
          Tensor R = C.clone();
          if (nt)
            gemm_rows_nt(d.M, d.N, d.K, 1.5f, A.data<float>(), lda, rows.data(), beta, C.data<float>(), ldc);
          else
            gemm_rows_nn(d.M, d.N, d.K, 1.5f, A.data<float>(), lda, rows.data(), beta, C.data<float>(), ldc);
          detail::sgemm_reference(false, nt, d.M, d.N, d.K, 1.5f, A.data<float>(), lda, dense.data<float>(), ncols,
                                  beta, R.data<float>(), ldc);
          for (int64_t i = 0; i < d.M; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const float want = R.data<float>()[i * ldc + j];
              if (j < d.N)
                ASSERT_NEAR(C.data<float>()[i * ldc + j], want, 2e-5f * (d.K + 4))
                    << "M=" << d.M << " N=" << d.N << " K=" << d.K << " nt=" << nt << " threads=" << threads;
              else
                ASSERT_EQ(C.data<float>()[i * ldc + j], want) << "padding column written";
            }
        }
  }
  set_num_threads(2);
}

// The pixel-segment form (a convolution's weight gradient): segments of the
// B rows at scattered offsets, G pixel-major with padded rows, CT accumulated
// into. Against the scalar reference and a double-precision sum, in one thread
// (the kernels, with every tile shape and partial tiles) and two (split over
// K); columns past N are never written.
TEST(Sgemm, SegmentFormMatchesReference) {
  Generator g(3);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t K : {1, 5, 6, 7, 12, 13, 25, 288})
      for (int64_t N : {1, 3, 16, 20, 32, 47, 48, 64, 80, 130})
        for (int64_t seglen : {1, 8, 13})
          for (int64_t step : {1, 2, 3}) {
            const int64_t nseg = seglen == 1 ? 40 : 7, gap = 3, ldg = N + 5, ldc = N + 2;
            // Segment s starts at s * (seglen * step + gap) and reads every
            // step-th float; row k starts k floats in, so rows overlap, and the
            // buffer ends where the last row's last read is (an over-read shows
            // under ASan).
            const int64_t seg_span = (seglen - 1) * step + 1;
            const int64_t span = (nseg - 1) * (seglen * step + gap) + seg_span;
            Tensor buf = Tensor::empty({K - 1 + span});
            uniform_(buf, -1, 1, g);
            std::vector<const float*> rows(static_cast<size_t>(K));
            for (int64_t k = 0; k < K; ++k) rows[k] = buf.data<float>() + k;
            std::vector<int64_t> off(static_cast<size_t>(nseg));
            for (int64_t s = 0; s < nseg; ++s) off[s] = s * (seglen * step + gap);
            Tensor G = Tensor::empty({nseg * seglen * ldg}), C = Tensor::empty({K * ldc});
            uniform_(G, -1, 1, g);
            uniform_(C, -1, 1, g);
            Tensor R = C.clone();
            gemm_rows_segments(K, N, nseg, seglen, rows.data(), off.data(), G.data<float>(), ldg, C.data<float>(), ldc,
                               step);
            detail::sgemm_segments_reference(K, N, nseg, seglen, rows.data(), off.data(), G.data<float>(), ldg,
                                             R.data<float>(), ldc, step);
            for (int64_t k = 0; k < K; ++k)
              for (int64_t j = 0; j < ldc; ++j) {
                const float want = R.data<float>()[k * ldc + j];
                if (j < N)
                  ASSERT_NEAR(C.data<float>()[k * ldc + j], want, 2e-5f * (nseg * seglen + 4))
                      << "K=" << K << " N=" << N << " seglen=" << seglen << " step=" << step << " threads=" << threads;
                else
                  ASSERT_EQ(C.data<float>()[k * ldc + j], want) << "padding column written";
              }
          }
  }
  set_num_threads(2);
}

// The scattered-pixel form (a convolution's output, pixel-major): pixels at
// arbitrary, repeated and descending offsets of overlapping row views, every
// tile shape and partial tiles, beta 0 (C not read: NaN there must not leak)
// and 0.5, K across the block size; one thread and two (split over P).
TEST(Sgemm, PixelFormMatchesReference) {
  Generator g(5);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t P : {1, 5, 6, 7, 12, 13, 25, 200})
      for (int64_t N : {1, 3, 16, 20, 32, 47, 64, 80, 130})
        for (int64_t K : {1, 9, 130, 600}) {
          if (P * N * K > 4000000) continue;
          const int64_t span = 3 * P + 7, ldb = N + 5, ldc = N + 2;
          Tensor buf = Tensor::empty({K - 1 + span});
          uniform_(buf, -1, 1, g);
          std::vector<const float*> rows(static_cast<size_t>(K));
          for (int64_t k = 0; k < K; ++k) rows[k] = buf.data<float>() + k;
          std::vector<int64_t> poff(static_cast<size_t>(P));
          for (int64_t p = 0; p < P; ++p) poff[p] = (p * 7919) % span;  // scattered, may repeat
          if (P > 1) poff[P - 1] = span - 1;                            // the last readable float
          Tensor B = Tensor::empty({K * ldb});
          uniform_(B, -1, 1, g);
          for (float beta : {0.0f, 0.5f}) {
            Tensor C = Tensor::empty({P * ldc});
            uniform_(C, -1, 1, g);
            if (beta == 0.0f)
              for (int64_t p = 0; p < P; ++p) C.data<float>()[p * ldc] = std::nanf("");
            Tensor R = C.clone();
            gemm_rows_pixels(P, N, K, rows.data(), poff.data(), B.data<float>(), ldb, beta, C.data<float>(), ldc);
            detail::sgemm_pixels_reference(P, N, K, rows.data(), poff.data(), B.data<float>(), ldb, beta,
                                           R.data<float>(), ldc);
            for (int64_t p = 0; p < P; ++p)
              for (int64_t j = 0; j < ldc; ++j) {
                const float want = R.data<float>()[p * ldc + j];
                if (j < N)
                  ASSERT_NEAR(C.data<float>()[p * ldc + j], want, 2e-5f * (K + 4))
                      << "P=" << P << " N=" << N << " K=" << K << " beta=" << beta << " threads=" << threads;
                else
                  ASSERT_EQ(C.data<float>()[p * ldc + j], want) << "padding column written";
              }
          }
        }
  }
  set_num_threads(2);
}

TEST(Sgemm, SegmentFormRejectsNegativeSizes) {
  EXPECT_THROW(gemm_rows_pixels(-1, 1, 1, nullptr, nullptr, nullptr, 1, 0.0f, nullptr, 1), ValueError);
  EXPECT_THROW(gemm_rows_segments(-1, 1, 1, 1, nullptr, nullptr, nullptr, 1, nullptr, 1), ValueError);
  EXPECT_THROW(gemm_rows_segments(1, 1, 1, 1, nullptr, nullptr, nullptr, 1, nullptr, 1, 0), ValueError);
  // Empty products touch nothing.
  gemm_rows_segments(0, 4, 1, 1, nullptr, nullptr, nullptr, 1, nullptr, 1);
  gemm_rows_segments(4, 4, 0, 3, nullptr, nullptr, nullptr, 1, nullptr, 1);
}

TEST(Transpose, MatchesNaiveOnBlocksAndEdges) {
  Generator g(4);
  for (int64_t rows : {1, 15, 16, 17, 33, 64})
    for (int64_t cols : {1, 7, 16, 31, 48, 100}) {
      const int64_t lds = cols + 3, ldd = rows + 2;
      Tensor src = Tensor::empty({rows * lds}), dst = Tensor::empty({cols * ldd});
      uniform_(src, -1, 1, g);
      uniform_(dst, -1, 1, g);
      Tensor before = dst.clone();
      transpose(src.data<float>(), rows, cols, lds, dst.data<float>(), ldd);
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t i = 0; i < ldd; ++i)
          ASSERT_EQ(dst.data<float>()[j * ldd + i],
                    i < rows ? src.data<float>()[i * lds + j] : before.data<float>()[j * ldd + i])
              << rows << "x" << cols << " at " << i << "," << j;
    }
}
