#pragma once
// int8 kernels of the runtime, chosen once at run time. Every kernel has a
// scalar reference (always compiled, the fallback and the test oracle) and
// AVX2, AVX-512 VNNI, AMX-INT8 (the GEMM) and NEON versions that must equal
// it bit for bit.
// kernel_list.inc is the one list of kernels: the dispatch table, the tests
// and the benchmarks all include it, so no kernel goes untested.
//
// Depends on core alone (through quant/runtime/qmath.h, the arithmetic).

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "quant/runtime/qmath.h"

namespace qforge::quant::kernels {

/// v clamped to [INT32_MIN, INT32_MAX]: how a kernel's accumulator plus bias
/// goes to int32 before requantize().
inline int32_t saturate_i32(int64_t v) {
  return static_cast<int32_t>(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
}

/// C = requant(A_u8 * B_s8^T): for each row m < M and output channel n < N,
///   acc = sum_k (a[m*lda + k] - a_zero_point) * b[n*ldb + k] + bias[n]
///   c[m*ldc + n] = requantize(saturate_i32(acc), requant[n], out_zero_point, out_lo, out_hi)
/// (the sum is exact; only a bias near the int32 limits can saturate).
/// A holds activations (a linear layer's input, or im2col rows), B one row of
/// K weights per output channel, zero point 0 (symmetric weights). bias may
/// be null (0). out_lo/out_hi carry the fused activation (activation_bounds).
/// The dot product itself stays within int32 for K < 2^31 / (255 * 128).
struct QGemmParams {
  /// Rows of A and C, output channels (rows of B, columns of C), and the
  /// dot-product length.
  int64_t M = 0, N = 0, K = 0;
  /// u8 activations [M, K], row stride lda (>= K); not owned.
  const uint8_t* a = nullptr;
  int64_t lda = 0;
  /// The activations' zero point, in [0, 255].
  int32_t a_zero_point = 0;
  /// s8 weights [N, K], row stride ldb (>= K); not owned.
  const int8_t* b = nullptr;
  int64_t ldb = 0;
  /// int32 biases [N] at scale s_in * s_w, or null for 0.
  const int32_t* bias = nullptr;
  /// The requantization multiplier of each output channel [N].
  const QuantMultiplier* requant = nullptr;
  /// The output zero point and the clamp bounds (activation_bounds).
  int32_t out_zero_point = 0, out_lo = 0, out_hi = 255;
  /// u8 output codes [M, N], row stride ldc (>= N); written, not owned.
  uint8_t* c = nullptr;
  int64_t ldc = 0;
  /// Optional: B already packed by the same level's pack function
  /// (KernelTable::qgemm_pack) for this b, N and K; the kernel then skips its
  /// own packing. Null: the kernel packs b itself.
  const int32_t* b_packed = nullptr;
  /// Optional: the int32 output mode. When set, the kernel writes
  /// saturate_i32(sum + bias) to c32[m * ldc + n] instead of requantizing:
  /// c, requant, out_zero_point and the bounds are then unused. The LSTM's
  /// gates combine two such GEMMs (input and recurrent) before one rounding.
  int32_t* c32 = nullptr;
  /// Optional: segmented rows, an implicit im2col. When set, row m of A is
  /// `segments` runs of K / segments bytes, run s starting at
  /// a + a_offsets[m * segments + s] (lda is then unused): a convolution
  /// reads each kernel row's taps straight from a padded input image.
  /// K must be a multiple of segments, and K / segments a multiple of 4.
  const int64_t* a_offsets = nullptr;
  int64_t segments = 1;
  /// Optional, with a_offsets: evenly spaced runs. When > 0, a_offsets holds
  /// one offset per row and run s of row m starts at a + a_offsets[m] + s *
  /// segment_stride (a convolution's kernel rows are one padded image row
  /// apart).
  int64_t segment_stride = 0;
  /// Optional: a fused max over groups of `pool` consecutive rows. When > 1,
  /// M is a multiple of pool and C has M / pool rows: row r holds, per
  /// channel, the largest of rows r * pool ... r * pool + pool - 1 of the
  /// contract above. Requantization (and the int32 mode's saturation) never
  /// decreases when the sum grows, so the kernel may take the max of the
  /// exact sums and requantize once: a max pool after a convolution whose rows
  /// come window by window fuses into it, bit for bit.
  int64_t pool = 1;
};

/// The offset of run s of row m of segmented rows (QGemmParams::a_offsets).
inline int64_t segment_offset(const QGemmParams& p, int64_t m, int64_t s) {
  return p.segment_stride > 0 ? p.a_offsets[m] + s * p.segment_stride : p.a_offsets[m * p.segments + s];
}

/// Row m of A as one contiguous run when the rows are segmented
/// (QGemmParams::a_offsets): copies the runs into `buf` (K bytes) and returns
/// it; otherwise returns the row in place.
inline const uint8_t* gemm_row(const QGemmParams& p, int64_t m, uint8_t* buf) {
  if (!p.a_offsets) return p.a + m * p.lda;
  const int64_t len = p.K / p.segments;
  for (int64_t s = 0; s < p.segments; ++s)
    std::memcpy(buf + s * len, p.a + segment_offset(p, m, s), static_cast<size_t>(len));
  return buf;
}

/// For kernels without a native segmented mode: the same problem with A's
/// rows gathered into `rows` (M x K, contiguous), or p itself when A is
/// already contiguous.
inline QGemmParams gather_segmented_rows(const QGemmParams& p, std::vector<uint8_t>& rows) {
  if (!p.a_offsets) return p;
  rows.resize(static_cast<size_t>(p.M * p.K));
  for (int64_t m = 0; m < p.M; ++m) gemm_row(p, m, rows.data() + m * p.K);
  QGemmParams q = p;
  q.a = rows.data();
  q.lda = p.K;
  q.a_offsets = nullptr;
  q.segments = 1;
  return q;
}

/// The output code of channel n from the exact sum of (a - zp) * b: adds the
/// bias, saturates to int32 and requantizes (every kernel's last step, in
/// scalar form).
inline uint8_t finish_output(const QGemmParams& p, int64_t n, int64_t sum) {
  const int64_t acc = sum + (p.bias ? p.bias[n] : 0);
  return static_cast<uint8_t>(requantize(saturate_i32(acc), p.requant[n], p.out_zero_point, p.out_lo, p.out_hi));
}

/// The int32 output mode's value of channel n (QGemmParams::c32): the exact
/// sum plus the bias, saturated to int32.
inline int32_t finish_acc(const QGemmParams& p, int64_t n, int64_t sum) {
  return saturate_i32(sum + (p.bias ? p.bias[n] : 0));
}

/// Stores output (m, n) of the exact sum in either mode (c32 or requantized c).
inline void store_output(const QGemmParams& p, int64_t m, int64_t n, int64_t sum) {
  if (p.c32) p.c32[m * p.ldc + n] = finish_acc(p, n, sum);
  else p.c[m * p.ldc + n] = finish_output(p, n, sum);
}

/// For kernels without a native pooled mode (QGemmParams::pool): runs
/// `gemm` in the int32 mode on blocks of rows, then takes the max of each
/// group and requantizes it with requantize(). p.pool must be > 1.
void gemm_pooled_via_c32(void (*gemm)(const QGemmParams&), const QGemmParams& p);

/// Throws ValueError naming the problem when the sizes, strides, pointers,
/// zero points or bounds do not fit the contract above.
void check(const QGemmParams& p);

/// A requantizing GEMM kernel: computes the QGemmParams contract and writes
/// only the M x N block of c. Kernels do not validate p (check() does) and
/// assume the CPU has their level (cpu_has()).
using QGemmFn = void (*)(const QGemmParams&);
/// Packs B ([N, K], leading dimension ldb) into a kernel's own layout, once,
/// so that layers can keep it (QGemmParams::b_packed).
using QGemmPackFn = std::vector<int32_t> (*)(const int8_t* b, int64_t ldb, int64_t N, int64_t K);

/// Depthwise convolution (channel multiplier 1) of one NHWC image, rows
/// [oh_begin, oh_end) of the output: for each output pixel and channel c,
///   acc = sum over the taps (i, j) inside the image of
///         (x[ih, iw, c] - x_zero_point) * w[(i * KW + j) * C + c]  + bias[c]
///   y[oh, ow, c] = requantize(saturate_i32(acc), requant[c], out_zero_point, out_lo, out_hi)
/// with ih = oh * stride_h - pad_h + i * dil_h (likewise iw). Taps in the
/// padding add nothing: padding is real 0, the input zero point. The sum is
/// exact (at most 64 x 64 taps of 255 x 128).
struct QDwParams {
  /// The input image [H, W, C] (u8 codes) and its zero point in [0, 255].
  int64_t H = 0, W = 0, C = 0;
  const uint8_t* x = nullptr;
  int32_t x_zero_point = 0;
  /// Window geometry: kernel, stride (>= 1), padding (>= 0), dilation (>= 1).
  int64_t KH = 1, KW = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  /// The output size and the rows to compute, 0 <= oh_begin <= oh_end <= OH.
  int64_t OH = 0, OW = 0, oh_begin = 0, oh_end = 0;
  /// s8 weights [KH * KW, C] (tap-major: a tap's channels are contiguous).
  const int8_t* w = nullptr;
  /// int32 biases [C] at scale s_in * s_w[c], or null for 0.
  const int32_t* bias = nullptr;
  /// Per-channel requantization multipliers [C].
  const QuantMultiplier* requant = nullptr;
  /// Output zero point and clamp bounds (activation_bounds).
  int32_t out_zero_point = 0, out_lo = 0, out_hi = 255;
  /// Output [OH, OW, C] u8 codes; only rows [oh_begin, oh_end) are written.
  uint8_t* y = nullptr;
};
/// Throws ValueError naming the problem when p does not fit the contract.
void check(const QDwParams& p);
/// The output code of channel c from its exact window sum (bias added,
/// saturated, requantized): every depthwise kernel's last step in scalar form.
inline uint8_t finish_dw(const QDwParams& p, int64_t c, int64_t sum) {
  return static_cast<uint8_t>(requantize(saturate_i32(sum + (p.bias ? p.bias[c] : 0)), p.requant[c],
                                         p.out_zero_point, p.out_lo, p.out_hi));
}
/// A depthwise kernel (QDwParams); kernels do not validate p.
using QDwFn = void (*)(const QDwParams&);

/// Quantized add of two u8 tensors of n codes (a residual), qmath's add rule
/// element by element:
///   y[i] = requantize_add(a[i] - a_zero_point, b[i] - b_zero_point, m, out_zero_point, out_lo, out_hi)
/// i.e. clamp(rounding_shift((a - zp_a) * m.a + (b - zp_b) * m.b, m.shift) + zp, lo, hi), exact in int64.
struct QAddParams {
  int64_t n = 0;
  const uint8_t* a = nullptr;
  const uint8_t* b = nullptr;
  /// The inputs' zero points, in [0, 255].
  int32_t a_zero_point = 0, b_zero_point = 0;
  /// From add_multipliers(): both multipliers in [0, 2^31), shift in [1, 62].
  AddMultipliers m;
  /// Output zero point and clamp bounds (activation_bounds for a fused ReLU).
  int32_t out_zero_point = 0, out_lo = 0, out_hi = 255;
  /// Output codes [n]; may be a or b (in place).
  uint8_t* y = nullptr;
};
/// Throws ValueError naming the problem when p does not fit the contract.
void check(const QAddParams& p);
/// A quantized-add kernel (QAddParams); kernels do not validate p.
using QAddFn = void (*)(const QAddParams&);

/// Instruction-set levels a kernel can need. amx is AVX-512 VNNI plus
/// AMX-INT8 tiles (its table takes the AVX-512 kernels for the other ops).
enum class Isa { ref, avx2, avx512vnni, neon, amx };
/// Every level, for loops over them (tests, benchmarks).
inline constexpr Isa kAllIsas[] = {Isa::ref, Isa::avx2, Isa::avx512vnni, Isa::amx, Isa::neon};
/// The level's name as QFORGE_KERNELS spells it ("ref", "avx2", "avx512vnni",
/// "amx", "neon"), a static string; "?" for a value outside the enum.
const char* isa_name(Isa isa);
/// True when this CPU can run kernels of that level. For amx this also asks
/// the kernel for permission to use the tile state (once per process).
bool cpu_has(Isa isa);

/// One level's kernels: what the runtime's ops call.
struct KernelTable {
  /// The instruction-set level of these kernels.
  Isa isa = Isa::ref;
  /// The requantizing u8 x s8 GEMM (QGemmParams).
  QGemmFn qgemm = nullptr;
  /// Null when the level's GEMM takes B unpacked (ref, neon).
  QGemmPackFn qgemm_pack = nullptr;
  /// The depthwise convolution (QDwParams).
  QDwFn qdwconv = nullptr;
  /// The quantized add (QAddParams).
  QAddFn qadd = nullptr;
  /// Segmented rows this level's GEMM reads in place, without gathering
  /// them: when > 0, runs (K / segments bytes) that are a multiple of
  /// `direct_run` bytes, with every block of 16 rows (starting at a multiple
  /// of 16) evenly spaced in memory. A convolution may widen its kernel rows
  /// to such runs (the extra bytes meet zero weights) to take that path.
  /// 0: no such path (the runs stay as short as the GEMM contract allows).
  int64_t direct_run = 0;
};
/// The kernels in use: the best the CPU supports, or what QFORGE_KERNELS
/// (ref|avx2|avx512vnni|amx|neon) forces. Chosen once, on first call; the table
/// lives for the whole program. Forcing a level the CPU lacks, or that this
/// build has no kernels for, throws ValueError with the reason.
const KernelTable& kernels();
/// The table for one level, bypassing detection (tests and benchmarks): each
/// op gets its kernel of that level, or of the best lower level the build
/// has. Throws ValueError when the CPU lacks the level or the build has no
/// kernel of that level at all.
KernelTable kernels_for(Isa isa);

// ---- the kernels (kernel_list.inc names them) -------------------------------------
/// Scalar reference, any CPU, no tiling: the oracle every SIMD kernel must
/// equal bit for bit. Ignores b_packed.
void qu8s8_gemm_requant__ref(const QGemmParams& p);
/// AVX2 (x86 builds), 6 rows x 16 channels on int16 pairs (vpmaddwd), A
/// widened with its zero point subtracted (segmented rows: the span they
/// read, once; other rows: per block of 48), pools of up to 6 rows fused in
/// the tile, the requantization vectorized when a block's multipliers lie in
/// [2^-23, 1): packs B per call unless b_packed came from
/// qgemm_pack__avx2_6x16. Needs cpu_has(Isa::avx2).
void qu8s8_gemm_requant__avx2_6x16(const QGemmParams& p);
/// Packs B for the AVX2 kernel ([N/16][K/2][16][2 x int16], zero-padded, then
/// the channel sums). Compiled with AVX2 flags: needs cpu_has(Isa::avx2).
std::vector<int32_t> qgemm_pack__avx2_6x16(const int8_t* b, int64_t ldb, int64_t N, int64_t K);
/// AVX-512 F/BW/VL + VNNI (x86 builds): tiles of 16 accumulators (16 rows x
/// 16 channels, 8 x 32 or 4 x 64 by the panel width): packs B per call unless b_packed came from
/// qgemm_pack__avx512vnni_4x64. Needs cpu_has(Isa::avx512vnni).
void qu8s8_gemm_requant__avx512vnni_4x64(const QGemmParams& p);
/// Packs B for the VNNI kernel ([N/16][K/4][16][4 bytes], zero-padded, then
/// the channel sums). Compiled with AVX-512 flags: needs cpu_has(Isa::avx512vnni).
std::vector<int32_t> qgemm_pack__avx512vnni_4x64(const int8_t* b, int64_t ldb, int64_t N, int64_t K);
/// AMX-INT8 (x86 builds): 16-row blocks of A gathered into a zero-padded
/// buffer (or, for segmented runs of whole 64-byte chunks in evenly spaced
/// blocks of 16 rows, loaded in place as tiles with the rows' spacing as
/// their stride), up to 4 C tiles of 16 x 16 at a time, the AVX-512
/// requantization. Packs B per call unless b_packed came from
/// qgemm_pack__amx. Needs cpu_has(Isa::amx).
void qu8s8_gemm_requant__amx_16x64(const QGemmParams& p);
/// Packs B for the AMX kernel ([N/16][K4p][16][4 bytes] with the groups of 4
/// rounded up to 16, zero-padded, then the channel sums). Needs cpu_has(Isa::amx).
std::vector<int32_t> qgemm_pack__amx(const int8_t* b, int64_t ldb, int64_t N, int64_t K);
/// NEON (AArch64 builds only; baseline there, no CPU check needed), 4 rows x 8
/// channels: packs B on every call and ignores b_packed.
void qu8s8_gemm_requant__neon_4x8(const QGemmParams& p);
/// Depthwise reference: plain loops, the oracle of the SIMD depthwise kernels.
void qu8s8_dwconv_requant__ref(const QDwParams& p);
/// AVX2 depthwise: two vectors of 8 channels per step (int32 products), the
/// GEMM's vectorized requantization where a block allows it.
void qu8s8_dwconv_requant__avx2_8c(const QDwParams& p);
/// AVX-512 depthwise: 16 channels per vector, vectorized requantization.
void qu8s8_dwconv_requant__avx512_16c(const QDwParams& p);
/// NEON depthwise: 8 channels per step (int16 widening multiply-accumulate).
void qu8s8_dwconv_requant__neon_8c(const QDwParams& p);
/// Quantized add, reference: requantize_add() per element.
void qu8_add__ref(const QAddParams& p);
/// AVX2 quantized add: 4 int64 lanes (vpmuldq products, a floor shift built
/// from logical shifts, the half-to-even correction).
void qu8_add__avx2_4l(const QAddParams& p);
/// AVX-512 quantized add: 8 int64 lanes per vector, 16 codes per step.
void qu8_add__avx512_16(const QAddParams& p);
/// NEON quantized add: 2 int64 lanes per vector, 8 codes per step.
void qu8_add__neon_8(const QAddParams& p);

}  // namespace qforge::quant::kernels
