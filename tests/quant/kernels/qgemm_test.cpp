// The requantizing int8 GEMM: the reference against an independent
// computation, and every kernel in kernel_list.inc against the reference on
// sizes 1-10, tile multiples and powers of two +-1, with random zero points,
// multipliers, biases, clamps and padded strides.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::kernels {
namespace {

struct Problem {
  std::vector<uint8_t> a;
  std::vector<int8_t> b;
  std::vector<int32_t> bias;
  std::vector<QuantMultiplier> requant;
  QGemmParams p;
};

Problem make_problem(int64_t M, int64_t N, int64_t K, std::mt19937& rng, bool pad = false) {
  Problem pr;
  auto& p = pr.p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.lda = K + (pad ? 3 : 0);
  p.ldb = K + (pad ? 5 : 0);
  p.ldc = N + (pad ? 2 : 0);
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127), zp(0, 255), bias(-20000, 20000);
  pr.a.resize(std::max<int64_t>(1, M * p.lda));
  pr.b.resize(std::max<int64_t>(1, N * p.ldb));
  for (auto& v : pr.a) v = static_cast<uint8_t>(u8(rng));
  for (auto& v : pr.b) v = static_cast<int8_t>(s8(rng));
  std::uniform_real_distribution<double> e(-14, -4);
  for (int64_t n = 0; n < N; ++n) {
    pr.bias.push_back(bias(rng));
    // Every third channel's multiplier is a power of two: exact ties, rounded to even.
    pr.requant.push_back(quantize_multiplier(std::exp2(n % 3 == 0 ? std::round(e(rng)) : e(rng))));
  }
  p.a = pr.a.data();
  p.b = pr.b.data();
  p.bias = (rng() % 4) ? pr.bias.data() : nullptr;
  p.requant = pr.requant.data();
  p.a_zero_point = zp(rng);
  p.out_zero_point = zp(rng);
  p.out_lo = std::uniform_int_distribution<int>(0, 40)(rng);
  p.out_hi = std::uniform_int_distribution<int>(200, 255)(rng);
  return pr;
}

std::vector<uint8_t> run(QGemmFn fn, const QGemmParams& p0) {
  QGemmParams p = p0;
  std::vector<uint8_t> c(std::max<int64_t>(1, p.M * p.ldc), 0xAB);  // padding must stay untouched
  p.c = c.data();
  fn(p);
  return c;
}

TEST(QGemm, ReferenceMatchesAnIndependentComputation) {
  std::mt19937 rng(1);
  for (int iter = 0; iter < 60; ++iter) {
    const int64_t M = 1 + rng() % 9, N = 1 + rng() % 17, K = 1 + rng() % 70;
    Problem pr = make_problem(M, N, K, rng, iter % 2);
    const auto c = run(&qu8s8_gemm_requant__ref, pr.p);
    const auto& p = pr.p;
    // Sum in int64, k outermost, then the qmath rule.
    std::vector<int64_t> acc(M * N, 0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n)
          acc[m * N + n] += (int64_t{pr.a[m * p.lda + k]} - p.a_zero_point) * pr.b[n * p.ldb + k];
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t full = acc[m * N + n] + (p.bias ? p.bias[n] : 0);
        ASSERT_EQ(c[m * p.ldc + n], requantize(saturate_i32(full), p.requant[n], p.out_zero_point, p.out_lo, p.out_hi));
        // And within half a level of the real-valued result, before clamping.
        const double real = static_cast<double>(full) * p.requant[n].value() + p.out_zero_point;
        const double clamped = std::min<double>(std::max<double>(real, p.out_lo), p.out_hi);
        ASSERT_LE(std::fabs(c[m * p.ldc + n] - clamped), 0.5 + 1e-6);
      }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = N; j < p.ldc; ++j) ASSERT_EQ(c[m * p.ldc + j], 0xAB) << "wrote into the padding";
  }
}

TEST(QGemm, EveryKernelEqualsTheReference) {
  const std::vector<int64_t> sizes = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65};
  int kernels_run = 0;
  // Only the GEMM entries of the list (qdwconv_test.cpp covers the others).
  auto check_gemm = [&](auto fn, Isa isa, const char* name) {
    if constexpr (std::is_same_v<decltype(fn), QGemmFn>) {
      if (!cpu_has(isa)) {
        std::printf("# %s skipped: this CPU lacks %s\n", name, isa_name(isa));
        return;
      }
      ++kernels_run;
      std::mt19937 rng(7);
      for (int iter = 0; iter < 120; ++iter) {
        const int64_t M = sizes[rng() % sizes.size()], N = sizes[rng() % sizes.size()];
        const int64_t K = sizes[rng() % sizes.size()] * (1 + rng() % 8);
        Problem pr = make_problem(M, N, K, rng, iter % 3 == 0);
        if (iter % 5 == 2) {
          // A bias near the int32 limits: the accumulator may saturate
          // (kernels must take their saturating path), and a small
          // multiplier keeps some outputs inside the clamp.
          const int64_t n = static_cast<int64_t>(rng() % N);
          pr.bias[n] = iter % 2 ? INT32_MAX - 1000 : INT32_MIN + 1000;
          pr.requant[n] = quantize_multiplier(std::exp2(-24));
          pr.p.bias = pr.bias.data();
        }
        if (iter % 5 == 3) {
          // A multiplier from 1 to 2^25 (shift <= 30) in one channel: the
          // rounded values may leave int32 before the clamp, so kernels
          // must keep their wide path for its block.
          const int64_t n = static_cast<int64_t>(rng() % N);
          pr.requant[n] = quantize_multiplier(std::exp2(static_cast<double>(rng() % 250) / 10));
        }
        if (iter % 5 == 4) {
          // Every channel at the edges of the multipliers below 1: just
          // below 1 and 1/2 (shift 31, the largest offset a vectorized
          // rounding may carry) and 2^-23 to 2^-25 (shifts 54 to 56, where
          // such an offset becomes smaller than the clamp range).
          const double edge[] = {0.9999, 0.5, 0.75, std::exp2(-23), std::exp2(-23.5), std::exp2(-24), std::exp2(-25)};
          for (auto& q : pr.requant) q = quantize_multiplier(edge[rng() % 7]);
        }
        ASSERT_EQ(run(fn, pr.p), run(&qu8s8_gemm_requant__ref, pr.p)) << name << " M=" << M << " N=" << N << " K=" << K;
      }
      // Long K: kernels may change their tiling there (panels that fit L1).
      for (int64_t K : {511, 512, 513, 1027})
        for (int64_t N : {16, 33, 49, 65}) {
          Problem pr = make_problem(19, N, K, rng, K % 2 == 1);
          ASSERT_EQ(run(fn, pr.p), run(&qu8s8_gemm_requant__ref, pr.p)) << name << " M=19 N=" << N << " K=" << K;
        }
      // Many rows with more than 4 channel blocks and long rows: kernels
      // may gather the rows in several macro passes (AMX: 48 rows here).
      for (int64_t N : {65, 80}) {
        Problem pr = make_problem(150, N, 1027, rng);
        ASSERT_EQ(run(fn, pr.p), run(&qu8s8_gemm_requant__ref, pr.p)) << name << " M=150 N=" << N << " K=1027";
      }
      std::printf("# %s: 138 random problems equal the reference\n", name);
    }
  };
#define QF_KERNEL(op, isa, fn) check_gemm(&fn, Isa::isa, #fn);
#define QF_PACKER(isa, fn)
#include "quant/kernels/kernel_list.inc"
#undef QF_KERNEL
#undef QF_PACKER
  EXPECT_GE(kernels_run, 1);
}

/// The int32 output mode (c32): every output is the exact sum plus the bias,
/// and the padding between rows stays untouched.
std::vector<int32_t> run32(QGemmFn fn, const QGemmParams& p0) {
  QGemmParams p = p0;
  std::vector<int32_t> c(std::max<int64_t>(1, p.M * p.ldc), 0x5A5A5A5A);
  p.c32 = c.data();
  p.c = nullptr;
  p.requant = nullptr;
  check(p);
  fn(p);
  return c;
}

/// The kernel table of every level this CPU runs and this build has.
std::vector<std::pair<Isa, KernelTable>> runnable_tables() {
  std::vector<std::pair<Isa, KernelTable>> out;
  for (Isa isa : kAllIsas) {
    if (!cpu_has(isa)) continue;
    try {
      out.emplace_back(isa, kernels_for(isa));
    } catch (const ValueError&) {
      // no kernels of that level in this build
    }
  }
  return out;
}

TEST(QGemm, Int32OutputIsTheExactSumPlusBias) {
  std::mt19937 rng(5);
  Problem pr = make_problem(5, 19, 37, rng, true);
  pr.p.bias = pr.bias.data();
  pr.bias[3] = INT32_MAX - 10;  // the sum plus this bias saturates (or not) like saturate_i32
  const auto c = run32(&qu8s8_gemm_requant__ref, pr.p);
  for (int64_t m = 0; m < 5; ++m)
    for (int64_t n = 0; n < 19; ++n) {
      int64_t sum = pr.bias[n];
      for (int64_t k = 0; k < 37; ++k)
        sum += (int64_t{pr.a[m * pr.p.lda + k]} - pr.p.a_zero_point) * pr.b[n * pr.p.ldb + k];
      ASSERT_EQ(c[m * pr.p.ldc + n], saturate_i32(sum)) << m << "," << n;
    }
  EXPECT_EQ(c[pr.p.ldc - 1], 0x5A5A5A5A);  // row padding
}

TEST(QGemm, EveryKernelsInt32OutputEqualsTheReference) {
  const std::vector<int64_t> sizes = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65};
  for (const auto& [isa, t] : runnable_tables()) {
    std::mt19937 rng(13);
    for (int iter = 0; iter < 80; ++iter) {
      const int64_t M = sizes[rng() % sizes.size()], N = sizes[rng() % sizes.size()];
      const int64_t K = sizes[rng() % sizes.size()] * (1 + rng() % 20);  // up to 1300: both VNNI tilings
      Problem pr = make_problem(M, N, K, rng, iter % 2 == 0);
      if (iter % 5 == 0) pr.bias[0] = INT32_MIN + 3;  // saturates downward
      std::vector<int32_t> packed;
      QGemmParams pp = pr.p;
      if (t.qgemm_pack && iter % 3 == 0) {
        packed = t.qgemm_pack(pr.p.b, pr.p.ldb, N, K);
        pp.b_packed = packed.data();
      }
      ASSERT_EQ(run32(t.qgemm, pp), run32(&qu8s8_gemm_requant__ref, pr.p))
          << isa_name(isa) << " M=" << M << " N=" << N << " K=" << K;
    }
    std::printf("# %s: int32 output checked on 80 problems\n", isa_name(isa));
  }
}

TEST(QGemm, PrePackedWeightsGiveTheSameResult) {
  const std::vector<int64_t> sizes = {1, 3, 7, 16, 17, 33, 64, 65};
  for (const auto& [isa, t] : runnable_tables()) {
    if (!t.qgemm_pack) continue;
    std::mt19937 rng(11);
    for (int iter = 0; iter < 60; ++iter) {
      const int64_t M = sizes[rng() % sizes.size()], N = sizes[rng() % sizes.size()], K = sizes[rng() % sizes.size()];
      Problem pr = make_problem(M, N, K, rng, iter % 2);
      const std::vector<int32_t> packed = t.qgemm_pack(pr.p.b, pr.p.ldb, N, K);
      QGemmParams pp = pr.p;
      pp.b_packed = packed.data();
      ASSERT_EQ(run(t.qgemm, pp), run(&qu8s8_gemm_requant__ref, pr.p)) << isa_name(isa) << " M=" << M << " N=" << N
                                                                         << " K=" << K;
    }
    std::printf("# %s: pre-packed weights checked\n", isa_name(isa));
  }
}

TEST(QGemm, BytesLeftByAnEarlierCallAddNothing) {
  // Kernels keep per-thread buffers of gathered rows (AMX: one pass of up to
  // 64 rows, each K rounded up to a 64-byte chunk), not cleared between
  // calls. A call whose rows were all 255 fills them; the next calls' K
  // ends mid-chunk (and M mid-block), so their rows' tails hold those bytes.
  for (const auto& [isa, t] : runnable_tables()) {
    std::mt19937 rng(12);
    for (const auto& [k0, k1] : std::vector<std::pair<int64_t, int64_t>>{{128, 100}, {256, 65}, {192, 129}, {320, 259}}) {
      for (const int64_t n : {40, 64}) {  // N > 16: on the AMX level, its own kernel
        Problem fill = make_problem(64, n, k0, rng);
        std::fill(fill.a.begin(), fill.a.end(), uint8_t{255});
        run(t.qgemm, fill.p);
        Problem pr = make_problem(37, n, k1, rng);
        ASSERT_EQ(run(t.qgemm, pr.p), run(&qu8s8_gemm_requant__ref, pr.p)) << isa_name(isa) << " K " << k0 << " then " << k1
                                                                          << ", N " << n;
      }
    }
  }
}

/// p with A's rows as S runs of `pool` at `offsets` (see QGemmParams::a_offsets).
QGemmParams segmented(const QGemmParams& p, const std::vector<uint8_t>& pool, const std::vector<int64_t>& offsets,
                      int64_t S, int64_t stride) {
  QGemmParams seg = p;
  seg.a = pool.data();
  seg.lda = 0;
  seg.a_offsets = offsets.data();
  seg.segments = S;
  seg.segment_stride = stride;
  return seg;
}

/// The problem with A's rows as S runs of `pool` (one offset per row and run,
/// or per row with segment_stride), on t's GEMM (with t's packed weights
/// when `packed`; the int32 mode too when `int32`), against the reference on
/// pr's contiguous rows.
void expect_segmented_equal(Isa isa, const KernelTable& t, const Problem& pr, const std::vector<uint8_t>& pool,
                            const std::vector<int64_t>& offsets, int64_t S, int64_t stride, bool packed, bool int32) {
  QGemmParams seg = segmented(pr.p, pool, offsets, S, stride);
  std::vector<int32_t> pk;
  if (t.qgemm_pack && packed) {
    pk = t.qgemm_pack(pr.p.b, pr.p.ldb, pr.p.N, pr.p.K);
    seg.b_packed = pk.data();
  }
  std::vector<uint8_t> c(static_cast<size_t>(pr.p.M * pr.p.ldc));
  seg.c = c.data();
  check(seg);
  const auto where = [&] {
    return std::string(isa_name(isa)) + " M=" + std::to_string(pr.p.M) + " N=" + std::to_string(pr.p.N) +
           " K=" + std::to_string(pr.p.K) + " S=" + std::to_string(S) + (seg.b_packed ? " packed" : "");
  };
  ASSERT_EQ(run(t.qgemm, seg), run(&qu8s8_gemm_requant__ref, pr.p)) << where();
  if (int32) {
    ASSERT_EQ(run32(t.qgemm, seg), run32(&qu8s8_gemm_requant__ref, pr.p)) << "int32, " << where();
  }
}

TEST(QGemm, SegmentedRowsEqualTheContiguousProblem) {
  // Rows of A as S runs scattered over a buffer (as a convolution reads a
  // padded image); each kernel must give what the reference gives on the
  // same rows laid out contiguously, requantized or int32, packed or not.
  const std::vector<int64_t> sizes = {1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 33, 64, 65};
  for (const auto& [isa, t] : runnable_tables()) {
    std::mt19937 rng(23);
    for (int iter = 0; iter < 60; ++iter) {
      const int64_t M = sizes[rng() % sizes.size()], N = sizes[rng() % sizes.size()];
      const int64_t S = 1 + rng() % 5, len = 4 * (1 + rng() % 40), K = S * len;  // K up to 800
      Problem pr = make_problem(M, N, K, rng);
      std::vector<uint8_t> pool(static_cast<size_t>(M * K + 97));
      for (auto& v : pool) v = static_cast<uint8_t>(rng());
      // Every other problem has evenly spaced runs (segment_stride): one
      // offset per row.
      const int64_t stride = iter % 2 ? 0 : len + static_cast<int64_t>(rng() % 9);
      std::vector<int64_t> offsets(static_cast<size_t>(M * S));
      for (int64_t m = 0; m < M; ++m) {
        const int64_t row_base = static_cast<int64_t>(rng() % (pool.size() - (S - 1) * stride - len + 1));
        if (stride) offsets[m] = row_base;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t off = stride ? row_base + s * stride : static_cast<int64_t>(rng() % (pool.size() - len + 1));
          if (!stride) offsets[m * S + s] = off;
          for (int64_t k = 0; k < len; ++k) pr.a[m * pr.p.lda + s * len + k] = pool[off + k];
        }
      }
      ASSERT_NO_FATAL_FAILURE(expect_segmented_equal(isa, t, pr, pool, offsets, S, stride, iter % 2, iter % 3 == 0));
    }
    std::printf("# %s: segmented rows checked on 60 problems\n", isa_name(isa));
  }
}

TEST(QGemm, EvenlySpacedRowsOfWholeChunksEqualTheContiguousProblem) {
  // A convolution's rows with kernel rows widened to whole 64-byte chunks
  // (KernelTable::direct_run): blocks of 16 rows evenly spaced, which the
  // AMX kernel loads in place as tiles, mixed with blocks that are not (one
  // row moved), partial blocks, fused pools and the int32 mode. Every kernel
  // must give what the reference gives on the same rows laid out
  // contiguously.
  const std::vector<int64_t> ms = {16, 48, 64, 80, 128, 132}, ns = {10, 16, 32, 40, 64, 70};
  for (const auto& [isa, t] : runnable_tables()) {
    std::mt19937 rng(31);
    for (int iter = 0; iter < 48; ++iter) {
      const int64_t M = ms[rng() % ms.size()], N = ns[rng() % ns.size()];
      const int64_t S = 1 + rng() % 3, len = 64 * (1 + rng() % 3), K = S * len;
      const int64_t spacing = std::vector<int64_t>{3, 16, 32, 48, 64}[rng() % 5];
      const int64_t stride = len + 16 * static_cast<int64_t>(rng() % 40);
      Problem pr = make_problem(M, N, K, rng);
      std::vector<uint8_t> pool(static_cast<size_t>(16 * spacing + (S - 1) * stride + len + 4096));
      for (auto& v : pool) v = static_cast<uint8_t>(rng());
      std::vector<int64_t> offsets(static_cast<size_t>(M));
      const int64_t room = static_cast<int64_t>(pool.size()) - 15 * spacing - (S - 1) * stride - len;
      for (int64_t b = 0; 16 * b < M; ++b) {
        const int64_t base = static_cast<int64_t>(rng() % static_cast<uint64_t>(room + 1));
        for (int64_t r = 0; r < 16 && 16 * b + r < M; ++r) offsets[16 * b + r] = base + r * spacing;
        if (rng() % 4 == 0) offsets[16 * b + rng() % std::min<int64_t>(16, M - 16 * b)] = rng() % (room + 1);
      }
      for (int64_t m = 0; m < M; ++m)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t k = 0; k < len; ++k) pr.a[m * pr.p.lda + s * len + k] = pool[offsets[m] + s * stride + k];
      ASSERT_NO_FATAL_FAILURE(expect_segmented_equal(isa, t, pr, pool, offsets, S, stride, iter % 2, iter % 3 == 0))
          << "spacing " << spacing;
      if (iter % 4 == 1) {
        QGemmParams pooled = segmented(pr.p, pool, offsets, S, stride), want = pr.p;
        pooled.pool = want.pool = 4;
        pooled.ldc = want.ldc = N;
        std::vector<uint8_t> got(static_cast<size_t>(M / 4 * N)), exp(got.size());
        pooled.c = got.data();
        want.c = exp.data();
        t.qgemm(pooled);
        qu8s8_gemm_requant__ref(want);
        ASSERT_EQ(got, exp) << isa_name(isa) << " pool 4, M=" << M << " N=" << N << " K=" << K;
      }
    }
    std::printf("# %s: evenly spaced rows of whole chunks checked on 48 problems\n", isa_name(isa));
  }
}

TEST(QGemm, ChecksTheContract) {
  std::mt19937 rng(3);
  Problem pr = make_problem(4, 4, 8, rng);
  std::vector<uint8_t> c(16);
  pr.p.c = c.data();
  EXPECT_NO_THROW(check(pr.p));
  QGemmParams bad = pr.p;
  bad.lda = 7;
  EXPECT_THROW(check(bad), ValueError);
  bad = pr.p;
  bad.a_zero_point = 256;
  EXPECT_THROW(check(bad), ValueError);
  bad = pr.p;
  bad.out_lo = 10;
  bad.out_hi = 5;
  EXPECT_THROW(check(bad), ValueError);
  bad = pr.p;
  bad.K = int64_t{1} << 20;
  bad.lda = bad.ldb = bad.K;
  EXPECT_THROW(check(bad), ValueError);
  std::vector<QuantMultiplier> rq(4, QuantMultiplier{5, 3});
  bad = pr.p;
  bad.requant = rq.data();
  EXPECT_THROW(check(bad), ValueError);
  const std::vector<int64_t> offsets(8, 0), negative(8, -1);
  bad = pr.p;
  bad.a_offsets = offsets.data();
  bad.segments = 2;  // runs of 4: fine
  EXPECT_NO_THROW(check(bad));
  bad.segments = 3;  // 8 does not split into 3 runs
  EXPECT_THROW(check(bad), ValueError);
  bad.segments = 4;  // runs of 2 bytes
  EXPECT_THROW(check(bad), ValueError);
  bad.segments = 2;
  bad.a_offsets = negative.data();
  EXPECT_THROW(check(bad), ValueError);
  bad = pr.p;
  bad.pool = 2;  // 4 rows: 2 groups
  EXPECT_NO_THROW(check(bad));
  bad.pool = 3;  // 4 rows do not split into groups of 3
  EXPECT_THROW(check(bad), ValueError);
  bad.pool = 0;
  EXPECT_THROW(check(bad), ValueError);
}

/// The expected pooled output: row r holds, per channel, the max of rows
/// r * pool ... of `whole` (row stride ldc); every other entry is `fill`.
template <typename T>
std::vector<T> group_max(const std::vector<T>& whole, int64_t groups, int64_t pool, int64_t N, int64_t ldc, T fill) {
  std::vector<T> want(whole.size(), fill);
  for (int64_t r = 0; r < groups; ++r)
    for (int64_t n = 0; n < N; ++n) {
      T v = whole[r * pool * ldc + n];
      for (int64_t i = 1; i < pool; ++i) v = std::max(v, whole[(r * pool + i) * ldc + n]);
      want[r * ldc + n] = v;
    }
  return want;
}

TEST(QGemm, PooledRowsAreTheMaxOfEachGroup) {
  // The fused max (QGemmParams::pool): row r of the output is, per channel,
  // the largest of the unpooled outputs of rows r * pool ... (computed here
  // from the reference's unpooled result), requantized or int32, contiguous
  // or segmented rows, packed or not. Rows past M / pool stay untouched.
  const std::vector<int64_t> pools = {2, 3, 4, 5, 6, 7, 8, 9, 16}, groups = {1, 2, 3, 4, 5, 8, 13, 17, 33};
  const std::vector<int64_t> sizes = {1, 3, 8, 16, 17, 31, 33, 64, 65};
  int checked = 0;
  for (const auto& [isa, t] : runnable_tables()) {
    std::mt19937 rng(29);
    for (int iter = 0; iter < 90; ++iter) {
      // Pool 4 (a 2x2 max pool, the kernels' native case) every other time.
      const int64_t pool = iter % 2 ? 4 : pools[rng() % pools.size()];
      const int64_t M = pool * groups[rng() % groups.size()], N = sizes[rng() % sizes.size()];
      const bool segmented = iter % 3 == 1;
      const int64_t S = segmented ? 1 + rng() % 3 : 1, K = segmented ? S * 4 * (1 + rng() % 30) : 1 + rng() % 700;
      Problem pr = make_problem(M, N, K, rng, iter % 4 == 0);
      if (iter % 7 == 3) {
        // Ties and the saturating path: a huge bias on one channel.
        const int64_t n = static_cast<int64_t>(rng() % N);
        pr.bias[n] = INT32_MAX - 500;
        pr.p.bias = pr.bias.data();
      }
      QGemmParams q = pr.p;
      std::vector<uint8_t> buf;
      std::vector<int64_t> offsets;
      if (segmented) {
        // Each row as S runs of the A matrix itself, in a scrambled order.
        offsets.resize(static_cast<size_t>(M * S));
        for (int64_t m = 0; m < M; ++m)
          for (int64_t s = 0; s < S; ++s) offsets[m * S + s] = m * pr.p.lda + s * (K / S);
        q.a_offsets = offsets.data();
        q.segments = S;
        q.lda = 0;
      }
      std::vector<int32_t> packed;
      if (t.qgemm_pack && iter % 2 == 0) {
        packed = t.qgemm_pack(pr.p.b, pr.p.ldb, N, K);
        q.b_packed = packed.data();
      }
      q.pool = pool;
      const bool int32_mode = iter % 5 == 4;
      if (int32_mode) {
        const auto want = group_max(run32(&qu8s8_gemm_requant__ref, pr.p), M / pool, pool, N, pr.p.ldc, int32_t{0x5A5A5A5A});
        ASSERT_EQ(run32(t.qgemm, q), want) << isa_name(isa) << " int32, pool " << pool << " M=" << M << " N=" << N
                                           << " K=" << K;
      } else {
        const auto want = group_max(run(&qu8s8_gemm_requant__ref, pr.p), M / pool, pool, N, pr.p.ldc, uint8_t{0xAB});
        std::vector<uint8_t> c(static_cast<size_t>(M * pr.p.ldc));
        q.c = c.data();
        check(q);
        ASSERT_EQ(run(t.qgemm, q), want) << isa_name(isa) << " pool " << pool << " M=" << M << " N=" << N << " K=" << K
                                         << (segmented ? " segmented" : "");
      }
      ++checked;
    }
    std::printf("# %s: pooled rows checked on 90 problems\n", isa_name(isa));
  }
  EXPECT_GE(checked, 90);
}

TEST(QGemm, DispatchTable) {
  EXPECT_TRUE(cpu_has(Isa::ref));
  const KernelTable ref = kernels_for(Isa::ref);
  EXPECT_EQ(ref.qgemm, &qu8s8_gemm_requant__ref);
  EXPECT_NE(kernels().qgemm, nullptr);
  // A level the CPU lacks is refused.
  int lacking = 0;
  for (Isa isa : {Isa::avx2, Isa::avx512vnni, Isa::amx, Isa::neon})
    if (!cpu_has(isa)) {
      EXPECT_THROW(kernels_for(isa), ValueError) << isa_name(isa);
      ++lacking;
    }
  EXPECT_GE(lacking, 1);  // no CPU is both x86 and Arm
  // Only the AMX GEMM reads widened kernel rows in place (64-byte chunks).
  for (const auto& [isa, t] : runnable_tables()) EXPECT_EQ(t.direct_run, isa == Isa::amx ? 64 : 0) << isa_name(isa);
}

}  // namespace
}  // namespace qforge::quant::kernels
