#include "quant/runtime/ops.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "core/error.h"
#include "core/parallel.h"
#include "quant/kernels/kernels.h"

namespace qforge::quant::runtime {

void ActQParams::check(const char* what) const {
  QF_CHECK(std::isfinite(scale) && scale > 0) << what << ": activation scale must be finite and > 0, got " << scale;
  QF_CHECK(0 <= qmin && qmin <= zero_point && zero_point <= qmax && qmax <= 255)
      << what << ": activation qparams need 0 <= qmin <= zero_point <= qmax <= 255, got qmin " << qmin
      << ", zero_point " << zero_point << ", qmax " << qmax;
}

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  return span < 0 ? 0 : span / s + 1;  // 0: the input is smaller than the window
}

QLayer make_qlayer(const Tensor& weight, const Tensor& bias, const WeightQParams& wq, const ActQParams& in,
                   const ActQParams& out, Activation act, std::array<int64_t, 2> stride,
                   std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation, int64_t groups) {
  out.check("make_qlayer output");
  QLayer L = quantize_layer_weights(weight, bias, wq, in, groups);
  L.stride = stride;
  L.padding = padding;
  L.dilation = dilation;
  L.output = out;
  L.activation = act;
  for (int64_t o = 0; o < L.out_channels; ++o) L.requant.push_back(requant_multiplier(in.scale, L.weight_scale[o], out.scale));
  L.bounds = activation_bounds(act, out.scale, out.zero_point, out.qmin, out.qmax);
  return L;
}

QLayer quantize_layer_weights(const Tensor& weight, const Tensor& bias, const WeightQParams& wq, const ActQParams& in,
                              int64_t groups) {
  in.check("make_qlayer input");
  QF_CHECK_DTYPE(weight.dtype() == DType::f32) << "make_qlayer: weight must be f32, got " << weight.desc();
  QF_CHECK_SHAPE(weight.ndim() == 4 || weight.ndim() == 2)
      << "make_qlayer: weight must be [OC, IC/groups, KH, KW] or [OC, IC], got " << weight.desc();
  QF_CHECK(groups >= 1) << "make_qlayer: groups must be >= 1";
  QLayer L;
  L.out_channels = weight.size(0);
  const int64_t icg = weight.size(1);
  L.in_channels = icg * groups;
  L.kernel = weight.ndim() == 4 ? std::array<int64_t, 2>{weight.size(2), weight.size(3)} : std::array<int64_t, 2>{1, 1};
  L.groups = groups;
  L.input = in;
  QF_CHECK(L.out_channels % groups == 0) << "make_qlayer: " << L.out_channels << " output channels are not divisible by "
                                         << groups << " groups";
  QF_CHECK_SHAPE(static_cast<int64_t>(wq.scale.size()) == L.out_channels)
      << "make_qlayer: " << wq.scale.size() << " weight scales for " << L.out_channels << " output channels";
  QF_CHECK(-128 <= wq.qmin && wq.qmin < 0 && 0 < wq.qmax && wq.qmax <= 127)
      << "make_qlayer: weight codes must be signed within int8, got [" << wq.qmin << ", " << wq.qmax << "]";
  QF_CHECK_SHAPE(!bias.defined() || (bias.dtype() == DType::f32 && bias.numel() == L.out_channels))
      << "make_qlayer: bias must be f32 [" << L.out_channels << "], got " << bias.desc();
  const int64_t K = L.k_per_group(), KH = L.kernel[0], KW = L.kernel[1];
  L.weight.resize(L.out_channels * K);
  const float* pw = weight.data<float>();
  for (int64_t o = 0; o < L.out_channels; ++o) {
    const float s = wq.scale[o];
    QF_CHECK(std::isfinite(s) && s > 0) << "make_qlayer: weight scale of channel " << o << " is " << s;
    const float inv = 1.0f / s;
    // float [c][i][j] -> codes [i][j][c]
    for (int64_t c = 0; c < icg; ++c)
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = 0; j < KW; ++j)
          L.weight[o * K + (i * KW + j) * icg + c] = static_cast<int8_t>(
              quantize_value(pw[o * K + (c * KH + i) * KW + j], inv, 0, wq.qmin, wq.qmax));
    L.weight_scale.push_back(s);
    L.bias.push_back(bias.defined() ? quantize_bias(bias.data<float>()[o], in.scale, s) : 0);
  }
  return L;
}

const int32_t* QLayer::packed_weights(const kernels::KernelTable& t, int64_t group, int64_t run) const {
  if (!t.qgemm_pack) return nullptr;
  std::lock_guard<std::mutex> lock(packs_->mutex);
  auto& per_group = packs_->packs[{t.qgemm_pack, run}];  // map nodes never move: pointers stay valid
  if (per_group.empty()) {
    const int64_t K = run > 0 ? kernel[0] * run : k_per_group(), ocg = out_channels / groups;
    const int8_t* w = run > 0 ? row_padded_locked(run) : weight.data();
    for (int64_t g = 0; g < groups; ++g) per_group.push_back(t.qgemm_pack(w + g * ocg * K, K, ocg, K));
  }
  return per_group[static_cast<size_t>(group)].data();
}

const int8_t* QLayer::row_padded_weights(int64_t run) const {
  std::lock_guard<std::mutex> lock(packs_->mutex);
  return row_padded_locked(run);
}

const int8_t* QLayer::row_padded_locked(int64_t run) const {
  const int64_t row = kernel[1] * (in_channels / groups), KH = kernel[0];
  QF_CHECK(run >= row) << "QLayer: padded kernel rows of " << run << " bytes are shorter than a row of " << row;
  auto& w = packs_->padded[run];
  if (w.empty()) {
    w.assign(static_cast<size_t>(out_channels * KH * run), 0);
    for (int64_t o = 0; o < out_channels; ++o)
      for (int64_t i = 0; i < KH; ++i)
        std::memcpy(w.data() + (o * KH + i) * run, weight.data() + (o * KH + i) * row, static_cast<size_t>(row));
  }
  return w.data();
}

void QLayer::invalidate_packs() { packs_ = std::make_shared<PackCache>(); }

Tensor quantize(const Tensor& x, const ActQParams& q) {
  q.check("quantize");
  QF_CHECK_DTYPE(x.dtype() == DType::f32) << "quantize: expects f32, got " << x.desc();
  Tensor out = Tensor::empty(x.shape(), DType::u8);
  const float* px = x.data<float>();
  uint8_t* po = out.data<uint8_t>();
  const float inv = 1.0f / q.scale;
  parallel_for(0, x.numel(), 1 << 16, [&](int64_t b, int64_t e) {
    int64_t i = b;
#if defined(__SSE2__)
    // quantize_value() four at a time: clamping x * inv to the integer
    // bounds [qmin - zp, qmax - zp] before rounding equals clamping after
    // (the bounds are integers); maxps returns the bound for NaN, as fmax
    // does; cvtps2dq rounds half to even (the default MXCSR mode), as
    // nearbyint does, and every clamped value fits int32.
    const __m128 vinv = _mm_set1_ps(inv), lo = _mm_set1_ps(static_cast<float>(q.qmin - q.zero_point)),
                 hi = _mm_set1_ps(static_cast<float>(q.qmax - q.zero_point));
    const __m128i zp = _mm_set1_epi32(q.zero_point);
    for (; i + 4 <= e; i += 4) {
      const __m128 v = _mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(px + i), vinv), lo), hi);
      const __m128i c = _mm_add_epi32(_mm_cvtps_epi32(v), zp);  // in [qmin, qmax] within [0, 255]
      const __m128i c16 = _mm_packs_epi32(c, c);
      const int32_t bytes = _mm_cvtsi128_si32(_mm_packus_epi16(c16, c16));
      std::memcpy(po + i, &bytes, 4);
    }
#endif
    for (; i < e; ++i) po[i] = static_cast<uint8_t>(quantize_value(px[i], inv, q.zero_point, q.qmin, q.qmax));
  });
  return out;
}

Tensor dequantize(const Tensor& codes, const ActQParams& q) {
  q.check("dequantize");
  QF_CHECK_DTYPE(codes.dtype() == DType::u8) << "dequantize: expects u8 codes, got " << codes.desc();
  Tensor out = Tensor::empty(codes.shape());
  const uint8_t* pc = codes.data<uint8_t>();
  float* po = out.data<float>();
  for (int64_t i = 0; i < codes.numel(); ++i) po[i] = dequantize_value(pc[i], q.scale, q.zero_point);
  return out;
}

Tensor to_nhwc(const Tensor& x) {
  QF_CHECK_SHAPE(x.ndim() == 4 && x.dtype() == DType::u8) << "to_nhwc: expects u8 [N, C, H, W], got " << x.desc();
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({N, x.size(2), x.size(3), C}, DType::u8);
  const uint8_t* px = x.data<uint8_t>();
  uint8_t* py = y.data<uint8_t>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < HW; ++p) py[(n * HW + p) * C + c] = px[(n * C + c) * HW + p];
  return y;
}

Tensor to_nchw(const Tensor& x) {
  QF_CHECK_SHAPE(x.ndim() == 4 && x.dtype() == DType::u8) << "to_nchw: expects u8 [N, H, W, C], got " << x.desc();
  const int64_t N = x.size(0), C = x.size(3), HW = x.size(1) * x.size(2);
  Tensor y = Tensor::empty({N, C, x.size(1), x.size(2)}, DType::u8);
  const uint8_t* px = x.data<uint8_t>();
  uint8_t* py = y.data<uint8_t>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) py[(n * C + c) * HW + p] = px[(n * HW + p) * C + c];
  return y;
}

void reorder_linear_input_to_hwc(QLayer& L, int64_t C, int64_t H, int64_t W) {
  QF_CHECK_SHAPE(L.kernel[0] == 1 && L.kernel[1] == 1 && L.groups == 1 && L.in_channels == C * H * W)
      << "reorder_linear_input_to_hwc: the layer takes " << L.in_channels << " inputs, not " << C << "x" << H << "x"
      << W;
  std::vector<int8_t> w(L.weight.size());
  const int64_t K = L.in_channels;
  for (int64_t o = 0; o < L.out_channels; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) w[o * K + p * C + c] = L.weight[o * K + c * H * W + p];
  L.weight = std::move(w);
  L.invalidate_packs();
}

namespace {

/// memcpy for the short runs of im2col (often 3 to 200 bytes): 16-byte
/// vector moves inline instead of a library call per run. GCC recognizes even
/// these loops as a copy and calls memmove; the empty asm that makes dst
/// opaque on every step stops it.
inline void copy_bytes(uint8_t* __restrict dst, const uint8_t* __restrict src, int64_t n) {
  if (n >= 512) {
    std::memcpy(dst, src, static_cast<size_t>(n));
    return;
  }
#if defined(__SSE2__)
  for (; n >= 16; n -= 16, dst += 16, src += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    asm("" : "+r"(dst));
  }
#elif defined(__ARM_NEON)
  for (; n >= 16; n -= 16, dst += 16, src += 16) {
    vst1q_u8(dst, vld1q_u8(src));
    asm("" : "+r"(dst));
  }
#endif
  if (n >= 8) {
    std::memcpy(dst, src, 8);
    n -= 8, dst += 8, src += 8;
  }
  for (; n > 0; --n) {
    *dst++ = *src++;
    asm("" : "+r"(dst));
  }
}

/// out[i] = max(out[i], in[i]) for n bytes, 16 at a time (GCC 12 leaves
/// the plain loop scalar).
inline void max_bytes(uint8_t* out, const uint8_t* in, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(out + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_max_epu8(a, b));
  }
#elif defined(__ARM_NEON)
  for (; i + 16 <= n; i += 16) vst1q_u8(out + i, vmaxq_u8(vld1q_u8(out + i), vld1q_u8(in + i)));
#endif
  for (; i < n; ++i) out[i] = out[i] > in[i] ? out[i] : in[i];
}

/// The output geometry of a pooling window over NHWC codes; normalizes
/// stride 0 to the kernel size and checks the window (messages name `what`).
struct PoolGeom {
  int64_t N, H, W, C, OH, OW;
};
PoolGeom pool_geometry(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2>& stride,
                       std::array<int64_t, 2> padding, const char* what) {
  QF_CHECK_DTYPE(x.dtype() == DType::u8) << what << ": expects u8 codes, got " << x.desc();
  QF_CHECK_SHAPE(x.ndim() == 4) << what << ": input must be NHWC [N, H, W, C], got " << x.desc();
  for (int d = 0; d < 2; ++d) {
    if (stride[d] == 0) stride[d] = kernel[d];
    QF_CHECK(kernel[d] >= 1 && stride[d] >= 1 && padding[d] >= 0 && 2 * padding[d] <= kernel[d])
        << what << ": bad kernel/stride/padding";
  }
  PoolGeom g{x.size(0), x.size(1), x.size(2), x.size(3), 0, 0};
  g.OH = out_size(g.H, kernel[0], stride[0], padding[0], 1);
  g.OW = out_size(g.W, kernel[1], stride[1], padding[1], 1);
  QF_CHECK_SHAPE(g.OH >= 1 && g.OW >= 1) << what << ": input " << x.desc() << " is smaller than the window";
  return g;
}

}  // namespace

namespace {

/// Where a conv's GEMM row falls when a fused pool orders the rows window by
/// window: image n, window (y, x) of the pooled grid, pixel (i, j) in it.
struct WindowPos {
  int64_t n, y, x, i, j;
  /// The next row: across the window, then the windows of a row, the rows,
  /// the images (windows kh x kw on a ph x pw grid).
  void next(int64_t kh, int64_t kw, int64_t ph, int64_t pw) {
    if (++j < kw) return;
    j = 0;
    if (++i < kh) return;
    i = 0;
    if (++x < pw) return;
    x = 0;
    if (++y < ph) return;
    y = 0;
    ++n;
  }
};

}  // namespace

Tensor qconv2d(const QLayer& L, const Tensor& x, const kernels::KernelTable* k, const std::array<int64_t, 2>* pool) {
  QF_CHECK_DTYPE(x.dtype() == DType::u8) << "qconv2d: expects u8 codes, got " << x.desc();
  QF_CHECK_SHAPE(x.ndim() == 4 && x.size(3) == L.in_channels)
      << "qconv2d: input must be NHWC [N, H, W, " << L.in_channels << "], got " << x.desc();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), IC = L.in_channels;
  const int64_t OH = out_size(H, L.kernel[0], L.stride[0], L.padding[0], L.dilation[0]);
  const int64_t OW = out_size(W, L.kernel[1], L.stride[1], L.padding[1], L.dilation[1]);
  QF_CHECK_SHAPE(OH >= 1 && OW >= 1) << "qconv2d: input " << x.desc() << " is smaller than the kernel";
  const int64_t G = L.groups, icg = IC / G, ocg = L.out_channels / G, K = L.k_per_group();
  const int64_t OC = L.out_channels;
  // A fused max pool: windows of PK = pkh * pkw pixels over a PH x PW grid;
  // the GEMM's rows run window by window (PK rows per pooled output).
  const int64_t pkh = pool ? (*pool)[0] : 1, pkw = pool ? (*pool)[1] : 1, PK = pkh * pkw;
  QF_CHECK_SHAPE(pkh >= 1 && pkw >= 1 && OH >= pkh && OW >= pkw)
      << "qconv2d: a fused " << pkh << "x" << pkw << " max pool does not fit the " << OH << "x" << OW << " output";
  const int64_t PH = OH / pkh, PW = OW / pkw;
  // Pixels (GEMM rows) per image: with a pool, only those of whole windows.
  const int64_t P = pool ? PH * PW * PK : OH * OW;
  Tensor y = pool ? Tensor::empty({N, PH, PW, OC}, DType::u8) : Tensor::empty({N, OH, OW, OC}, DType::u8);
  const uint8_t* px = x.data<uint8_t>();
  uint8_t* py = y.data<uint8_t>();
  const kernels::KernelTable& table = k ? *k : kernels::kernels();
  const kernels::QGemmFn gemm = table.qgemm;
  const uint8_t pad = static_cast<uint8_t>(L.input.zero_point);
  if (G > 1 && G == IC && OC == IC && table.qdwconv && !pool) {
    // Depthwise (one output channel per input channel): the depthwise
    // kernel, on the weights transposed to [KH * KW, C], rows in parallel.
    const int64_t taps = L.kernel[0] * L.kernel[1];
    std::vector<int8_t> wt(static_cast<size_t>(taps * IC));
    for (int64_t c = 0; c < IC; ++c)
      for (int64_t t = 0; t < taps; ++t) wt[t * IC + c] = L.weight[c * taps + t];
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, OW * IC * taps));
    parallel_for(0, N * OH, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1;) {
        const int64_t n = r / OH, oh0 = r % OH, oh1 = std::min(OH, oh0 + (r1 - r));
        kernels::QDwParams p;
        p.H = H;
        p.W = W;
        p.C = IC;
        p.x = px + n * H * W * IC;
        p.x_zero_point = L.input.zero_point;
        p.KH = L.kernel[0];
        p.KW = L.kernel[1];
        p.stride_h = L.stride[0];
        p.stride_w = L.stride[1];
        p.pad_h = L.padding[0];
        p.pad_w = L.padding[1];
        p.dil_h = L.dilation[0];
        p.dil_w = L.dilation[1];
        p.OH = OH;
        p.OW = OW;
        p.oh_begin = oh0;
        p.oh_end = oh1;
        p.w = wt.data();
        p.bias = L.bias.data();
        p.requant = L.requant.data();
        p.out_zero_point = L.output.zero_point;
        p.out_lo = L.bounds.lo;
        p.out_hi = L.bounds.hi;
        p.y = py + n * P * OC;
        table.qdwconv(p);
        r += oh1 - oh0;
      }
    });
    return y;
  }
  const bool pointwise = L.kernel[0] == 1 && L.kernel[1] == 1 && L.stride[0] == 1 && L.stride[1] == 1 &&
                         L.padding[0] == 0 && L.padding[1] == 0 && G == 1 && !pool;
  // Work items are (group, chunk of output rows), the rows counted across
  // the whole batch (row m is pixel m % P of image m / P). A chunk's im2col
  // rows take about 64 KB, so they are written and read back by the GEMM
  // while still in cache (the weights are packed once, at load time, so small
  // GEMM calls cost nothing extra).
  const int64_t M = N * P;
  // Geometry in locals: stores through uint8_t pointers may alias anything,
  // so reading L's fields inside the loops would reload them at every step.
  const int64_t KH = L.kernel[0], KW = L.kernel[1], rowlen = KW * icg;
  const int64_t sh = L.stride[0], sw = L.stride[1], ph = L.padding[0], pw = L.padding[1];
  const int64_t dh = L.dilation[0], dw = L.dilation[1];
  const bool dense_rows = G == 1 && dw == 1;
  // Without groups or horizontal dilation, and with kernel rows of whole
  // groups of 4 bytes, the GEMM reads the input directly (segmented rows,
  // one run per kernel row) from a copy padded with the zero point: no
  // im2col, which would write and read each input byte KH * KW times.
  //
  // Kernel rows of other lengths (a first layer: 3 bytes for one channel, 9
  // for RGB) take the same path with each run widened to a multiple of 4
  // bytes: the extra bytes are the next input pixels, multiplied by zero
  // weights (QLayer::packed_weights' padded rows), and a few extra columns
  // of padding keep the last run inside the copy.
  //
  // A level that reads evenly spaced rows in place (KernelTable::direct_run:
  // AMX loads them as tiles, with no gather) gets runs widened to its
  // multiple when each block of 16 rows is one output row's pixels (no
  // fused pool, whose rows go window by window, and whole blocks of 16 per
  // output row), when the widening adds at most half a row of zero weights
  // (a 3-channel stem's 9 bytes or a 1x1 kernel's 16 would become 64: more
  // work than the gather saves), and when the widened problem is large
  // enough for the tiles (K > 64).
  const bool segmented = !pointwise && dense_rows;
  int64_t run = (rowlen + 3) / 4 * 4;
  if (table.direct_run > 0 && segmented && !pool && OW % 16 == 0 && rowlen % table.direct_run != 0) {
    const int64_t wide = (rowlen + table.direct_run - 1) / table.direct_run * table.direct_run;
    if (2 * wide <= 3 * rowlen && KH * wide > 64) run = wide;
  }
  const int64_t extra_w = segmented ? (run - rowlen + IC - 1) / IC : 0;  // columns read past the window
  // Chunks of rows: im2col chunks of about 64 KB (written, then read back
  // while in cache); without im2col, large chunks (few GEMM calls, each with
  // its per-call set-up), but at least 4 per thread when the op runs in
  // parallel.
  int64_t chunk;
  if (!pointwise && !segmented) {
    chunk = std::min<int64_t>(M, std::max<int64_t>(8, (65536 / K) / 8 * 8));
  } else {
    const int64_t ways = in_parallel_region() ? 1 : 4 * num_threads();
    chunk = std::min<int64_t>(M, std::clamp<int64_t>(((M + ways - 1) / ways + 63) / 64 * 64, 64, 4096));
  }
  chunk = std::max(PK, chunk / PK * PK);  // whole windows per chunk (M is a multiple of PK)
  const int64_t nchunks = (M + chunk - 1) / chunk;
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw + extra_w;
  Tensor padded;
  const uint8_t* src = px;
  if (segmented && (ph > 0 || pw > 0 || extra_w > 0)) {
    padded = Tensor::empty({N, Hp, Wp, IC}, DType::u8);
    uint8_t* pp = padded.data<uint8_t>();
    parallel_for(0, N * Hp, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / Hp, h = r % Hp - ph;
        uint8_t* dst = pp + r * Wp * IC;
        if (h < 0 || h >= H) {
          std::memset(dst, pad, static_cast<size_t>(Wp * IC));
          continue;
        }
        std::memset(dst, pad, static_cast<size_t>(pw * IC));
        std::memcpy(dst + pw * IC, px + (n * H + h) * W * IC, static_cast<size_t>(W * IC));
        std::memset(dst + (pw + W) * IC, pad, static_cast<size_t>((pw + extra_w) * IC));
      }
    });
    src = pp;
  }
  parallel_for(0, nchunks * G, 1, [&](int64_t t0, int64_t t1) {
    // One column (or row-offset) buffer per thread, grown as needed and
    // reused (resizing a fresh vector would zero it on every call).
    thread_local std::vector<uint8_t> cols;
    thread_local std::vector<int64_t> offsets;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t % G, m0 = (t / G) * chunk, m1 = std::min(M, m0 + chunk);
      const uint8_t* a = px + m0 * IC;
      // (image, oh, ow) of row m0, then stepped along (no division per row).
      // With a pool, rows go window by window (WindowPos).
      int64_t n = m0 / P, oh = (m0 % P) / OW, ow = m0 % OW;
      WindowPos win{};
      if (pool) {
        const int64_t w = (m0 % P) / PK, r = m0 % PK;
        win = WindowPos{n, w / PW, w % PW, r / pkw, r % pkw};
        oh = win.y * pkh + win.i, ow = win.x * pkw + win.j;
      }
      auto step = [&] {
        if (pool) {
          win.next(pkh, pkw, PH, PW);
          n = win.n, oh = win.y * pkh + win.i, ow = win.x * pkw + win.j;
          return;
        }
        if (++ow == OW) {
          ow = 0;
          if (++oh == OH) oh = 0, ++n;
        }
      };
      if (segmented) {
        // One offset per row (the pixel's window in the padded copy); the
        // kernel rows follow at segment_stride. Locals, not the captured
        // references: the int64 stores below could alias them, and the
        // compiler would reload each one on every row.
        if (offsets.size() < static_cast<size_t>(chunk)) offsets.resize(static_cast<size_t>(chunk));
        const int64_t ow_end = OW, oh_end = OH, col_step = sw * IC, row_step = sh * Wp * IC,
                      image_step = Hp * Wp * IC;
        int64_t* o = offsets.data();
        if (pool) {
          const int64_t kh = pkh, kw = pkw, ph_end = PH, pw_end = PW;
          WindowPos c = win;
          for (int64_t m = m0; m < m1; ++m) {
            *o++ = c.n * image_step + (c.y * kh + c.i) * row_step + (c.x * kw + c.j) * col_step;
            c.next(kh, kw, ph_end, pw_end);
          }
        } else {
          int64_t row_base = n * image_step + oh * row_step, base = row_base + ow * col_step;
          for (int64_t m = m0; m < m1; ++m) {
            *o++ = base;
            base += col_step;
            if (++ow == ow_end) {
              ow = 0;
              row_base += row_step;
              if (++oh == oh_end) oh = 0, row_base += image_step - oh_end * row_step;
              base = row_base;
            }
          }
        }
        a = src;
      } else if (!pointwise) {
        if (cols.size() < static_cast<size_t>(chunk * K)) cols.resize(static_cast<size_t>(chunk * K));
        // im2col over NHWC. Without groups or dilation, a kernel row's taps
        // are contiguous in the input (KW * IC bytes), so inside the image
        // each kernel row is one copy; at the borders each tap copies its
        // run of icg channels or the padding code.
        uint8_t* row = cols.data();
        if (icg == 1) {
          // One channel per group (a first layer on grey images): every tap is
          // one byte, so copy calls would cost more than the bytes. Locals,
          // not the captures: the byte stores may alias anything.
          const int64_t kh_n = KH, kw_n = KW, h_n = H, w_n = W, ic = IC, c0 = g, rl = rowlen;
          const int64_t s_h = sh, s_w = sw, p_h = ph, p_w = pw, d_h = dh, d_w = dw;
          const uint8_t* const x0 = px;
          const uint8_t padv = pad;
          for (int64_t m = m0; m < m1; ++m, step()) {
            const uint8_t* image = x0 + n * h_n * w_n * ic + c0;
            const int64_t iw0 = ow * s_w - p_w;
            for (int64_t i = 0; i < kh_n; ++i, row += rl) {
              const int64_t ih = oh * s_h - p_h + i * d_h;
              if (ih < 0 || ih >= h_n) {
                for (int64_t j = 0; j < kw_n; ++j) row[j] = padv;
                continue;
              }
              const uint8_t* r = image + ih * w_n * ic;
              for (int64_t j = 0; j < kw_n; ++j) {
                const int64_t iw = iw0 + j * d_w;
                row[j] = iw >= 0 && iw < w_n ? r[iw * ic] : padv;
              }
            }
          }
        }
        for (int64_t m = icg == 1 ? m1 : m0; m < m1; ++m, step()) {
          const uint8_t* image = px + n * H * W * IC;
          const int64_t iw0 = ow * sw - pw;
          for (int64_t i = 0; i < KH; ++i, row += rowlen) {
            const int64_t ih = oh * sh - ph + i * dh;
            if (ih < 0 || ih >= H) {
              std::memset(row, pad, static_cast<size_t>(rowlen));
              continue;
            }
            if (dense_rows && iw0 >= 0 && iw0 + KW <= W) {
              copy_bytes(row, image + (ih * W + iw0) * IC, rowlen);
              continue;
            }
            for (int64_t j = 0; j < KW; ++j) {
              const int64_t iw = iw0 + j * dw;
              if (iw >= 0 && iw < W)
                copy_bytes(row + j * icg, image + (ih * W + iw) * IC + g * icg, icg);
              else
                std::memset(row + j * icg, pad, static_cast<size_t>(icg));
            }
          }
        }
        a = cols.data();
      }
      kernels::QGemmParams p;
      p.M = m1 - m0;
      p.N = ocg;
      p.K = K;
      p.a = a;
      p.lda = pointwise ? IC : K;
      p.a_zero_point = L.input.zero_point;
      p.b = L.weight.data() + g * ocg * K;
      p.ldb = K;
      p.bias = L.bias.data() + g * ocg;
      p.requant = L.requant.data() + g * ocg;
      p.out_zero_point = L.output.zero_point;
      p.out_lo = L.bounds.lo;
      p.out_hi = L.bounds.hi;
      p.c = py + m0 / PK * OC + g * ocg;
      p.ldc = OC;
      p.pool = PK;
      // Widened kernel rows (segmented reads of runs longer than a row) take
      // the zero-padded weights; the plain ones are then never packed.
      const bool widened = segmented && run != rowlen;
      if (widened) {
        p.K = p.ldb = KH * run;
        p.b = L.row_padded_weights(run) + g * ocg * p.K;
      }
      p.b_packed = L.packed_weights(table, g, widened ? run : 0);
      if (segmented) {
        p.a_offsets = offsets.data();
        p.segments = KH;
        p.segment_stride = dh * Wp * IC;
        p.lda = 0;
      }
      gemm(p);
    }
  });
  return y;
}

Tensor qlinear(const QLayer& L, const Tensor& x, const kernels::KernelTable* k) {
  QF_CHECK_DTYPE(x.dtype() == DType::u8) << "qlinear: expects u8 codes, got " << x.desc();
  QF_CHECK_SHAPE(x.ndim() == 2 && x.size(1) == L.in_channels && L.groups == 1 && L.kernel[0] == 1 &&
                 L.kernel[1] == 1)
      << "qlinear: input must be [N, " << L.in_channels << "], got " << x.desc();
  const int64_t N = x.size(0);
  Tensor y = Tensor::empty({N, L.out_channels}, DType::u8);
  const kernels::KernelTable& table = k ? *k : kernels::kernels();
  const int32_t* packed = L.packed_weights(table, 0);
  // Blocks of rows, each a GEMM call that reads all the weights: at least 8
  // rows (a kernel tile's height) when the batch has them, and about 2 blocks
  // per thread; inside a parallel region (a sub-batch), one block.
  const int64_t ways = in_parallel_region() ? 1 : 2 * num_threads();
  const int64_t rows = std::max<int64_t>(std::min<int64_t>(N, 8), (N + ways - 1) / ways);
  parallel_for(0, (N + rows - 1) / rows, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * rows, m1 = std::min(N, m0 + rows);
      kernels::QGemmParams p;
      p.M = m1 - m0;
      p.N = L.out_channels;
      p.K = L.in_channels;
      p.a = x.data<uint8_t>() + m0 * L.in_channels;
      p.lda = L.in_channels;
      p.a_zero_point = L.input.zero_point;
      p.b = L.weight.data();
      p.ldb = L.in_channels;
      p.bias = L.bias.data();
      p.requant = L.requant.data();
      p.out_zero_point = L.output.zero_point;
      p.out_lo = L.bounds.lo;
      p.out_hi = L.bounds.hi;
      p.c = y.data<uint8_t>() + m0 * L.out_channels;
      p.ldc = L.out_channels;
      p.b_packed = packed;
      table.qgemm(p);
    }
  });
  return y;
}

Tensor qmax_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                   std::array<int64_t, 2> padding) {
  const PoolGeom g = pool_geometry(x, kernel, stride, padding, "qmax_pool2d");
  const int64_t N = g.N, H = g.H, W = g.W, C = g.C, OH = g.OH, OW = g.OW;
  Tensor y = Tensor::empty({N, OH, OW, C}, DType::u8);
  const uint8_t* px = x.data<uint8_t>();
  uint8_t* py = y.data<uint8_t>();
  parallel_for(0, N * OH, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / OH, oh = r % OH;
      for (int64_t ow = 0; ow < OW; ++ow) {
        uint8_t* out = py + ((n * OH + oh) * OW + ow) * C;
        std::memset(out, 0, static_cast<size_t>(C));  // codes are >= 0; every window has a valid pixel
        for (int64_t i = 0; i < kernel[0]; ++i) {
          const int64_t ih = oh * stride[0] - padding[0] + i;
          if (ih < 0 || ih >= H) continue;
          for (int64_t j = 0; j < kernel[1]; ++j) {
            const int64_t iw = ow * stride[1] - padding[1] + j;
            if (iw < 0 || iw >= W) continue;
            max_bytes(out, px + ((n * H + ih) * W + iw) * C, C);
          }
        }
      }
    }
  });
  return y;
}

namespace {

void check_nhwc_codes(const Tensor& x, const char* what) {
  QF_CHECK_DTYPE(x.dtype() == DType::u8) << what << ": expects u8 codes, got " << x.desc();
  QF_CHECK_SHAPE(x.ndim() == 4) << what << ": input must be NHWC [N, H, W, C], got " << x.desc();
}

bool same_qparams(const ActQParams& a, const ActQParams& b) {
  return a.scale == b.scale && a.zero_point == b.zero_point && a.qmin == b.qmin && a.qmax == b.qmax;
}

}  // namespace

Tensor qavg_pool2d(const Tensor& x, const ActQParams& in, const ActQParams& out, std::array<int64_t, 2> kernel,
                   std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  in.check("qavg_pool2d input");
  out.check("qavg_pool2d output");
  const PoolGeom g = pool_geometry(x, kernel, stride, padding, "qavg_pool2d");
  const int64_t N = g.N, H = g.H, W = g.W, C = g.C, OH = g.OH, OW = g.OW;
  const QuantMultiplier m = rescale_multiplier(in.scale, out.scale, kernel[0] * kernel[1]);
  Tensor y = Tensor::empty({N, OH, OW, C}, DType::u8);
  const uint8_t* px = x.data<uint8_t>();
  uint8_t* py = y.data<uint8_t>();
  parallel_for(0, N * OH, 4, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> acc(static_cast<size_t>(C));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / OH, oh = r % OH;
      for (int64_t ow = 0; ow < OW; ++ow) {
        std::fill(acc.begin(), acc.end(), 0);
        int32_t taps = 0;  // pixels inside the image (padding adds zero_point - zero_point = 0)
        for (int64_t i = 0; i < kernel[0]; ++i) {
          const int64_t ih = oh * stride[0] - padding[0] + i;
          if (ih < 0 || ih >= H) continue;
          for (int64_t j = 0; j < kernel[1]; ++j) {
            const int64_t iw = ow * stride[1] - padding[1] + j;
            if (iw < 0 || iw >= W) continue;
            const uint8_t* src = px + ((n * H + ih) * W + iw) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += src[c];
            ++taps;
          }
        }
        uint8_t* dst = py + ((n * OH + oh) * OW + ow) * C;
        for (int64_t c = 0; c < C; ++c)
          dst[c] = static_cast<uint8_t>(requantize(acc[c] - taps * in.zero_point, m, out.zero_point, out.qmin, out.qmax));
      }
    }
  });
  return y;
}

Tensor qglobal_avg_pool(const Tensor& x, const ActQParams& in, const ActQParams& out) {
  check_nhwc_codes(x, "qglobal_avg_pool");
  QF_CHECK_SHAPE(x.size(1) * x.size(2) <= (int64_t{1} << 23))
      << "qglobal_avg_pool: " << x.size(1) << "x" << x.size(2) << " is too large a map";
  return qavg_pool2d(x, in, out, {x.size(1), x.size(2)}, {x.size(1), x.size(2)}, {0, 0});
}

Tensor qadd(const Tensor& a, const ActQParams& qa, const Tensor& b, const ActQParams& qb, const ActQParams& out,
            Activation act, const kernels::KernelTable* k) {
  QF_CHECK_DTYPE(a.dtype() == DType::u8 && b.dtype() == DType::u8)
      << "qadd: expects u8 codes, got " << a.desc() << " and " << b.desc();
  QF_CHECK_SHAPE(a.shape() == b.shape()) << "qadd: shapes differ: " << a.desc() << " and " << b.desc();
  qa.check("qadd input a");
  qb.check("qadd input b");
  out.check("qadd output");
  const AddMultipliers m = add_multipliers(qa.scale, qb.scale, out.scale);
  const ClampBounds bounds = activation_bounds(act, out.scale, out.zero_point, out.qmin, out.qmax);
  const kernels::KernelTable& table = k ? *k : kernels::kernels();
  // A table without an add kernel (a caller's partial table) gets the reference.
  const kernels::QAddFn add = table.qadd ? table.qadd : &kernels::qu8_add__ref;
  Tensor y = Tensor::empty(a.shape(), DType::u8);
  const uint8_t* pa = a.data<uint8_t>();
  const uint8_t* pb = b.data<uint8_t>();
  uint8_t* py = y.data<uint8_t>();
  parallel_for(0, a.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
    kernels::QAddParams p;
    p.n = i1 - i0;
    p.a = pa + i0;
    p.b = pb + i0;
    p.a_zero_point = qa.zero_point;
    p.b_zero_point = qb.zero_point;
    p.m = m;
    p.out_zero_point = out.zero_point;
    p.out_lo = bounds.lo;
    p.out_hi = bounds.hi;
    p.y = py + i0;
    add(p);
  });
  return y;
}

Tensor qconcat(const std::vector<Tensor>& xs, const std::vector<ActQParams>& qs, const ActQParams& out) {
  QF_CHECK(!xs.empty() && xs.size() == qs.size())
      << "qconcat: needs one qparams per input, got " << xs.size() << " inputs and " << qs.size() << " qparams";
  out.check("qconcat output");
  Shape shape = xs[0].shape();
  QF_CHECK_SHAPE(shape.size() >= 2) << "qconcat: inputs must be [N, ..., C], got " << xs[0].desc();
  const size_t last = shape.size() - 1;
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    QF_CHECK_DTYPE(xs[i].dtype() == DType::u8) << "qconcat: input " << i << " is " << xs[i].desc();
    QF_CHECK_SHAPE(xs[i].ndim() == xs[0].ndim()) << "qconcat: input " << i << " is " << xs[i].desc();
    for (size_t d = 0; d < last; ++d)
      QF_CHECK_SHAPE(xs[i].size(static_cast<int64_t>(d)) == shape[d])
          << "qconcat: input " << i << " is " << xs[i].desc() << ", input 0 is " << xs[0].desc();
    qs[i].check("qconcat input");
    total += xs[i].size(static_cast<int64_t>(last));
  }
  shape[last] = total;
  Tensor y = Tensor::empty(shape, DType::u8);
  const int64_t rows = y.numel() / total;
  uint8_t* py = y.data<uint8_t>();
  int64_t offset = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const int64_t c = xs[i].size(static_cast<int64_t>(last));
    const uint8_t* px = xs[i].data<uint8_t>();
    const bool copy = same_qparams(qs[i], out);
    const QuantMultiplier m = copy ? QuantMultiplier{} : rescale_multiplier(qs[i].scale, out.scale);
    const int32_t zin = qs[i].zero_point;
    parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* dst = py + r * total + offset;
        const uint8_t* src = px + r * c;
        if (copy) {
          std::memcpy(dst, src, static_cast<size_t>(c));
        } else {
          for (int64_t j = 0; j < c; ++j)
            dst[j] = static_cast<uint8_t>(requantize(src[j] - zin, m, out.zero_point, out.qmin, out.qmax));
        }
      }
    });
    offset += c;
  }
  return y;
}

}  // namespace qforge::quant::runtime
