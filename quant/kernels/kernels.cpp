#include "quant/kernels/kernels.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/error.h"

namespace qforge::quant::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::ref: return "ref";
    case Isa::avx2: return "avx2";
    case Isa::avx512vnni: return "avx512vnni";
    case Isa::neon: return "neon";
    case Isa::amx: return "amx";
  }
  return "?";
}

namespace {

#if defined(__x86_64__)
/// AMX-TILE and AMX-INT8 in cpuid, the tile state enabled by the OS (XCR0
/// bits 17 and 18), and the kernel's permission for this process to use it
/// (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA; Linux 5.16 and later).
bool amx_usable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false;  // AMX-TILE, AMX-INT8
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
  unsigned lo = 0, hi = 0;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

}  // namespace

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::ref:
      return true;
#if defined(__x86_64__) || defined(__i386__)
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case Isa::neon:
      return false;
    case Isa::amx: {
#if defined(__x86_64__)
      static const bool usable = cpu_has(Isa::avx512vnni) && amx_usable();
      return usable;
#else
      return false;
#endif
    }
#else
    case Isa::avx2:
    case Isa::avx512vnni:
    case Isa::amx:
      return false;
    case Isa::neon:
      return true;  // every AArch64 CPU has Advanced SIMD
#endif
  }
  return false;
}

namespace {

/// Whether this build has any kernel of the level.
bool build_has(Isa level) {
  bool any = false;
#define QF_KERNEL(op, isa, fn) any = any || Isa::isa == level;
#define QF_PACKER(isa, fn)
#include "quant/kernels/kernel_list.inc"
#undef QF_KERNEL
#undef QF_PACKER
  return any;
}

/// Levels from best to worst, for detection.
constexpr Isa kPreference[] = {Isa::amx, Isa::avx512vnni, Isa::avx2, Isa::neon, Isa::ref};

/// Whether a table for `level` may use a kernel of level `k`: the reference
/// always, the level itself, AVX2 under AVX-512 VNNI (a CPU with VNNI has
/// AVX2), and both under AMX (cpu_has(amx) includes AVX-512 VNNI).
bool allowed(Isa k, Isa level) {
  if (k == Isa::ref || k == level) return true;
  if (level == Isa::amx) return k == Isa::avx512vnni || k == Isa::avx2;
  return level == Isa::avx512vnni && k == Isa::avx2;
}

void set_kernel(KernelTable& t, QGemmFn f) {
  t.qgemm = f;
  t.qgemm_pack = nullptr;
}
void set_kernel(KernelTable& t, QDwFn f) { t.qdwconv = f; }
void set_kernel(KernelTable& t, QAddFn f) { t.qadd = f; }

Isa parse_isa(const char* s) {
  for (Isa i : kAllIsas)
    if (std::strcmp(s, isa_name(i)) == 0) return i;
  QF_THROW(ValueError) << "QFORGE_KERNELS='" << s << "' is not one of ref, avx2, avx512vnni, amx, neon";
  __builtin_unreachable();
}

}  // namespace

KernelTable kernels_for(Isa level) {
  QF_CHECK(cpu_has(level)) << "int8 kernels '" << isa_name(level) << "' need an instruction set this CPU lacks";
  QF_CHECK(build_has(level)) << "this build has no '" << isa_name(level) << "' int8 kernels";
  KernelTable t;
  t.isa = level;
  // Entries are ordered by level within each op: the last one the CPU and
  // the level allow wins. The reference is always allowed.
  // A GEMM entry resets the packer: a packer belongs to the GEMM of its level.
#define QF_KERNEL(op, isa, fn) \
  if (allowed(Isa::isa, level)) set_kernel(t, &fn);
#define QF_PACKER(isa, fn) \
  if (allowed(Isa::isa, level)) t.qgemm_pack = &fn;
#include "quant/kernels/kernel_list.inc"
#undef QF_KERNEL
#undef QF_PACKER
#if defined(__x86_64__)
  // The AMX GEMM loads 64-byte chunks of evenly spaced rows as tiles in place.
  if (t.qgemm == &qu8s8_gemm_requant__amx_16x64) t.direct_run = 64;
#endif
  return t;
}

const KernelTable& kernels() {
  static const KernelTable table = [] {
    if (const char* forced = std::getenv("QFORGE_KERNELS"); forced && *forced) return kernels_for(parse_isa(forced));
    for (Isa i : kPreference)
      if (cpu_has(i) && build_has(i)) return kernels_for(i);
    return kernels_for(Isa::ref);
  }();
  return table;
}

void gemm_pooled_via_c32(void (*gemm)(const QGemmParams&), const QGemmParams& p) {
  // Blocks of about 64 groups: the int32 sums stay in cache until reduced.
  const int64_t groups = p.M / p.pool, block = 64;
  thread_local std::vector<int32_t> sums;
  sums.resize(static_cast<size_t>(block * p.pool * p.N));
  for (int64_t g0 = 0; g0 < groups; g0 += block) {
    const int64_t ng = std::min(block, groups - g0), m0 = g0 * p.pool;
    QGemmParams q = p;
    q.M = ng * p.pool;
    q.pool = 1;
    if (p.a_offsets) q.a_offsets = p.a_offsets + m0 * (p.segment_stride > 0 ? 1 : p.segments);
    else q.a = p.a + m0 * p.lda;
    q.c = nullptr;
    q.c32 = sums.data();
    q.ldc = p.N;
    gemm(q);
    for (int64_t g = 0; g < ng; ++g) {
      const int32_t* s = sums.data() + g * p.pool * p.N;
      for (int64_t n = 0; n < p.N; ++n) {
        int32_t v = s[n];
        for (int64_t r = 1; r < p.pool; ++r) v = std::max(v, s[r * p.N + n]);
        if (p.c32) p.c32[(g0 + g) * p.ldc + n] = v;
        else
          p.c[(g0 + g) * p.ldc + n] =
              static_cast<uint8_t>(requantize(v, p.requant[n], p.out_zero_point, p.out_lo, p.out_hi));
      }
    }
  }
}

void check(const QGemmParams& p) {
  QF_CHECK(p.M >= 0 && p.N >= 0 && p.K >= 0) << "qgemm: negative size M=" << p.M << " N=" << p.N << " K=" << p.K;
  QF_CHECK(p.K < (int64_t{1} << 31) / (255 * 128)) << "qgemm: K=" << p.K << " could overflow the int32 accumulator";
  if (p.M == 0 || p.N == 0) return;
  QF_CHECK(p.a && p.b && (p.c32 || (p.c && p.requant))) << "qgemm: null operand";
  if (p.a_offsets) {
    QF_CHECK(p.segments >= 1 && p.K % p.segments == 0 && (p.K / p.segments) % 4 == 0)
        << "qgemm: segmented rows need K (" << p.K << ") to split into " << p.segments
        << " runs of a multiple of 4 bytes";
    QF_CHECK(p.segment_stride >= 0) << "qgemm: negative segment stride " << p.segment_stride;
    const int64_t count = p.M * (p.segment_stride > 0 ? 1 : p.segments);
    for (int64_t i = 0; i < count; ++i)
      QF_CHECK(p.a_offsets[i] >= 0) << "qgemm: negative row offset " << p.a_offsets[i] << " at " << i;
  }
  QF_CHECK((p.a_offsets || p.lda >= p.K) && p.ldb >= p.K && p.ldc >= p.N)
      << "qgemm: leading dimensions lda=" << p.lda << " ldb=" << p.ldb << " ldc=" << p.ldc << " are too small for K="
      << p.K << ", N=" << p.N;
  QF_CHECK(p.a_zero_point >= 0 && p.a_zero_point <= 255) << "qgemm: input zero point " << p.a_zero_point
                                                         << " is outside [0, 255]";
  QF_CHECK(0 <= p.out_lo && p.out_lo <= p.out_hi && p.out_hi <= 255)
      << "qgemm: output bounds [" << p.out_lo << ", " << p.out_hi << "] are not within [0, 255]";
  QF_CHECK(p.pool >= 1 && p.M % p.pool == 0)
      << "qgemm: pooled rows need M (" << p.M << ") to be a multiple of the group size " << p.pool;
  if (p.c32) return;  // int32 output: no requantization
  for (int64_t n = 0; n < p.N; ++n)
    QF_CHECK(p.requant[n].multiplier >= (1 << 30) && p.requant[n].shift >= 1 && p.requant[n].shift <= 62)
        << "qgemm: requant multiplier of channel " << n << " is not normalized (" << p.requant[n].multiplier
        << ", shift " << p.requant[n].shift << ")";
}

void check(const QDwParams& p) {
  QF_CHECK(p.H >= 1 && p.W >= 1 && p.C >= 1 && p.KH >= 1 && p.KW >= 1 && p.KH <= 64 && p.KW <= 64)
      << "qdwconv: bad sizes H=" << p.H << " W=" << p.W << " C=" << p.C << " kernel " << p.KH << "x" << p.KW;
  QF_CHECK(p.stride_h >= 1 && p.stride_w >= 1 && p.dil_h >= 1 && p.dil_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0)
      << "qdwconv: bad stride, dilation or padding";
  QF_CHECK(p.OH >= 1 && p.OW >= 1 && (p.OH - 1) * p.stride_h <= p.H + 2 * p.pad_h - 1 - (p.KH - 1) * p.dil_h &&
           (p.OW - 1) * p.stride_w <= p.W + 2 * p.pad_w - 1 - (p.KW - 1) * p.dil_w)
      << "qdwconv: output " << p.OH << "x" << p.OW << " does not fit the input and window";
  QF_CHECK(0 <= p.oh_begin && p.oh_begin <= p.oh_end && p.oh_end <= p.OH)
      << "qdwconv: rows [" << p.oh_begin << ", " << p.oh_end << ") outside [0, " << p.OH << ")";
  QF_CHECK(p.x && p.w && p.requant && p.y) << "qdwconv: null operand";
  QF_CHECK(p.x_zero_point >= 0 && p.x_zero_point <= 255) << "qdwconv: input zero point " << p.x_zero_point;
  QF_CHECK(0 <= p.out_lo && p.out_lo <= p.out_hi && p.out_hi <= 255)
      << "qdwconv: output bounds [" << p.out_lo << ", " << p.out_hi << "] are not within [0, 255]";
  for (int64_t c = 0; c < p.C; ++c)
    QF_CHECK(p.requant[c].multiplier >= (1 << 30) && p.requant[c].shift >= 1 && p.requant[c].shift <= 62)
        << "qdwconv: requant multiplier of channel " << c << " is not normalized";
}

void check(const QAddParams& p) {
  QF_CHECK(p.n >= 0) << "qadd: negative size " << p.n;
  if (p.n == 0) return;
  QF_CHECK(p.a && p.b && p.y) << "qadd: null operand";
  QF_CHECK(p.a_zero_point >= 0 && p.a_zero_point <= 255 && p.b_zero_point >= 0 && p.b_zero_point <= 255)
      << "qadd: input zero points " << p.a_zero_point << ", " << p.b_zero_point << " are not within [0, 255]";
  QF_CHECK(p.m.a >= 0 && p.m.a < (int64_t{1} << 31) && p.m.b >= 0 && p.m.b < (int64_t{1} << 31) && p.m.shift >= 1 &&
           p.m.shift <= 62)
      << "qadd: multipliers " << p.m.a << ", " << p.m.b << " (shift " << p.m.shift << ") are not from add_multipliers";
  QF_CHECK(0 <= p.out_lo && p.out_lo <= p.out_hi && p.out_hi <= 255)
      << "qadd: output bounds [" << p.out_lo << ", " << p.out_hi << "] are not within [0, 255]";
}

}  // namespace qforge::quant::kernels
