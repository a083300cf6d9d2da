// AMX-INT8 requantizing u8 x s8 GEMM. AMX multiplies tiles: tdpbusd adds a
// 16-row x 64-byte u8 tile of A times a 16-row x 64-byte s8 tile of B (16
// groups of 4 values of K x 16 channels) into a 16 x 16 int32 tile, exactly
// (int32 accumulation, no saturation) -- 16,384 multiply-adds per
// instruction against vpdpbusd's 64.
//
// B is packed once per layer (qgemm_pack__amx) into [N/16][K4p][16][4]
// (K4p = groups of 4 of K, rounded up to 16, zero-padded), so each 16 x 16
// block of groups is one contiguous 1 KB tile, followed by the channel sums.
// For each pass of 64 rows when N <= 16, else 32 (so that 4 C tiles work on
// independent chains), the kernel gathers A into a zero-padded
// [rows][4 * K4p] buffer (plain or segmented rows alike), then for 1 or 2
// blocks of 16 channels at a time runs the K chunks into the C
// tiles, stores them and requantizes each row with the AVX-512
// requantization (requant_avx512.h): the same arithmetic, so the codes equal
// the reference.
//
// Tile registers: tmm0-3 accumulate C, tmm4-7 hold A and B chunks. The tile
// configuration is loaded on entry and released on exit.
//
// Short rows or a single channel block (K <= 64 or N <= 16: a first layer,
// 1x1 shortcuts, 16-channel layers, a classifier) fill a tile poorly and
// leave the gather and the stores of C to dominate: those problems go to the
// AVX-512 VNNI kernel, whose layout the pack function then produces (every
// AMX CPU has AVX-512 VNNI).
#if defined(__x86_64__)  // AMX exists in 64-bit mode only
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "quant/kernels/avx512/requant_avx512.h"
#include "quant/kernels/kernels.h"
#include "quant/kernels/pack_groups.h"

namespace qforge::quant::kernels {

namespace {

/// The 64-byte tile configuration (palette 1): every tile used is 16 rows of
/// 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

/// dst[0, len) = src[0, len): 64-byte vector moves, the tail masked.
inline void copy_run(uint8_t* dst, const uint8_t* src, int64_t len) {
  for (; len >= 64; len -= 64, dst += 64, src += 64) _mm512_storeu_si512(dst, _mm512_loadu_si512(src));
  if (len > 0) {
    const __mmask64 k = (uint64_t{1} << len) - 1;
    _mm512_mask_storeu_epi8(dst, k, _mm512_maskz_loadu_epi8(k, src));
  }
}

void pack_amx(std::vector<int32_t>& out, const int8_t* b0, int64_t ldb, int64_t N, int64_t K) {
  pack_groups_of_4(out, b0, ldb, N, K, 16);
}

/// C tiles (RB row blocks x NV channel blocks, tile rb * NV + v; zeroed
/// first) += the A rows times NV blocks of packed B (block stride bstride
/// int32s), over `chunks` chunks of 16 groups of K. Chunk c of row block rb
/// is the 16 x 64-byte tile at arow[rb] + coff[c] with row stride astride:
/// the gather buffer (coff[c] = 64 c) or, for rows loaded in place, the
/// input itself. RB * NV <= 4 and NV <= 2; several row blocks share each B
/// chunk, so the products of one chunk are independent.
template <int RB, int NV>
inline void tile_products(const uint8_t* const* arow, int64_t astride, const int64_t* coff, const int32_t* pk,
                          int64_t bstride, int64_t chunks) {
  static_assert(RB * NV <= 4 && NV <= 2);
  _tile_zero(0);
  if constexpr (RB * NV > 1) _tile_zero(1);
  if constexpr (RB * NV > 2) _tile_zero(2);
  if constexpr (RB * NV > 3) _tile_zero(3);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t o = coff[c];
    const int32_t* b = pk + c * 256;  // 16 groups x 16 channels
    if constexpr (NV == 1 && RB > 1) {
      _tile_loadd(4, b, 64);
      _tile_loadd(5, arow[0] + o, astride);
      _tile_dpbusd(0, 5, 4);
      _tile_loadd(6, arow[1] + o, astride);
      _tile_dpbusd(1, 6, 4);
      if constexpr (RB > 2) {
        _tile_loadd(7, arow[2] + o, astride);
        _tile_dpbusd(2, 7, 4);
      }
      if constexpr (RB > 3) {
        _tile_loadd(5, arow[3] + o, astride);
        _tile_dpbusd(3, 5, 4);
      }
    } else if constexpr (NV == 2 && RB == 2) {
      // Each load right before its first product: A0 is free once the
      // previous chunk's second product has read it, B0 after its third,
      // B1 and A1 after its fourth. My reading, not verified: tile
      // registers are not renamed, so four loads first held this chunk's
      // first product back until the previous chunk's last had run. This
      // order measured +4% at 1024^3 on one thread (alternated pairs).
      _tile_loadd(4, arow[0] + o, astride);
      _tile_loadd(6, b, 64);
      _tile_dpbusd(0, 4, 6);
      _tile_loadd(7, b + bstride, 64);
      _tile_dpbusd(1, 4, 7);
      _tile_loadd(5, arow[1] + o, astride);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    } else {
      _tile_loadd(4, arow[0] + o, astride);
      _tile_loadd(5, b, 64);
      _tile_dpbusd(0, 4, 5);
      if constexpr (NV > 1) {
        _tile_loadd(6, b + bstride, 64);
        _tile_dpbusd(1, 4, 6);
      }
    }
  }
}

/// Stores the C tiles into cbuf: row block rb, channel block v at
/// cbuf[(16 * rb + r) * 64 + 16 * v] (rows of 256 bytes).
template <int RB, int NV>
inline void store_tiles(int32_t* cbuf) {
  constexpr int64_t kRow = 16 * 64;  // int32s per row block
  _tile_stored(0, cbuf, 256);
  if constexpr (RB * NV > 1) _tile_stored(1, cbuf + (NV == 1 ? kRow : 16), 256);
  if constexpr (RB * NV > 2) _tile_stored(2, cbuf + (NV == 1 ? 2 * kRow : kRow), 256);
  if constexpr (RB * NV > 3) _tile_stored(3, cbuf + (NV == 1 ? 3 * kRow : kRow + 16), 256);
}

}  // namespace

namespace {

/// The problems the VNNI kernel takes (see the top of the file). A single
/// channel block stays on AMX when K is whole 64-byte chunks: a convolution
/// widens its kernel rows to such runs (KernelTable::direct_run) to have
/// them loaded in place, with no gather.
bool vnni_shape(int64_t N, int64_t K) { return K <= 64 || (N <= 16 && K % 64 != 0); }

}  // namespace

std::vector<int32_t> qgemm_pack__amx(const int8_t* b, int64_t ldb, int64_t N, int64_t K) {
  if (vnni_shape(N, K)) return qgemm_pack__avx512vnni_4x64(b, ldb, N, K);
  std::vector<int32_t> out;
  pack_amx(out, b, ldb, N, K);
  return out;
}

void qu8s8_gemm_requant__amx_16x64(const QGemmParams& p) {
  if (p.M == 0 || p.N == 0) return;
  if (vnni_shape(p.N, p.K)) return qu8s8_gemm_requant__avx512vnni_4x64(p);
  // Native pooling when groups never straddle a job (jobs start at multiples
  // of 16 rows).
  if (p.pool > 1 && 16 % p.pool != 0) return gemm_pooled_via_c32(&qu8s8_gemm_requant__amx_16x64, p);
  const int64_t K4 = (p.K + 3) / 4, K4p = (K4 + 15) / 16 * 16, NB = (p.N + 15) / 16, chunks = K4p / 16;
  const int64_t astride = 4 * K4p;
  const int32_t* base = p.b_packed;
  if (!base) {
    thread_local std::vector<int32_t> tl;
    pack_amx(tl, p.b, p.ldb, p.N, p.K);
    base = tl.data();
  }
  const int32_t* bsum = base + NB * K4p * 16;
  // Row blocks per pass and channel blocks per job: 4 x 1 with one channel
  // block, else 2 x 2 (two A and two B tiles feed four products). Tiles
  // per chunk: 4 loads for 4 products, against 1 x 4's 5 loads, one of them
  // into a register a product of the same chunk still reads. 2 x 2 measured
  // 1.19x at 256^3 and 1.36x at 1024^3 on one thread, 1.22x on mnist_cnn
  // (alternated builds); the cause is my guess: tile registers are not
  // renamed, so 1 x 4 serialized each chunk's loads behind its products.
  const int64_t RB = NB == 1 ? 4 : 2, NVJ = NB == 1 ? 1 : 2, rows_per_pass = 16 * RB;
  thread_local std::vector<uint8_t> abuf_storage;
  const size_t abytes = static_cast<size_t>(rows_per_pass * astride + 64);
  if (abuf_storage.size() < abytes) abuf_storage.resize(abytes);
  uint8_t* abuf = abuf_storage.data() + ((64 - reinterpret_cast<uintptr_t>(abuf_storage.data()) % 64) % 64);
  // Two C buffers: the tiles of one job are stored into one while the
  // previous job's results are requantized from the other.
  thread_local std::vector<int32_t> cbuf_storage(2 * 64 * 64 + 16);
  int32_t* cbuf0 = cbuf_storage.data() + ((16 - (reinterpret_cast<uintptr_t>(cbuf_storage.data()) / 4) % 16) % 16);
  int32_t* cbufs[2] = {cbuf0, cbuf0 + 64 * 64};

  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  // GCC 12's tile intrinsics are volatile asm without memory operands: the
  // empty asm with a memory clobber keeps plain stores (the config, the
  // gathered rows) before the tile loads, and the loads of stored C tiles
  // after the tile stores.
  asm volatile("" ::: "memory");
  _tile_loadconfig(&cfg);

  const __m512i zp32 = _mm512_set1_epi32(p.out_zero_point), lo_zp = _mm512_set1_epi32(p.out_lo - p.out_zero_point),
                hi_zp = _mm512_set1_epi32(p.out_hi - p.out_zero_point);
  // Requantization constants of every block, once per call.
  thread_local std::vector<Requant16> rq;
  rq.resize(static_cast<size_t>(NB));
  for (int64_t v = 0; v < NB; ++v) rq[static_cast<size_t>(v)] = make_requant(p, bsum + v * 16, v * 16);

  // A job: rows [m0, m0 + rows) (rb row blocks) against channel blocks
  // [nb, nb + nv).
  struct Job {
    int64_t m0 = 0, rows = 0, rb = 1, nb = 0, nv = 0;
  };
  const int64_t bstride = K4p * 16;
  // Where the A tiles of the current pass are: per row block, its first
  // row, and the row stride (the offset of each chunk goes to issue()).
  const uint8_t* arow[4] = {};
  int64_t arow_stride = astride;
  // Issues the tile products of a job (the tiles compute in the background).
  auto issue = [&](const Job& j, const int64_t* coff) {
    const int32_t* pk = base + j.nb * K4p * 16;
    const int64_t st = arow_stride;
    if (j.nv == 1 && j.rb == 4) tile_products<4, 1>(arow, st, coff, pk, bstride, chunks);
    else if (j.nv == 1 && j.rb == 3) tile_products<3, 1>(arow, st, coff, pk, bstride, chunks);
    else if (j.nv == 1 && j.rb == 2) tile_products<2, 1>(arow, st, coff, pk, bstride, chunks);
    else if (j.nv == 2 && j.rb == 2) tile_products<2, 2>(arow, st, coff, pk, bstride, chunks);
    else if (j.nv == 2) tile_products<1, 2>(arow, st, coff, pk, bstride, chunks);
    else tile_products<1, 1>(arow, st, coff, pk, bstride, chunks);
  };
  auto store = [&](const Job& j, int32_t* cbuf) {
    if (j.nv == 1 && j.rb == 4) store_tiles<4, 1>(cbuf);
    else if (j.nv == 1 && j.rb == 3) store_tiles<3, 1>(cbuf);
    else if (j.nv == 1 && j.rb == 2) store_tiles<2, 1>(cbuf);
    else if (j.nv == 2 && j.rb == 2) store_tiles<2, 2>(cbuf);
    else if (j.nv == 2) store_tiles<1, 2>(cbuf);
    else store_tiles<1, 1>(cbuf);
  };
  // Requantizes (or, in int32 mode, finishes) a job's stored sums.
  // The output in locals: the byte stores below may alias p's fields, and
  // reading them through p would reload them on every row.
  uint8_t* const c_out = p.c;
  int32_t* const c32_out = p.c32;
  const int64_t ldc = p.ldc, pool = p.pool, N = p.N;
  auto finish = [&, zp32, lo_zp, hi_zp](const Job& j, const int32_t* cbuf) {
    for (int64_t v = 0; v < j.nv; ++v) {
      const Requant16& q = rq[static_cast<size_t>(j.nb + v)];
      const int64_t n0 = (j.nb + v) * 16, nn = std::min<int64_t>(16, N - n0);
      const __mmask16 store_mask = static_cast<__mmask16>((1u << nn) - 1);
      const int32_t* col = cbuf + v * 16;
      if (pool == 1 && !c32_out) {
        // The common case, the narrow test hoisted out of the rows.
        uint8_t* out = c_out + j.m0 * ldc + n0;
        if (q.narrow) {
          for (int64_t r = 0; r < j.rows; ++r, out += ldc)
            _mm_mask_storeu_epi8(out, store_mask, requant16_narrow(_mm512_load_si512(col + r * 64), q, zp32, lo_zp, hi_zp));
        } else {
          for (int64_t r = 0; r < j.rows; ++r, out += ldc)
            _mm_mask_storeu_epi8(out, store_mask, requant16(_mm512_load_si512(col + r * 64), q, zp32, lo_zp, hi_zp));
        }
        continue;
      }
      // With pooling, groups of pool rows: the max of the raw sums (their map
      // to the output never decreases), one output row per group.
      for (int64_t r = 0; r < j.rows; r += pool) {
        __m512i raw = _mm512_load_si512(col + r * 64);
        for (int64_t i = 1; i < pool; ++i) raw = _mm512_max_epi32(raw, _mm512_load_si512(col + (r + i) * 64));
        const int64_t m = (j.m0 + r) / pool;
        if (c32_out) {
          _mm512_mask_storeu_epi32(c32_out + m * ldc + n0, store_mask, acc16(raw, q));
        } else {
          _mm_mask_storeu_epi8(c_out + m * ldc + n0, store_mask, requant16(raw, q, zp32, lo_zp, hi_zp));
        }
      }
    }
  };

  // Software pipeline: issue job k's tile products, requantize job k - 1
  // (whose sums were stored) while the tiles compute, then store job k.
  Job prev;
  bool have_prev = false;
  int buf = 0;
  // The gather writes exactly K bytes a row. The bytes past K (up to the
  // chunk) keep whatever an earlier call left there, and so do rows past M
  // in the last row block: the packed B is zero past K, so those bytes add
  // nothing, and the sums of rows past M are never read. (The vector starts
  // zeroed, so nothing is read uninitialized. Zeroing the buffer on every
  // call had cost a linear layer with K = 6,400 and 8 rows a 400 KB memset
  // per call: 8% of mnist_cnn's int8 time.)
  // The problem in locals: the byte stores below may alias p's fields.
  const uint8_t* const a = p.a;
  const int64_t* const a_offsets = p.a_offsets;
  const int64_t K = p.K, lda = p.lda, segments = p.segments, len = a_offsets ? K / segments : K;
  const int64_t seg_stride = p.segment_stride;
  // Chunk offsets: within the gathered rows, 64 bytes apart; in place, each
  // chunk lies in its run (runs of whole chunks, one run per kernel row).
  thread_local std::vector<int64_t> coff_storage;
  coff_storage.resize(static_cast<size_t>(2 * chunks));
  int64_t* const gather_coff = coff_storage.data();
  int64_t* const direct_coff = gather_coff + chunks;
  const bool may_direct = a_offsets && seg_stride > 0 && len % 64 == 0;
  for (int64_t c = 0; c < chunks; ++c) {
    gather_coff[c] = 64 * c;
    if (may_direct) direct_coff[c] = (64 * c / len) * seg_stride + (64 * c) % len;
  }
  for (int64_t m0 = 0; m0 < p.M; m0 += rows_per_pass) {
    const int64_t rows = std::min<int64_t>(rows_per_pass, p.M - m0), rb = (rows + 15) / 16;
    // Rows read in place: whole blocks of 16 rows, each block's rows evenly
    // spaced, by one spacing across the pass (a convolution's output pixels
    // along one output row). The tiles then read exactly the rows' runs.
    bool direct = may_direct && rows % 16 == 0;
    const int64_t* const row_off = a_offsets ? a_offsets + m0 : nullptr;
    const int64_t spacing = direct ? row_off[1] - row_off[0] : 0;
    for (int64_t r = 1; direct && r < rows; ++r) direct = row_off[r] - row_off[r - 1] == spacing || r % 16 == 0;
    if (direct) {
      for (int64_t b = 0; b < rb; ++b) arow[b] = a + row_off[16 * b];
      arow_stride = spacing;
    } else {
      for (int64_t b = 0; b < 4; ++b) arow[b] = abuf + 16 * b * astride;
      arow_stride = astride;
      // Gather the rows with inline 64-byte moves (the runs are short: a
      // library call each would cost more than the copy). The previous job's
      // tile loads are done: its sums were stored.
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* dst = abuf + r * astride;
        if (a_offsets && seg_stride > 0) {
          const uint8_t* src = a + a_offsets[m0 + r];
          for (int64_t s = 0; s < segments; ++s) copy_run(dst + s * len, src + s * seg_stride, len);
        } else if (a_offsets) {
          const int64_t* off = a_offsets + (m0 + r) * segments;
          for (int64_t s = 0; s < segments; ++s) copy_run(dst + s * len, a + off[s], len);
        } else {
          copy_run(dst, a + (m0 + r) * lda, K);
        }
      }
      asm volatile("" ::: "memory");
    }
    for (int64_t nb = 0; nb < NB; nb += NVJ) {
      const Job j{m0, rows, rb, nb, std::min<int64_t>(NVJ, NB - nb)};
      issue(j, direct ? direct_coff : gather_coff);
      if (have_prev) finish(prev, cbufs[1 - buf]);
      store(j, cbufs[buf]);
      asm volatile("" ::: "memory");
      prev = j;
      have_prev = true;
      buf ^= 1;
    }
  }
  if (have_prev) finish(prev, cbufs[1 - buf]);
  _tile_release();
}

}  // namespace qforge::quant::kernels

#endif  // defined(__x86_64__)
