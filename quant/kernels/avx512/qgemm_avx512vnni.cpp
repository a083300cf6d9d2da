// AVX-512 VNNI requantizing u8 x s8 GEMM: tiles of R rows x NV blocks of 16
// output channels with 16 accumulators (16 x 1, 8 x 2, 4 x 4 when the panel
// allows), one vpdpbusd per row and block per 4 values of K. B is packed
// (per call, or once by qgemm_pack__avx512vnni_4x64) into
// [N/16][K/4][16 channels][4 bytes] (zero-padded), with each channel's sum of
// weights kept for the input zero point:
//   sum_k (a - zp) * b = sum_k a * b - zp * sum_k b.
// vpdpbusd adds u8 x s8 products into int32 without saturation, so the dot
// product is exact. A may be plain rows or segmented rows (an implicit
// im2col). Requantization (requant_avx512.h) computes qmath's requantize()
// exactly: bias and zero-point correction in int32 when no accumulator can
// leave int32 (else in int64 with saturation), the 64-bit product with the
// multiplier (vpmuldq), one rounding half to even by an added offset and an
// arithmetic shift per channel (vpsravq), then the clamp and the zero point.
#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "quant/kernels/avx512/requant_avx512.h"
#include "quant/kernels/kernels.h"
#include "quant/kernels/pack_groups.h"

namespace qforge::quant::kernels {

namespace {

/// Four bytes of a row starting at k (zeros past K), as one int32.
inline int32_t load4(const uint8_t* a, int64_t k, int64_t K) {
  if (k + 4 <= K) {
    int32_t v;
    __builtin_memcpy(&v, a + k, 4);
    return v;
  }
  uint8_t t[4] = {0, 0, 0, 0};
  for (int64_t i = 0; k + i < K; ++i) t[i] = a[k + i];
  int32_t v;
  __builtin_memcpy(&v, t, 4);
  return v;
}

/// acc += the u8 x s8 dot products of a and b in groups of 4 (vpdpbusd), in
/// place. Inline asm: GCC 12 compiles _mm512_dpbusd_epi32 with a register
/// copy of the accumulator around every call.
#define QF_DPBUSD(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

/// The requantization of one tile's sums, deferred into the next tile's
/// dot-product loop: one block of 16 outputs per step of K. Done after its own
/// loop, a tile's requantization stalls the in-order dispatch for a few dozen
/// cycles while the vpdpbusd pipes idle; spread over the next loop, it runs on
/// the vector pipes vpdpbusd leaves free (256^3 on one core: about a fifth of
/// the tile's time was outside its loop). Only for requantized output (not
/// c32) where every block's r.narrow holds. The sums are [blocks][16], block
/// b = r * NV + v (with a fused pool, r counts output rows).
template <int NV>
struct Deferred {
  alignas(64) int32_t sums[16][16];
  int blocks = 0, done = 0;
  uint8_t* out = nullptr;  // the tile's first output row, at the panel's first channel
  int64_t ldc = 0;
  const Requant16* rq = nullptr;  // every block's r.narrow holds
  __mmask16 mask[4] = {0, 0, 0, 0};
  __m512i zp32, lo_zp, hi_zp;

  /// requant16_narrow() of the sums at s into the 16 bytes at o, for block
  /// v of the panel, as one asm statement: in the middle of the
  /// dot-product loop, intrinsics made GCC 12 spill an accumulator of the
  /// loop (a store and reload per step on its chain). This uses two scratch
  /// vectors and reads every constant from memory.
  __attribute__((always_inline)) inline void requant_block(const int32_t* s, uint8_t* o, int v) const {
    static constexpr int64_t kOne = 1;
    const Requant16& q = rq[v];
    asm("vmovdqa32 %[sums], %%zmm30\n\t"
        "vpaddd %[off], %%zmm30, %%zmm30\n\t"  // acc, int32 lanes
        "vpmuldq %[me], %%zmm30, %%zmm31\n\t"  // even channels: acc * m, int64
        "vptestmq %[be], %%zmm31, %%k6\n\t"   // the parity bit of floor(prod / 2^s)
        "vpaddq %[he], %%zmm31, %%zmm31\n\t"
        "vpaddq %[one]%{1to8%}, %%zmm31, %%zmm31%{%%k6%}\n\t"
        "vpsravq %[se], %%zmm31, %%zmm31\n\t"
        "vpsrlq $32, %%zmm30, %%zmm30\n\t"  // odd channels
        "vpmuldq %[mo], %%zmm30, %%zmm30\n\t"
        "vptestmq %[bo], %%zmm30, %%k7\n\t"
        "vpaddq %[ho], %%zmm30, %%zmm30\n\t"
        "vpaddq %[one]%{1to8%}, %%zmm30, %%zmm30%{%%k7%}\n\t"
        "vpsravq %[so], %%zmm30, %%zmm30\n\t"
        "vpsllq $32, %%zmm30, %%zmm30\n\t"
        "vmovdqa32 %%zmm30, %%zmm31%{%[odd]%}\n\t"  // odd results into the odd dwords
        "vpmaxsd %[lo], %%zmm31, %%zmm31\n\t"
        "vpminsd %[hi], %%zmm31, %%zmm31\n\t"
        "vpaddd %[zp], %%zmm31, %%zmm31\n\t"
        "vpmovdb %%zmm31, %[out]%{%[mask]%}\n\t"
        : [out] "+m"(*reinterpret_cast<uint8_t(*)[16]>(o))
        : [sums] "m"(*reinterpret_cast<const int32_t(*)[16]>(s)), [off] "m"(q.offset32), [me] "m"(q.mult_even),
          [be] "m"(q.bit_even), [he] "m"(q.half_m1_even), [se] "m"(q.shift_even), [mo] "m"(q.mult_odd),
          [bo] "m"(q.bit_odd), [ho] "m"(q.half_m1_odd), [so] "m"(q.shift_odd), [one] "m"(kOne), [lo] "m"(lo_zp),
          [hi] "m"(hi_zp), [zp] "m"(zp32), [odd] "Yk"(static_cast<__mmask16>(0xAAAA)), [mask] "Yk"(mask[v])
        : "xmm30", "xmm31", "k6", "k7");
  }
  void step() {
    const unsigned b = static_cast<unsigned>(done++), r = b / NV, v = b % NV;
    requant_block(sums[b], out + r * ldc + 16 * v, static_cast<int>(v));
  }
  void finish() {
    while (done < blocks) step();
  }
};

/// The dot products of R rows x NV blocks of 16 channels into
/// sums[R][NV][16] (R <= 16, NV <= 4, R * NV <= 16 accumulators; rows past 8
/// only with NV = 1, rows past 4 only with NV <= 2). Each
/// broadcast of 4 input bytes feeds NV vpdpbusd, and each load of 16
/// channels' weights feeds R. The accumulators are named variables, not an
/// array: GCC 12 keeps an array of __m512i on the stack and reloads and
/// stores it around every vpdpbusd.
template <int R, int NV>
inline void dot_tile(const QGemmParams& p, const int32_t* packed, int64_t block_stride, int64_t K4, int64_t m0,
                     int32_t (*sums)[NV][16], Deferred<NV>* d) {
  static_assert(R >= 1 && R <= 16 && NV >= 1 && NV <= 4 && R * NV <= 16 && (R <= 4 || NV <= 2) && (R <= 8 || NV == 1),
                "the named accumulators cover rows 0-3 x 4 blocks, 4-7 x 2 and 8-15 x 1");
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z, c20 = z, c21 = z, c22 = z,
          c23 = z, c30 = z, c31 = z, c32 = z, c33 = z, c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z,
          c70 = z, c71 = z, c80 = z, c90 = z, cA0 = z, cB0 = z, cC0 = z, cD0 = z, cE0 = z, cF0 = z;
  const uint8_t* a[16];
  if (!p.a_offsets)
    for (int r = 0; r < 16; ++r) a[r] = p.a + (m0 + (r < R ? r : 0)) * p.lda;
  const int32_t* bp[4];
  for (int v = 0; v < 4; ++v) bp[v] = packed + (v < NV ? v : 0) * block_stride;
  __m512i b0 = z, b1 = z, b2 = z, b3 = z;
  auto load_b = [&](int64_t k4) {
    b0 = _mm512_loadu_si512(bp[0] + k4 * 16);
    if constexpr (NV > 1) b1 = _mm512_loadu_si512(bp[1] + k4 * 16);
    if constexpr (NV > 2) b2 = _mm512_loadu_si512(bp[2] + k4 * 16);
    if constexpr (NV > 3) b3 = _mm512_loadu_si512(bp[3] + k4 * 16);
  };
  auto bcast = [](const uint8_t* row, int64_t k4) {
    int32_t v;
    __builtin_memcpy(&v, row + 4 * k4, 4);
    return _mm512_set1_epi32(v);
  };
  auto bcast_tail = [&](const uint8_t* row, int64_t k4) { return _mm512_set1_epi32(load4(row, 4 * k4, p.K)); };
#define QF_ROW1(r, av) QF_DPBUSD(c##r##0, (av), b0)
#define QF_ROW2(r, av)                                   \
  do {                                                   \
    const __m512i a_ = (av);                             \
    QF_DPBUSD(c##r##0, a_, b0);                          \
    if constexpr (NV > 1) QF_DPBUSD(c##r##1, a_, b1);    \
  } while (0)
#define QF_ROW4(r, av)                                   \
  do {                                                   \
    const __m512i a_ = (av);                             \
    QF_DPBUSD(c##r##0, a_, b0);                          \
    if constexpr (NV > 1) QF_DPBUSD(c##r##1, a_, b1);    \
    if constexpr (NV > 2) QF_DPBUSD(c##r##2, a_, b2);    \
    if constexpr (NV > 3) QF_DPBUSD(c##r##3, a_, b3);    \
  } while (0)
#define QF_ROWS(load)                                    \
  QF_ROW4(0, load(a[0], k4));                            \
  if constexpr (R > 1) QF_ROW4(1, load(a[1], k4));       \
  if constexpr (R > 2) QF_ROW4(2, load(a[2], k4));       \
  if constexpr (R > 3) QF_ROW4(3, load(a[3], k4));       \
  if constexpr (R > 4) QF_ROW2(4, load(a[4], k4));       \
  if constexpr (R > 5) QF_ROW2(5, load(a[5], k4));       \
  if constexpr (R > 6) QF_ROW2(6, load(a[6], k4));       \
  if constexpr (R > 7) QF_ROW2(7, load(a[7], k4));       \
  if constexpr (R > 8) QF_ROW1(8, load(a[8], k4));       \
  if constexpr (R > 9) QF_ROW1(9, load(a[9], k4));       \
  if constexpr (R > 10) QF_ROW1(A, load(a[10], k4));     \
  if constexpr (R > 11) QF_ROW1(B, load(a[11], k4));     \
  if constexpr (R > 12) QF_ROW1(C, load(a[12], k4));     \
  if constexpr (R > 13) QF_ROW1(D, load(a[13], k4));     \
  if constexpr (R > 14) QF_ROW1(E, load(a[14], k4));     \
  if constexpr (R > 15) QF_ROW1(F, load(a[15], k4))
  // The previous tile's rows still to requantize (d->done is 0 here), one
  // block per two steps of K (with one per step, the block's 15 loads of
  // sums and constants on top of the step's 8 made the step about twice as
  // long: Zen 5 here sustained about 2 loads per cycle next to vpdpbusd);
  // d->finish() does what K leaves.
  int64_t d_rows = d ? d->blocks / NV : 0;
  uint8_t* d_out = d ? d->out : nullptr;
  const int32_t* d_sums = d ? d->sums[0] : nullptr;
#define QF_DEFERRED_STEP(V, kb)                                    \
  if constexpr (NV > V) {                                          \
    load_b(kb);                                                    \
    QF_ROWS(bcast);                                                \
    ++k4;                                                          \
    load_b(kb);                                                    \
    QF_ROWS(bcast);                                                \
    d->requant_block(d_sums + 16 * V, d_out + 16 * V, V);          \
    ++k4;                                                          \
  }
#define QF_DEFERRED_ROW(kb)                                        \
  do {                                                             \
    QF_DEFERRED_STEP(0, kb)                                        \
    QF_DEFERRED_STEP(1, kb)                                        \
    QF_DEFERRED_STEP(2, kb)                                        \
    QF_DEFERRED_STEP(3, kb)                                        \
    d_out += d->ldc;                                               \
    d_sums += 16 * NV;                                             \
  } while (0)
  // 16 x 1 tiles over evenly spaced rows (row r at row 0 + r * sp: plain
  // rows, and a conv's consecutive output pixels, whose runs sit at the
  // same distance in every segment): the whole tile as one asm loop that
  // addresses all 16 rows from two bases and the spacings s, 3s, 5s, 7s
  // scaled by 1, 2 or 4. With 16 row pointers GCC 12 kept some in vector
  // registers and on the stack and reloaded them every step, and the loop
  // ran at about two thirds of the vpdpbusd peak even with long K.
  if constexpr (R == 16 && NV == 1) {
    int64_t sp = 0, seg4 = 0, nseg = 0, seg_adv = 0;
    const uint8_t* r0 = nullptr;
    bool even = false;
    if (!p.a_offsets) {
      even = p.K % 4 == 0;
      r0 = p.a + m0 * p.lda, sp = p.lda, seg4 = p.K / 4, nseg = 1;
    } else if (p.segment_stride > 0) {
      r0 = p.a + p.a_offsets[m0];
      sp = p.a_offsets[m0 + 1] - p.a_offsets[m0];
      even = true;
      for (int r = 2; r < 16; ++r) even = even && p.a_offsets[m0 + r] - p.a_offsets[m0] == r * sp;
      nseg = p.segments, seg4 = p.K / p.segments / 4, seg_adv = p.segment_stride - 4 * seg4;
    }
    if (even && seg4 > 0 && !d) {
      const uint8_t* r8 = r0 + 8 * sp;
      const int32_t* bq = bp[0];
      const int64_t s1 = sp, s3 = 3 * sp, s5 = 5 * sp, s7 = 7 * sp;
      int64_t n;
#define QF_E(acc, addr, t) "vpbroadcastd " addr ", %%zmm" #t "\n\tvpdpbusd %%zmm16, %%zmm" #t ", %%zmm" #acc "\n\t"
#define QF_Z(i) "vpxord %%xmm" #i ", %%xmm" #i ", %%xmm" #i "\n\t"
#define QF_S(i) "vmovdqa64 %%zmm" #i ", " #i "*64(%[out])\n\t"
      asm volatile(
          QF_Z(0) QF_Z(1) QF_Z(2) QF_Z(3) QF_Z(4) QF_Z(5) QF_Z(6) QF_Z(7) QF_Z(8) QF_Z(9) QF_Z(10) QF_Z(11)
          QF_Z(12) QF_Z(13) QF_Z(14) QF_Z(15)
          "2:\n\t"
          "mov %[seg4], %[n]\n\t"
          "1:\n\t"
          "vmovdqu64 (%[bq]), %%zmm16\n\t"
          QF_E(0, "(%[r0])", 17) QF_E(1, "(%[r0],%[s1],1)", 18) QF_E(2, "(%[r0],%[s1],2)", 17)
          QF_E(3, "(%[r0],%[s3],1)", 18) QF_E(4, "(%[r0],%[s1],4)", 17) QF_E(5, "(%[r0],%[s5],1)", 18)
          QF_E(6, "(%[r0],%[s3],2)", 17) QF_E(7, "(%[r0],%[s7],1)", 18) QF_E(8, "(%[r8])", 17)
          QF_E(9, "(%[r8],%[s1],1)", 18) QF_E(10, "(%[r8],%[s1],2)", 17) QF_E(11, "(%[r8],%[s3],1)", 18)
          QF_E(12, "(%[r8],%[s1],4)", 17) QF_E(13, "(%[r8],%[s5],1)", 18) QF_E(14, "(%[r8],%[s3],2)", 17)
          QF_E(15, "(%[r8],%[s7],1)", 18)
          "add $4, %[r0]\n\t"
          "add $4, %[r8]\n\t"
          "add $64, %[bq]\n\t"
          "dec %[n]\n\t"
          "jnz 1b\n\t"
          "add %[adv], %[r0]\n\t"
          "add %[adv], %[r8]\n\t"
          "dec %[nseg]\n\t"
          "jnz 2b\n\t"
          QF_S(0) QF_S(1) QF_S(2) QF_S(3) QF_S(4) QF_S(5) QF_S(6) QF_S(7) QF_S(8) QF_S(9) QF_S(10) QF_S(11)
          QF_S(12) QF_S(13) QF_S(14) QF_S(15)
          : [r0] "+r"(r0), [r8] "+r"(r8), [bq] "+r"(bq), [nseg] "+r"(nseg), [n] "=&r"(n)
          : [seg4] "r"(seg4), [adv] "r"(seg_adv), [s1] "r"(s1), [s3] "r"(s3), [s5] "r"(s5), [s7] "r"(s7),
            [out] "r"(&sums[0][0][0])
          : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
            "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "memory", "cc");
#undef QF_S
#undef QF_Z
#undef QF_E
      return;
    }
  }
  if (p.a_offsets) {
    // Segmented rows: each run starts at its own offset and holds a whole
    // number of groups of 4 (check() ensures it); the weights run on.
    const int64_t S = p.segments, seg4 = p.K / S / 4;
    for (int64_t s = 0; s < S; ++s) {
      for (int r = 0; r < R; ++r) a[r] = p.a + segment_offset(p, m0 + r, s);
      int64_t k4 = 0;
      if (d_rows > 0) {
        for (int64_t e = std::min<int64_t>(d_rows, seg4 / (2 * NV)); e > 0; --e, --d_rows) QF_DEFERRED_ROW(s * seg4 + k4);
      }
      for (; k4 < seg4; ++k4) {
        load_b(s * seg4 + k4);
        QF_ROWS(bcast);
      }
    }
  } else {
    // Whole groups of 4 bytes, then (when K % 4 != 0) one zero-padded group.
    const int64_t full = p.K / 4;
    int64_t k4 = 0;
    for (int64_t e = std::min<int64_t>(d_rows, full / (2 * NV)); e > 0; --e, --d_rows) QF_DEFERRED_ROW(k4);
    for (; k4 < full; ++k4) {
      load_b(k4);
      QF_ROWS(bcast);
    }
    if (full < K4) {
      const int64_t k4 = full;
      load_b(k4);
      QF_ROWS(bcast_tail);
    }
  }
#undef QF_ROWS
#undef QF_ROW4
#undef QF_ROW2
#undef QF_ROW1
#undef QF_DEFERRED_ROW
#undef QF_DEFERRED_STEP
  if (d) {
    d->done = d->blocks - static_cast<int>(d_rows) * NV;
    d->finish();  // before the sums are overwritten (they are d->sums)
  }
  const __m512i all[16][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                              {c30, c31, c32, c33}, {c40, c41, z, z},     {c50, c51, z, z},
                              {c60, c61, z, z},     {c70, c71, z, z},     {c80, z, z, z},
                              {c90, z, z, z},       {cA0, z, z, z},       {cB0, z, z, z},
                              {cC0, z, z, z},       {cD0, z, z, z},       {cE0, z, z, z},
                              {cF0, z, z, z}};
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm512_store_si512(sums[r][v], all[r][v]);
}

/// R rows x NV blocks of 16 channels: the dot products, then the
/// requantization of every output.
template <int R, int NV>
inline void tile(const QGemmParams& p, const int32_t* packed, int64_t block_stride, const Requant16* rq, int64_t K4,
                 int64_t m0, int64_t n0, Deferred<NV>* d) {
  if (d) {
    // This tile's sums replace the previous tile's (requantized during this
    // tile's loop) and wait for the next tile's loop or d->finish().
    dot_tile<R, NV>(p, packed, block_stride, K4, m0, reinterpret_cast<int32_t(*)[NV][16]>(d->sums), d);
    d->done = 0;
    if (p.pool > 1) {
      // Groups of pool rows (pool divides R) become one row of maxima in
      // place (row r reads rows r * pool ... and r * pool >= r).
      const int P = static_cast<int>(p.pool), rows = R / P;
      for (int r = 0; r < rows; ++r)
        for (int v = 0; v < NV; ++v) {
          __m512i best = _mm512_load_si512(d->sums[r * P * NV + v]);
          for (int i = 1; i < P; ++i) best = _mm512_max_epi32(best, _mm512_load_si512(d->sums[(r * P + i) * NV + v]));
          _mm512_store_si512(d->sums[r * NV + v], best);
        }
      d->blocks = rows * NV;
      d->out = p.c + (m0 / P) * p.ldc + n0;
      return;
    }
    d->blocks = R * NV;
    d->out = p.c + m0 * p.ldc + n0;
    return;
  }
  alignas(64) int32_t sums[R][NV][16];
  dot_tile<R, NV>(p, packed, block_stride, K4, m0, sums, static_cast<Deferred<NV>*>(nullptr));
  const __m512i zp32 = _mm512_set1_epi32(p.out_zero_point), lo_zp = _mm512_set1_epi32(p.out_lo - p.out_zero_point),
                hi_zp = _mm512_set1_epi32(p.out_hi - p.out_zero_point);
  for (int v = 0; v < NV; ++v) {
    const int64_t nn = std::min<int64_t>(16, p.N - (n0 + 16 * v));
    const __mmask16 store_mask = static_cast<__mmask16>((1u << nn) - 1);
    if (p.pool > 1) {
      // Groups of pool rows (pool divides R): the max of the raw sums, whose
      // map to the output never decreases, then one requantization.
      for (int r = 0; r < R; r += static_cast<int>(p.pool)) {
        __m512i best = _mm512_load_si512(sums[r][v]);
        for (int i = 1; i < p.pool; ++i) best = _mm512_max_epi32(best, _mm512_load_si512(sums[r + i][v]));
        const int64_t out = (m0 + r) / p.pool;
        if (p.c32) _mm512_mask_storeu_epi32(p.c32 + out * p.ldc + n0 + 16 * v, store_mask, acc16(best, rq[v]));
        else
          _mm_mask_storeu_epi8(p.c + out * p.ldc + n0 + 16 * v, store_mask,
                               requant16(best, rq[v], zp32, lo_zp, hi_zp));
      }
      continue;
    }
    if (p.c32) {
      for (int r = 0; r < R; ++r)
        _mm512_mask_storeu_epi32(p.c32 + (m0 + r) * p.ldc + n0 + 16 * v, store_mask,
                                 acc16(_mm512_load_si512(sums[r][v]), rq[v]));
      continue;
    }
    // The output in locals (the byte stores may alias p), and the narrow
    // test once per block rather than per row.
    const int64_t ldc = p.ldc;
    uint8_t* out = p.c + m0 * ldc + n0 + 16 * v;
    if (rq[v].narrow) {
      for (int r = 0; r < R; ++r, out += ldc)
        _mm_mask_storeu_epi8(out, store_mask, requant16_narrow(_mm512_load_si512(sums[r][v]), rq[v], zp32, lo_zp, hi_zp));
    } else {
      for (int r = 0; r < R; ++r, out += ldc)
        _mm_mask_storeu_epi8(out, store_mask, requant16(_mm512_load_si512(sums[r][v]), rq[v], zp32, lo_zp, hi_zp));
    }
  }
}

/// All rows against NV blocks: tiles of R rows, then of R/2, R/4, ... (so
/// that a remainder still has several independent accumulators), then
/// single rows.
template <int R, int NV>
void run_blocks(const QGemmParams& p, const int32_t* packed, int64_t block_stride, const Requant16* rq, int64_t K4,
                int64_t n0, Deferred<NV>* d, int64_t m = 0) {
  for (; m + R <= p.M; m += R) tile<R, NV>(p, packed, block_stride, rq, K4, m, n0, d);
  if constexpr (R > 2) {
    run_blocks<R / 2, NV>(p, packed, block_stride, rq, K4, n0, d, m);
  } else {
    for (; m < p.M; ++m) tile<1, NV>(p, packed, block_stride, rq, K4, m, n0, d);
  }
}

/// Panels of fewer blocks keep the requantization after each tile: their
/// tiles (8 x 2, 16 x 1) broadcast 8 or 16 rows per step of K, so their
/// loops already load about as much as the core sustains, and deferring
/// made ResNet-20 int8 about 12% slower (one thread, alternated builds).
constexpr int kDeferMinNV = 3;

/// run_blocks for one panel, with each tile's requantization deferred into
/// the next tile's loop when the output is plain requantized codes.
template <int R, int NV>
void run_panel(const QGemmParams& p, const int32_t* packed, int64_t block_stride, const Requant16* rq, int64_t K4,
               int64_t n0) {
  bool narrow = true;
  for (int v = 0; v < NV; ++v) narrow = narrow && rq[v].narrow;
  if (NV < kDeferMinNV || p.c32 || !narrow) return run_blocks<R, NV>(p, packed, block_stride, rq, K4, n0, nullptr);
  Deferred<NV> d;
  d.ldc = p.ldc;
  d.rq = rq;
  for (int v = 0; v < NV; ++v) {
    const int64_t nn = std::min<int64_t>(16, p.N - (n0 + 16 * v));
    d.mask[v] = static_cast<__mmask16>((1u << nn) - 1);
  }
  d.zp32 = _mm512_set1_epi32(p.out_zero_point);
  d.lo_zp = _mm512_set1_epi32(p.out_lo - p.out_zero_point);
  d.hi_zp = _mm512_set1_epi32(p.out_hi - p.out_zero_point);
  run_blocks<R, NV>(p, packed, block_stride, rq, K4, n0, &d);
  d.finish();
}

}  // namespace

namespace {

void pack_into(std::vector<int32_t>& out, const int8_t* b0, int64_t ldb, int64_t N, int64_t K) {
  pack_groups_of_4(out, b0, ldb, N, K, 1);
}

}  // namespace

std::vector<int32_t> qgemm_pack__avx512vnni_4x64(const int8_t* b, int64_t ldb, int64_t N, int64_t K) {
  std::vector<int32_t> out;
  pack_into(out, b, ldb, N, K);
  return out;
}

void qu8s8_gemm_requant__avx512vnni_4x64(const QGemmParams& p) {
  if (p.M == 0 || p.N == 0) return;
  // Native pooling where every tile holds whole groups: tiles have 4, 8 or
  // 16 rows and start at multiples of their height, and M % pool == 0 keeps
  // the smaller remainder tiles at multiples of 2 or 4.
  if (p.pool > 1 && 4 % p.pool != 0) return gemm_pooled_via_c32(&qu8s8_gemm_requant__avx512vnni_4x64, p);
  const int64_t K4 = (p.K + 3) / 4, NB = (p.N + 15) / 16;
  const int32_t* base = p.b_packed;
  if (!base) {
    thread_local std::vector<int32_t> tl;
    pack_into(tl, p.b, p.ldb, p.N, p.K);
    base = tl.data();
  }
  const int32_t* packed = base;
  const int32_t* bsum = base + NB * K4 * 16;
  // Passes over the rows with panels of up to 4 blocks of 16 channels (4
  // rows per tile), or of 2 blocks (8 rows per tile) when K is long: a
  // panel's packed weights then stay within 32 KB, in L1.
  const int64_t width = p.K <= 512 ? 4 : 2;
  for (int64_t nb = 0; nb < NB; nb += width) {
    const int64_t nv = std::min<int64_t>(width, NB - nb);
    Requant16 rq[4];
    for (int64_t v = 0; v < nv; ++v) rq[v] = make_requant(p, bsum + (nb + v) * 16, (nb + v) * 16);
    const int32_t* pk = packed + nb * K4 * 16;
    const int64_t stride = K4 * 16;
    switch (nv) {
      case 4: run_panel<4, 4>(p, pk, stride, rq, K4, nb * 16); break;
      case 3: run_panel<4, 3>(p, pk, stride, rq, K4, nb * 16); break;
      // 16 accumulators whenever the panel allows: vpdpbusd has a latency
      // of several cycles, and fewer independent chains leave it idle.
      case 2: run_panel<8, 2>(p, pk, stride, rq, K4, nb * 16); break;
      default: run_panel<16, 1>(p, pk, stride, rq, K4, nb * 16); break;
    }
  }
}

}  // namespace qforge::quant::kernels
