// 2-D convolution (NCHW): forward and backward. Stride-1 f32 convolutions run
// GEMMs on shifted rows of a padded image (no column matrix); the rest go
// through im2col and GEMM.
//
// Work is split over the batch: each task im2cols its samples into a private
// buffer and runs single-threaded GEMMs on it. Weight and bias gradients are
// accumulated per task and summed in task order, so they are deterministic for
// a given thread count.
#include <algorithm>
#include <cstring>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/gemm.h"
#include "core/parallel.h"

namespace qforge::autograd {

namespace detail {
ConvLayout g_layout_setting = ConvLayout::automatic;
void set_conv_layout(ConvLayout layout) { g_layout_setting = layout; }
ConvDw g_dw_setting = ConvDw::automatic;
void set_conv_dw(ConvDw dw) { g_dw_setting = dw; }
ConvOut g_out_setting = ConvOut::automatic;
void set_conv_out(ConvOut out) { g_out_setting = out; }
}  // namespace detail

int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;  // a window larger than the input gives 0
}

namespace {

struct ConvGeom {
  int64_t N, C, H, W;     // input
  int64_t OC, KH, KW;     // weight
  int64_t OH, OW;         // output
  int64_t sh, sw, ph, pw, dh, dw, groups;
  int64_t Cg() const { return C / groups; }
  int64_t OCg() const { return OC / groups; }
  int64_t Kc() const { return Cg() * KH * KW; }  // rows of the column matrix
  int64_t OHW() const { return OH * OW; }
  // 1x1, stride 1, no padding: the input already is the column matrix.
  bool pointwise() const { return KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// col[Kc, OH*OW] from one sample's channels [Cg, H, W].
template <class T>
void im2col(const T* x, const ConvGeom& g, T* col) {
  const int64_t OHW = g.OHW();
  for (int64_t c = 0; c < g.Cg(); ++c) {
    const T* xc = x + c * g.H * g.W;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        T* row = col + ((c * g.KH + kh) * g.KW + kw) * OHW;
        const int64_t woff = kw * g.dw - g.pw;
        // Output columns whose input column lies inside [0, W).
        int64_t ow_lo = 0, ow_hi = g.OW;
        while (ow_lo < g.OW && ow_lo * g.sw + woff < 0) ++ow_lo;
        while (ow_hi > ow_lo && (ow_hi - 1) * g.sw + woff >= g.W) --ow_hi;
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          T* r = row + oh * g.OW;
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          if (ih < 0 || ih >= g.H) {
            std::fill_n(r, g.OW, T(0));
            continue;
          }
          const T* xr = xc + ih * g.W + woff;
          for (int64_t ow = 0; ow < ow_lo; ++ow) r[ow] = T(0);
          if (g.sw == 1) {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) r[ow] = xr[ow];  // short rows: no memcpy call
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) r[ow] = xr[ow * g.sw];
          }
          for (int64_t ow = ow_hi; ow < g.OW; ++ow) r[ow] = T(0);
        }
      }
    }
  }
}

// Adds col[Kc, OH*OW] back into one sample's channels dx[Cg, H, W].
template <class T>
void col2im_add(const T* col, const ConvGeom& g, T* dx) {
  const int64_t OHW = g.OHW();
  for (int64_t c = 0; c < g.Cg(); ++c) {
    T* xc = dx + c * g.H * g.W;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* row = col + ((c * g.KH + kh) * g.KW + kw) * OHW;
        const int64_t woff = kw * g.dw - g.pw;
        int64_t ow_lo = 0, ow_hi = g.OW;
        while (ow_lo < g.OW && ow_lo * g.sw + woff < 0) ++ow_lo;
        while (ow_hi > ow_lo && (ow_hi - 1) * g.sw + woff >= g.W) --ow_hi;
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          const T* r = row + oh * g.OW;
          T* xr = xc + ih * g.W + woff;
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) xr[ow * g.sw] += r[ow];
        }
      }
    }
  }
}

// Splits [0, N) into `chunks` contiguous pieces; piece c is [lo, hi).
inline void chunk_range(int64_t N, int64_t chunks, int64_t c, int64_t& lo, int64_t& hi) {
  lo = N * c / chunks;
  hi = N * (c + 1) / chunks;
}

// out[0..n) = sum of the per-task partials, added in task order.
template <class T>
void sum_partials(const std::vector<Tensor>& parts, int64_t n, T* out) {
  std::fill_n(out, n, T(0));
  for (const Tensor& p : parts) {
    const T* src = p.data<T>();
    for (int64_t i = 0; i < n; ++i) out[i] += src[i];
  }
}

// Copies `rows` rows of n floats between strided buffers. Short image rows
// (8 to 32 floats) are copied by Eigen's vector loop: a memcpy call per row
// costs more than the copy itself.
inline void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
                      int64_t n) {
  using Rows = Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                          Eigen::OuterStride<>>;
  using ConstRows = Eigen::Map<const Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                               Eigen::OuterStride<>>;
  Rows(dst, rows, n, Eigen::OuterStride<>(dst_stride)) = ConstRows(src, rows, n, Eigen::OuterStride<>(src_stride));
}

// ---- stride-1 f32 path: GEMMs on shifted rows of a padded image ------------
//
// With stride 1, row (c, kh, kw) of the im2col matrix is the input plane
// shifted by (kh*dh, kw*dw), provided the output is computed on a grid whose
// rows are as long as the buffer's rows. So no column matrix is built: the
// GEMM reads B rows straight from a padded copy of the input through a table of
// row pointers. Two layouts of that copy:
// - gaps: one copy, rows W + gap apart. Consecutive rows share one zero gap
//   (the right padding of a row is the left padding of the next), and so do
//   stacked samples. The gap columns of the grid are computed and dropped;
//   several samples share a GEMM when maps are small.
// - taps: one copy per horizontal tap kw, each pre-shifted by kw*dw - pw with
//   zeros where the shift leaves the image, in rows exactly OW long, one
//   sample per GEMM. The grid then is the output plane itself: the forward
//   GEMM writes y in place and the weight gradient reads gy in place. Chosen
//   for ungrouped convs with few input channels (C*KH*KW <= 32: the stem,
//   mnist's first conv), where the copies of the output and its gradient, not
//   the multiplies, bound the time.
// Grid rows past OH in each stacked sample (gaps) are computed and dropped
// (forward), or held at zero in the output gradient so that they contribute
// nothing (backward).
struct Shifted {
  bool taps;
  int64_t Wg;  // grid and buffer row length
  int64_t Hs;  // rows per stacked sample
  int64_t sy, sx;  // the conv's strides: output (oh, ow) sits at input (oh * sy, ow * sx)
  int64_t plane, nb, base, cstride, ncopy;
  // nb samples share one GEMM: copy k of the buffer is [Cg][cstride], sample
  // s's row h at base + s * plane + h * Wg, so a shifted row runs through all
  // nb images.
  Shifted(const ConvGeom& g, int64_t nb_, bool taps_) : taps(taps_), nb(taps_ ? 1 : nb_) {
    // The vertical gap absorbs the top overhang (ph), the bottom one (ph for
    // stride 1) and outputs taller than the input (large padding); the
    // horizontal gap likewise. Strided convs (positions only, never a grid)
    // need the gap to cover the last window's reach past the input.
    const int64_t reach_h = (g.OH - 1) * g.sh + (g.KH - 1) * g.dh - g.ph + 1 - g.H;
    const int64_t reach_w = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw - g.pw + 1 - g.W;
    Hs = g.H + std::max<int64_t>({g.ph, g.OH - g.H, reach_h});
    Wg = taps ? g.OW : g.W + std::max<int64_t>({g.pw, g.OW - g.W, reach_w});
    sy = g.sh;
    sx = g.sw;
    plane = Hs * Wg;
    ncopy = taps ? g.KW : 1;
    base = g.ph * Wg + (taps ? 0 : g.pw);
    const int64_t tail = (g.KH - 1) * g.dh * Wg + (g.KW - 1) * g.dw + 16;
    cstride = (base + nb * plane + tail + 15) / 16 * 16;
  }
  // Grid columns that cover `ns` stacked samples (OH * OW for taps).
  int64_t L(const ConvGeom& g, int64_t ns) const { return (ns - 1) * plane + g.OH * Wg; }
  int64_t padded_size(const ConvGeom& g) const { return ncopy * g.Cg() * cstride; }
  // Grid offset of output (s, oh, 0); output (s, oh, ow) is ow * sx further.
  int64_t out_at(int64_t s, int64_t oh) const { return s * plane + oh * sy * Wg; }
  // Horizontal shift of copy k: its column j holds input column j + shift.
  int64_t shift(const ConvGeom& g, int64_t k) const { return taps ? k * g.dw - g.pw : 0; }
  // Where kernel tap (kh, kw) reads in its copy, relative to the grid point,
  // past `base`.
  int64_t tap(const ConvGeom& g, int64_t kh, int64_t kw) const {
    return (kh * g.dh - g.ph) * Wg + (taps ? 0 : kw * g.dw - g.pw);
  }
  int64_t copy_of(int64_t kw) const { return taps ? kw : 0; }
  // Row pointers of the virtual column matrix over a padded buffer.
  void rows(const ConvGeom& g, const float* xp, std::vector<const float*>& out) const {
    out.resize(g.Kc());
    for (int64_t c = 0; c < g.Cg(); ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw)
          out[(c * g.KH + kh) * g.KW + kw] = xp + (copy_of(kw) * g.Cg() + c) * cstride + base + tap(g, kh, kw);
  }
  // Copies one group's channels of samples n0..n0+ns into every copy of the
  // padded buffer. Positions outside the image are never written, so they
  // stay zero from the allocation.
  void pad(const ConvGeom& g, const float* x, int64_t n0, int64_t ns, int64_t gi, float* xp) const {
    for (int64_t k = 0; k < ncopy; ++k) {
      const int64_t sft = shift(g, k);
      // Buffer columns [lo, hi) hold input columns [lo + sft, hi + sft).
      const int64_t lo = std::max<int64_t>(0, -sft), hi = std::min<int64_t>(taps ? Wg : g.W, g.W - sft);
      if (hi <= lo) continue;
      for (int64_t s = 0; s < ns; ++s)
        for (int64_t c = 0; c < g.Cg(); ++c) {
          const float* src = x + ((n0 + s) * g.C + gi * g.Cg() + c) * g.H * g.W;
          float* dst = xp + (k * g.Cg() + c) * cstride + base + s * plane;
          copy_rows(dst + lo, Wg, src + lo + sft, g.W, g.H, hi - lo);
        }
    }
  }
};

bool use_shifted(const ConvGeom& g) { return g.sh == 1 && g.sw == 1 && !g.pointwise(); }

// Strided convs (f32): the forward through gemm_rows_pixels and the weight
// gradient through gemm_rows_segments, reading the strided positions of the
// shifted rows of one padded copy (no column matrix); the input gradient
// stays on im2col + GEMM + col2im. When the output channels fill 32-wide
// tiles and the window is wider than 1x1 (ResNet's 3x3 downsampling convs:
// fwd+bwd 1.3-1.8x; its 1x1 shortcuts were 0.85-1.07x, a copy for one tap),
// unless forced either way.
bool use_strided(const ConvGeom& g) {
  if (g.sh == 1 && g.sw == 1) return false;
  if (detail::g_out_setting != ConvOut::automatic) return detail::g_out_setting == ConvOut::pixels;
  return gemm_rows_kernels_available() && g.OCg() % 32 == 0 && g.KH * g.KW > 1;
}

// The weight gradient through gemm_rows_segments (the output gradient made
// pixel-major, output channels in the vector lanes, gap columns skipped) when
// a group has whole vectors of output channels; otherwise through the dot
// product of gradient-grid rows with shifted input rows (gemm_rows_nt).
bool use_segments_dw(const ConvGeom& g, const Shifted& sh) {
  if (sh.sy != 1 || sh.sx != 1) return true;  // the dot product reads a stride-1 grid
  if (detail::g_dw_setting != ConvDw::automatic) return detail::g_dw_setting == ConvDw::segments;
  return gemm_rows_kernels_available() && !sh.taps && g.OCg() % 16 == 0;
}

// The forward (and the input gradient) through gemm_rows_pixels, over the
// output (input) positions only, result pixel-major and transposed back, when
// the channels it produces fill whole 4-vector tiles and the grid's gap
// columns and rows would add at least 5% (small maps: 8x8 grids compute 9x9
// points); otherwise over the whole grid through gemm_rows_nn. `grid_cols`
// is the grid points per sample, `useful` the positions.
bool use_pixels(int64_t channels, double grid_cols, double useful, const Shifted& sh) {
  if (sh.taps) return false;
  if (sh.sy != 1 || sh.sx != 1) return true;  // strided: there is no grid product
  if (detail::g_out_setting != ConvOut::automatic) return detail::g_out_setting == ConvOut::pixels;
  return gemm_rows_kernels_available() && channels % 64 == 0 && grid_cols >= 1.05 * useful;
}

bool use_taps(const ConvGeom& g) {
  if (g.sh != 1 || g.sw != 1) return false;  // strided: the gaps layout's positions only
  if (detail::g_layout_setting != ConvLayout::automatic) return detail::g_layout_setting == ConvLayout::taps;
  return g.groups == 1 && g.Kc() <= 32;
}

// Samples per GEMM (gaps): enough for about 1024 grid columns, at most the chunk.
Shifted make_shifted(const ConvGeom& g, int64_t chunk) {
  const bool taps = use_taps(g);
  const int64_t plane = Shifted(g, 1, taps).plane;
  return Shifted(g, std::clamp<int64_t>(1024 / plane, 1, std::max<int64_t>(chunk, 1)), taps);
}

void conv_forward_shifted(const float* x, const float* w, const float* b, const ConvGeom& g, float* y) {
  const int64_t OCg = g.OCg(), OHW = g.OHW();
  const int64_t chunks = std::min<int64_t>(g.N, num_threads());
  const Shifted sh = make_shifted(g, (g.N + chunks - 1) / chunks);
  const int64_t Kc = g.Kc();
  const bool px = use_pixels(OCg, double(sh.L(g, sh.nb)) / sh.nb, double(OHW), sh);
  // Pixels: the weights transposed per group, [gi][Kc][OCg], and the grid
  // position of each output (s, oh, ow) of a stack.
  std::vector<float> wT;
  std::vector<int64_t> poff;
  if (px) {
    wT.resize(static_cast<size_t>(g.groups * Kc * OCg));
    for (int64_t gi = 0; gi < g.groups; ++gi) transpose(w + gi * OCg * Kc, OCg, Kc, Kc, wT.data() + gi * Kc * OCg, OCg);
    for (int64_t s = 0; s < sh.nb; ++s)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) poff.push_back(sh.out_at(s, oh) + ow * sh.sx);
  }
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t lo, hi;
    chunk_range(g.N, chunks, c, lo, hi);
    Tensor xpad = Tensor::zeros({sh.padded_size(g)});
    Tensor ygrid = sh.taps ? Tensor() : Tensor::empty({px ? sh.nb * OHW * OCg : OCg * sh.L(g, sh.nb)});
    float* xp = xpad.data<float>();
    std::vector<const float*> rows;
    sh.rows(g, xp, rows);
    for (int64_t n0 = lo; n0 < hi; n0 += sh.nb) {
      const int64_t ns = std::min(sh.nb, hi - n0);
      const int64_t L = sh.L(g, ns);
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        sh.pad(g, x, n0, ns, gi, xp);
        const float* wg = w + gi * OCg * g.Kc();
        if (sh.taps) {  // the grid is sample n0's output plane: write y in place
          float* yg = y + (n0 * g.OC + gi * OCg) * OHW;
          if (b)
            for (int64_t o = 0; o < OCg; ++o) std::fill_n(yg + o * OHW, OHW, b[gi * OCg + o]);
          gemm_rows_nn(OCg, L, g.Kc(), 1.0f, wg, g.Kc(), rows.data(), b ? 1.0f : 0.0f, yg, OHW);
          continue;
        }
        float* yp = ygrid.data<float>();
        if (px) {  // yT [ns * OHW, OCg], transposed into each sample's planes
          gemm_rows_pixels(ns * OHW, OCg, Kc, rows.data(), poff.data(), wT.data() + gi * Kc * OCg, OCg, 0.0f, yp,
                           OCg);
          for (int64_t s = 0; s < ns; ++s) {
            float* yg = y + ((n0 + s) * g.OC + gi * OCg) * OHW;
            transpose(yp + s * OHW * OCg, OHW, OCg, OCg, yg, OHW);
            if (b)
              for (int64_t o = 0; o < OCg; ++o) {
                const float bias = b[gi * OCg + o];
                for (int64_t i = 0; i < OHW; ++i) yg[o * OHW + i] += bias;
              }
          }
          continue;
        }
        gemm_rows_nn(OCg, L, g.Kc(), 1.0f, wg, g.Kc(), rows.data(), 0.0f, yp, L);
        for (int64_t s = 0; s < ns; ++s) {
          float* yg = y + ((n0 + s) * g.OC + gi * OCg) * OHW;
          for (int64_t o = 0; o < OCg; ++o) {
            const float bias = b ? b[gi * OCg + o] : 0.0f;
            for (int64_t oh = 0; oh < g.OH; ++oh) {
              const float* src = yp + o * L + sh.out_at(s, oh);
              float* dst = yg + o * OHW + oh * g.OW;
              for (int64_t ow = 0; ow < g.OW; ++ow) dst[ow] = src[ow] + bias;
            }
          }
        }
      }
    }
  });
}

// The input gradient is itself a stride-1 correlation, of the output gradient
// (zero off the outputs) with the transposed weights:
//   dx(c, h, w) = sum over (o, kh, kw) of W[o, c, kh, kw] * gy(o, h - kh*dh + ph, w - kw*dw + pw),
// so it runs through the same row-pointer GEMM, over rows of the gradient
// shifted the other way, with no column buffer and no scatter. Its grid is
// the input's: rows Wg long in the gaps layout (read from the forward grid),
// and W long in the taps layout (read from KW shifted copies of the gradient).
void conv_backward_shifted(const float* x, const float* w, const float* gy, const ConvGeom& g, float* dx,
                           float* dw, float* db) {
  const int64_t Kc = g.Kc(), OHW = g.OHW(), OCg = g.OCg(), Cg = g.Cg(), wsize = g.OC * Kc;
  const int64_t KK = g.KH * g.KW;
  const int64_t chunks = std::min<int64_t>(g.N, num_threads());
  const Shifted sh = make_shifted(g, (g.N + chunks - 1) / chunks);
  const bool seg_dw = dw && use_segments_dw(g, sh);
  // Input-gradient grid: row length Wd, sample stride Pd.
  const int64_t Wd = sh.taps ? g.W : sh.Wg, Pd = sh.Hs * Wd;
  const int64_t HW = g.H * g.W;
  const int64_t Nfull = (sh.nb - 1) * Pd + (g.H - 1) * Wd + g.W;  // grid points of a full stack
  const bool px_dx = dx && use_pixels(Cg, double(Nfull) / sh.nb, double(HW), sh);
  // Gaps: the gradient on the forward grid, rows [front zeros F][nb planes],
  // LD apart. F is a multiple of 16 floats, so that the weight-gradient GEMM's
  // A rows are 64-byte aligned (no cache-line-split loads). Taps: dW reads gy
  // in place.
  const int64_t F = (std::max<int64_t>(0, sh.tap(g, g.KH - 1, g.KW - 1)) + 15) / 16 * 16;
  const int64_t LD = (F + sh.nb * sh.plane + 15) / 16 * 16;
  // In the taps layout the input gradient reads KW copies of the output
  // gradient with rows W long, [front Fd][plane], LDd apart.
  const int64_t Fd = sh.taps ? (std::max<int64_t>(0, ((g.KH - 1) * g.dh - g.ph) * g.W) + 15) / 16 * 16 : F;
  const int64_t LDd = sh.taps ? (Fd + Pd + g.ph * g.W + 16 + 15) / 16 * 16 : LD;
  // Transposed weights per group: wt[gi][c][(o, kh, kw)] = W[gi*OCg + o, c, kh, kw]
  // (grid), or wt[gi][(o, kh, kw)][c] (pixels: input channels in the lanes).
  std::vector<float> wt;
  if (dx) {
    wt.resize(static_cast<size_t>(g.groups * Cg * OCg * KK));
    for (int64_t gi = 0; gi < g.groups; ++gi)
      for (int64_t o = 0; o < OCg; ++o)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t t = 0; t < KK; ++t)
            wt[px_dx ? ((gi * OCg + o) * KK + t) * Cg + c : ((gi * Cg + c) * OCg + o) * KK + t] =
                w[((gi * OCg + o) * Cg + c) * KK + t];
  }
  // Pixels: the grid position of each input (s, h, w) of a stack.
  std::vector<int64_t> poffd;
  if (px_dx)
    for (int64_t s = 0; s < sh.nb; ++s)
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t ww = 0; ww < g.W; ++ww) poffd.push_back(s * Pd + h * Wd + ww);
  std::vector<Tensor> dw_part(chunks), db_part(chunks);
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t lo, hi;
    chunk_range(g.N, chunks, c, lo, hi);
    Tensor xpad = dw ? Tensor::zeros({sh.padded_size(g)}) : Tensor();
    Tensor gygrid = sh.taps || (!dx && seg_dw) ? Tensor() : Tensor::zeros({OCg * LD});
    // Segments path: the gradient pixel-major [pixel][OCg] and dW transposed
    // [group][Kc][OCg]; segment s * OH + oh is output row (s, oh) on the grid.
    Tensor gT = seg_dw ? Tensor::empty({sh.nb * OHW * OCg}) : Tensor();
    Tensor dwT = seg_dw ? Tensor::zeros({wsize}) : Tensor();
    std::vector<int64_t> segoff;
    if (seg_dw)
      for (int64_t s = 0; s < sh.nb; ++s)
        for (int64_t oh = 0; oh < g.OH; ++oh) segoff.push_back(sh.taps ? (s * g.OH + oh) * g.OW : sh.out_at(s, oh));
    Tensor gycopies = dx && sh.taps ? Tensor::zeros({g.KW * OCg * LDd}) : Tensor();
    float* gp = gygrid.defined() ? gygrid.data<float>() : nullptr;
    std::vector<const float*> xrows, grows;
    if (dw) sh.rows(g, xpad.data<float>(), xrows);
    Tensor dxgrid = dx ? Tensor::empty({px_dx ? sh.nb * HW * Cg : Cg * Nfull}) : Tensor();
    if (dx) {
      grows.resize(OCg * KK);
      for (int64_t o = 0; o < OCg; ++o)
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw)
            grows[o * KK + kh * g.KW + kw] =
                sh.taps ? gycopies.data<float>() + (kw * OCg + o) * LDd + Fd - (kh * g.dh - g.ph) * g.W
                        : gp + o * LD + F - sh.tap(g, kh, kw);
    }
    float* dwp = nullptr;
    float* dbp = nullptr;
    if (dw) {
      dw_part[c] = Tensor::zeros({wsize});
      dwp = dw_part[c].data<float>();
    }
    if (db) {
      db_part[c] = Tensor::zeros({g.OC});
      dbp = db_part[c].data<float>();
    }
    for (int64_t n0 = lo; n0 < hi; n0 += sh.nb) {
      const int64_t ns = std::min(sh.nb, hi - n0);
      const int64_t L = sh.L(g, ns);
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        // The output gradient on the grid (gaps) or in shifted copies (taps,
        // for dx). Only output positions are written, so every other position
        // stays 0 from the allocation.
        for (int64_t s = 0; s < ns; ++s) {
          const float* gyg = gy + ((n0 + s) * g.OC + gi * OCg) * OHW;
          if (seg_dw) transpose(gyg, OCg, OHW, OHW, gT.data<float>() + s * OHW * OCg, OCg);
          for (int64_t o = 0; o < OCg; ++o) {
            if (gp) copy_rows(gp + o * LD + F + sh.out_at(s, 0), sh.Wg, gyg + o * OHW, g.OW, g.OH, g.OW);
            if (gycopies.defined()) {
              for (int64_t kw = 0; kw < g.KW; ++kw) {
                // Copy kw's column w holds gradient column w + sft.
                const int64_t sft = g.pw - kw * g.dw;
                const int64_t clo = std::max<int64_t>(0, -sft), chi = std::min<int64_t>(g.W, g.OW - sft);
                if (chi <= clo) continue;
                copy_rows(gycopies.data<float>() + (kw * OCg + o) * LDd + Fd + s * Pd + clo, g.W,
                          gyg + o * OHW + clo + sft, g.OW, g.OH, chi - clo);
              }
            }
            if (dbp) {
              float sum = 0;
              for (int64_t i = 0; i < OHW; ++i) sum += gyg[o * OHW + i];
              dbp[gi * OCg + o] += sum;
            }
          }
        }
        if (seg_dw) {  // dW_g^T [Kc, OCg] += cols x gy^T, over the output rows only
          sh.pad(g, x, n0, ns, gi, xpad.data<float>());
          gemm_rows_segments(Kc, OCg, ns * g.OH, g.OW, xrows.data(), segoff.data(), gT.data<float>(), OCg,
                             dwT.data<float>() + gi * Kc * OCg, OCg, sh.sx);
        } else if (dwp) {  // dW_g += gy_grid [OCg, L] x cols^T
          sh.pad(g, x, n0, ns, gi, xpad.data<float>());
          const float* a = sh.taps ? gy + (n0 * g.OC + gi * OCg) * OHW : gp + F;
          gemm_rows_nt(OCg, Kc, L, 1.0f, a, sh.taps ? OHW : LD, xrows.data(), 1.0f, dwp + gi * OCg * Kc, Kc);
        }
        if (dx) {  // dx_grid [Cg, N] = Wt_g [Cg, OCg*KK] x shifted gradient rows
          float* dg = dxgrid.data<float>();
          if (px_dx) {  // dxT [ns * HW, Cg], transposed into each sample's planes
            gemm_rows_pixels(ns * HW, Cg, OCg * KK, grows.data(), poffd.data(), wt.data() + gi * OCg * KK * Cg, Cg,
                             0.0f, dg, Cg);
            for (int64_t s = 0; s < ns; ++s)
              transpose(dg + s * HW * Cg, HW, Cg, Cg, dx + ((n0 + s) * g.C + gi * Cg) * HW, HW);
            continue;
          }
          const int64_t N = (ns - 1) * Pd + (g.H - 1) * Wd + g.W;
          gemm_rows_nn(Cg, N, OCg * KK, 1.0f, wt.data() + gi * Cg * OCg * KK, OCg * KK, grows.data(), 0.0f, dg,
                       N);
          for (int64_t s = 0; s < ns; ++s)
            for (int64_t ch = 0; ch < Cg; ++ch) {
              float* dst = dx + ((n0 + s) * g.C + gi * Cg + ch) * g.H * g.W;
              copy_rows(dst, g.W, dg + ch * N + s * Pd, Wd, g.H, g.W);
            }
        }
      }
    }
    if (seg_dw)
      for (int64_t gi = 0; gi < g.groups; ++gi)
        transpose(dwT.data<float>() + gi * Kc * OCg, Kc, OCg, OCg, dwp + gi * OCg * Kc, Kc);
  });
  if (dw) sum_partials(dw_part, wsize, dw);
  if (db) sum_partials(db_part, g.OC, db);
}

// ---- general path: im2col + GEMM --------------------------------------------

template <class T>
void conv_forward(const T* x, const T* w, const T* b, const ConvGeom& g, T* y) {
  if (g.N == 0) return;  // an empty batch
  if constexpr (std::is_same_v<T, float>) {
    if (use_shifted(g) || use_strided(g)) return conv_forward_shifted(x, w, b, g, y);
  }
  const int64_t Kc = g.Kc(), OHW = g.OHW(), OCg = g.OCg();
  const int64_t chunks = std::min<int64_t>(g.N, num_threads());
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t lo, hi;
    chunk_range(g.N, chunks, c, lo, hi);
    Tensor colbuf = g.pointwise() ? Tensor() : Tensor::empty({Kc * OHW}, dtype_of<T>());
    for (int64_t n = lo; n < hi; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const T* xg = x + (n * g.C + gi * g.Cg()) * g.H * g.W;
        const T* col = xg;
        if (!g.pointwise()) {
          im2col(xg, g, colbuf.data<T>());
          col = colbuf.data<T>();
        }
        T* yg = y + (n * g.OC + gi * OCg) * OHW;
        T beta = T(0);
        if (b) {
          for (int64_t o = 0; o < OCg; ++o) std::fill_n(yg + o * OHW, OHW, b[gi * OCg + o]);
          beta = T(1);
        }
        gemm(false, false, OCg, OHW, Kc, T(1), w + gi * OCg * Kc, Kc, col, OHW, beta, yg, OHW);
      }
    }
  });
}

// dx (may be null), dw (may be null), db (may be null) from gy.
template <class T>
void conv_backward(const T* x, const T* w, const T* gy, const ConvGeom& g, T* dx, T* dw, T* db) {
  if (g.N == 0) {  // an empty batch: zero weight and bias gradients
    if (dw) std::fill_n(dw, g.OC * g.Kc(), T(0));
    if (db) std::fill_n(db, g.OC, T(0));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (use_shifted(g)) return conv_backward_shifted(x, w, gy, g, dx, dw, db);
    if (dw && use_strided(g)) {  // dW over strided positions; dx (and db) below
      conv_backward_shifted(x, w, gy, g, nullptr, dw, nullptr);
      if (!dx && !db) return;
      dw = nullptr;
    }
  }
  const int64_t Kc = g.Kc(), OHW = g.OHW(), OCg = g.OCg();
  const int64_t wsize = g.OC * Kc;
  const int64_t chunks = std::min<int64_t>(g.N, num_threads());
  // Per-chunk partial weight/bias gradients, summed in chunk order below.
  std::vector<Tensor> dw_part(chunks), db_part(chunks);
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t lo, hi;
    chunk_range(g.N, chunks, c, lo, hi);
    Tensor colbuf = Tensor::empty({Kc * OHW}, dtype_of<T>());
    T* colp = colbuf.data<T>();
    T* dwp = nullptr;
    T* dbp = nullptr;
    if (dw) {
      dw_part[c] = Tensor::zeros({wsize}, dtype_of<T>());
      dwp = dw_part[c].template data<T>();
    }
    if (db) {
      db_part[c] = Tensor::zeros({g.OC}, dtype_of<T>());
      dbp = db_part[c].template data<T>();
    }
    for (int64_t n = lo; n < hi; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const T* gyg = gy + (n * g.OC + gi * OCg) * OHW;
        const T* xg = x ? x + (n * g.C + gi * g.Cg()) * g.H * g.W : nullptr;
        if (dwp) {  // dW_g += gy_g [OCg, OHW] x col^T [OHW, Kc]
          const T* col = xg;
          if (!g.pointwise()) {
            im2col(xg, g, colp);
            col = colp;
          }
          gemm(false, true, OCg, Kc, OHW, T(1), gyg, OHW, col, OHW, T(1), dwp + gi * OCg * Kc, Kc);
        }
        if (dbp) {
          for (int64_t o = 0; o < OCg; ++o) {
            const T* r = gyg + o * OHW;
            T s = T(0);
            for (int64_t i = 0; i < OHW; ++i) s += r[i];
            dbp[gi * OCg + o] += s;
          }
        }
        if (dx) {  // dcol = W_g^T [Kc, OCg] x gy_g [OCg, OHW]; col2im into dx
          T* dxg = dx + (n * g.C + gi * g.Cg()) * g.H * g.W;
          if (g.pointwise()) {
            gemm(true, false, Kc, OHW, OCg, T(1), w + gi * OCg * Kc, Kc, gyg, OHW, T(0), dxg, OHW);
          } else {
            gemm(true, false, Kc, OHW, OCg, T(1), w + gi * OCg * Kc, Kc, gyg, OHW, T(0), colp, OHW);
            std::fill_n(dxg, g.Cg() * g.H * g.W, T(0));
            col2im_add(colp, g, dxg);
          }
        }
      }
    }
  });
  if (dw) sum_partials(dw_part, wsize, dw);
  if (db) sum_partials(db_part, g.OC, db);
}

}  // namespace

Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias, const Conv2dOptions& opt) {
  const Tensor& xv = x.value();
  const Tensor& wv = weight.value();
  const DType dt =
      detail::common_float_dtype({&xv, &wv, bias.defined() ? &bias.value() : nullptr}, "conv2d");
  QF_CHECK_SHAPE(xv.ndim() == 4) << "conv2d: input must be [N, C, H, W], got " << xv.desc();
  QF_CHECK_SHAPE(wv.ndim() == 4) << "conv2d: weight must be [OC, C/groups, KH, KW], got " << wv.desc();
  QF_CHECK(opt.groups >= 1) << "conv2d: groups must be >= 1, got " << opt.groups;
  for (int i = 0; i < 2; ++i) {
    QF_CHECK(opt.stride[i] >= 1) << "conv2d: stride must be >= 1, got " << opt.stride[i];
    QF_CHECK(opt.dilation[i] >= 1) << "conv2d: dilation must be >= 1, got " << opt.dilation[i];
    QF_CHECK(opt.padding[i] >= 0) << "conv2d: padding must be >= 0, got " << opt.padding[i];
  }
  ConvGeom g{};
  g.N = xv.size(0), g.C = xv.size(1), g.H = xv.size(2), g.W = xv.size(3);
  g.OC = wv.size(0), g.KH = wv.size(2), g.KW = wv.size(3);
  g.sh = opt.stride[0], g.sw = opt.stride[1], g.ph = opt.padding[0], g.pw = opt.padding[1];
  g.dh = opt.dilation[0], g.dw = opt.dilation[1], g.groups = opt.groups;
  QF_CHECK_SHAPE(g.C % g.groups == 0 && g.OC % g.groups == 0)
      << "conv2d: in_channels " << g.C << " and out_channels " << g.OC << " must be divisible by groups "
      << g.groups;
  QF_CHECK_SHAPE(wv.size(1) == g.Cg()) << "conv2d: weight " << wv.desc() << " expects " << wv.size(1) * g.groups
                                       << " input channels, input " << xv.desc() << " has " << g.C;
  if (bias.defined())
    QF_CHECK_SHAPE(bias.ndim() == 1 && bias.size(0) == g.OC)
        << "conv2d: bias must be [" << g.OC << "], got " << bias.value().desc();
  g.OH = conv_out_size(g.H, g.KH, g.sh, g.ph, g.dh);
  g.OW = conv_out_size(g.W, g.KW, g.sw, g.pw, g.dw);
  QF_CHECK_SHAPE(g.OH >= 1 && g.OW >= 1) << "conv2d: input " << xv.desc() << " is smaller than the kernel "
                                         << wv.desc() << " with padding " << g.ph << "x" << g.pw;

  Tensor y = Tensor::empty({g.N, g.OC, g.OH, g.OW}, dt);
  detail::with_float(y, "conv2d", [&](auto tag) {
    using T = decltype(tag);
    conv_forward<T>(xv.data<T>(), wv.data<T>(), bias.defined() ? bias.value().data<T>() : nullptr, g,
                    y.data<T>());
  });
  if (!any_requires_grad({&x, &weight, &bias})) return Variable(y);
  Tensor sx = weight.requires_grad() ? xv : Tensor();
  Tensor sw = x.requires_grad() ? wv : Tensor();
  return Variable::make(y, {&x, &weight, &bias}, "conv2d", [sx, sw, g](const Tensor& gy, GradSink& out) {
    detail::with_float(gy, "conv2d backward", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = out.needs(0) ? Tensor::empty({g.N, g.C, g.H, g.W}, gy.dtype()) : Tensor();
      Tensor dw = out.needs(1) ? Tensor::empty({g.OC, g.Cg(), g.KH, g.KW}, gy.dtype()) : Tensor();
      Tensor db = out.needs(2) ? Tensor::empty({g.OC}, gy.dtype()) : Tensor();
      conv_backward<T>(sx.defined() ? sx.data<T>() : nullptr, sw.defined() ? sw.data<T>() : nullptr,
                       gy.data<T>(), g, dx.defined() ? dx.data<T>() : nullptr,
                       dw.defined() ? dw.data<T>() : nullptr, db.defined() ? db.data<T>() : nullptr);
      if (dx.defined()) out.add(0, dx);
      if (dw.defined()) out.add(1, dw);
      if (db.defined()) out.add(2, db);
    });
  });
}

}  // namespace qforge::autograd
