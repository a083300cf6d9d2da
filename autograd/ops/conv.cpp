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
// With stride 1, row (c, kh, kw) of the im2col matrix is the padded input
// plane shifted by (kh*dh, kw*dw), provided the output is computed on a grid
// as wide as the padded rows (Ws columns per output row instead of OW). So no
// column matrix is built: the GEMM reads B rows straight from the padded image
// through a table of row pointers. The extra grid columns are computed and
// dropped (forward), or held at zero in the output gradient so that they
// contribute nothing (backward).
//
// Consecutive image rows share one zero gap (the right padding of a row is the
// left padding of the next), and so do consecutive stacked samples: a 3x3,
// pad-1 conv on 8x8 maps computes 9x9 grid points per output image, not 10x10.
struct Shifted {
  int64_t Ws, Hs, plane, nb, base, cstride;
  // nb samples share one GEMM: the padded buffer is [Cg][base + nb * plane +
  // tail], sample s's pixel (h, w) at base + s * plane + h * Ws + w, so a
  // shifted row runs through all nb images (small maps get wider GEMMs).
  Shifted(const ConvGeom& g, int64_t nb_) : nb(nb_) {
    // A zero gap must absorb the left overhang (pw), the right overhang (pw
    // for stride 1) and outputs wider than the input (large padding).
    Ws = g.W + std::max<int64_t>(g.pw, g.OW - g.W);
    Hs = g.H + std::max<int64_t>(g.ph, g.OH - g.H);
    plane = Hs * Ws;
    base = g.ph * Ws + g.pw;
    const int64_t tail = (g.KH - 1) * g.dh * Ws + (g.KW - 1) * g.dw + 16;
    cstride = (base + nb * plane + tail + 15) / 16 * 16;
  }
  // Grid columns that cover `ns` stacked samples.
  int64_t L(const ConvGeom& g, int64_t ns) const { return (ns - 1) * plane + g.OH * Ws; }
  int64_t padded_size(const ConvGeom& g) const { return g.Cg() * cstride; }
  // Grid offset of output (s, oh, 0).
  int64_t out_at(int64_t s, int64_t oh) const { return s * plane + oh * Ws; }
  // Where kernel tap (kh, kw) reads, relative to the grid point, past `base`.
  int64_t tap(const ConvGeom& g, int64_t kh, int64_t kw) const {
    return (kh * g.dh - g.ph) * Ws + kw * g.dw - g.pw;
  }
  // Row pointers of the virtual column matrix over a padded buffer.
  void rows(const ConvGeom& g, const float* xp, std::vector<const float*>& out) const {
    out.resize(g.Kc());
    for (int64_t c = 0; c < g.Cg(); ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw)
          out[(c * g.KH + kh) * g.KW + kw] = xp + c * cstride + base + tap(g, kh, kw);
  }
  // Copies one group's channels of samples n0..n0+ns into the padded buffer
  // (whose gaps stay zero).
  void pad(const ConvGeom& g, const float* x, int64_t n0, int64_t ns, int64_t gi, float* xp) const {
    for (int64_t s = 0; s < ns; ++s)
      for (int64_t c = 0; c < g.Cg(); ++c) {
        const float* src = x + ((n0 + s) * g.C + gi * g.Cg() + c) * g.H * g.W;
        float* dst = xp + c * cstride + base + s * plane;
        copy_rows(dst, Ws, src, g.W, g.H, g.W);
      }
  }
};

bool use_shifted(const ConvGeom& g) { return g.sh == 1 && g.sw == 1 && !g.pointwise(); }

// Samples per GEMM: enough for about 1024 grid columns, at most the chunk.
int64_t stack_count(const ConvGeom& g, int64_t chunk) {
  const int64_t plane = Shifted(g, 1).plane;
  return std::clamp<int64_t>(1024 / plane, 1, std::max<int64_t>(chunk, 1));
}

void conv_forward_shifted(const float* x, const float* w, const float* b, const ConvGeom& g, float* y) {
  const int64_t OCg = g.OCg(), OHW = g.OHW();
  const int64_t chunks = std::min<int64_t>(g.N, num_threads());
  const Shifted sh(g, stack_count(g, (g.N + chunks - 1) / chunks));
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t lo, hi;
    chunk_range(g.N, chunks, c, lo, hi);
    Tensor xpad = Tensor::zeros({sh.padded_size(g)});
    Tensor ygrid = Tensor::empty({OCg * sh.L(g, sh.nb)});
    float* xp = xpad.data<float>();
    float* yp = ygrid.data<float>();
    std::vector<const float*> rows;
    sh.rows(g, xp, rows);
    for (int64_t n0 = lo; n0 < hi; n0 += sh.nb) {
      const int64_t ns = std::min(sh.nb, hi - n0);
      const int64_t L = sh.L(g, ns);
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        sh.pad(g, x, n0, ns, gi, xp);
        gemm_rows_nn(OCg, L, g.Kc(), 1.0f, w + gi * OCg * g.Kc(), g.Kc(), rows.data(), 0.0f, yp, L);
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
// (on the grid, zero off the outputs) with the transposed weights:
//   dx(c, P) = sum over (o, kh, kw) of W[o, c, kh, kw] * gy_grid(o, P - tap(kh, kw)),
// so it runs through the same row-pointer GEMM, over rows of the gradient
// grid shifted the other way, with no column buffer and no scatter.
void conv_backward_shifted(const float* x, const float* w, const float* gy, const ConvGeom& g, float* dx,
                           float* dw, float* db) {
  const int64_t Kc = g.Kc(), OHW = g.OHW(), OCg = g.OCg(), Cg = g.Cg(), wsize = g.OC * Kc;
  const int64_t KK = g.KH * g.KW;
  const int64_t chunks = std::min<int64_t>(g.N, num_threads());
  const Shifted sh(g, stack_count(g, (g.N + chunks - 1) / chunks));
  // Gradient grid rows: [front zeros F][grid ... up to nb planes], stride LD.
  // F is a multiple of 16 floats, so that the weight-gradient GEMM's A rows
  // (gradient rows, LD apart) are 64-byte aligned: no cache-line-split loads.
  const int64_t F = (std::max<int64_t>(0, sh.tap(g, g.KH - 1, g.KW - 1)) + 15) / 16 * 16;
  const int64_t LD = (F + sh.nb * sh.plane + 15) / 16 * 16;
  // Transposed weights per group: wt[gi][c][(o, kh, kw)] = W[gi*OCg + o, c, kh, kw].
  std::vector<float> wt;
  if (dx) {
    wt.resize(static_cast<size_t>(g.groups * Cg * OCg * KK));
    for (int64_t gi = 0; gi < g.groups; ++gi)
      for (int64_t o = 0; o < OCg; ++o)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t t = 0; t < KK; ++t)
            wt[((gi * Cg + c) * OCg + o) * KK + t] = w[((gi * OCg + o) * Cg + c) * KK + t];
  }
  std::vector<Tensor> dw_part(chunks), db_part(chunks);
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t lo, hi;
    chunk_range(g.N, chunks, c, lo, hi);
    Tensor xpad = dw ? Tensor::zeros({sh.padded_size(g)}) : Tensor();
    Tensor gygrid = Tensor::zeros({OCg * LD});
    float* gp = gygrid.data<float>();
    std::vector<const float*> xrows, grows;
    if (dw) sh.rows(g, xpad.data<float>(), xrows);
    // Input-domain columns: sample s's pixel (h, w) at s * plane + h * Ws + w.
    const int64_t Nmax = (sh.nb - 1) * sh.plane + (g.H - 1) * sh.Ws + g.W;
    Tensor dxgrid = dx ? Tensor::empty({Cg * Nmax}) : Tensor();
    if (dx) {
      grows.resize(OCg * KK);
      for (int64_t o = 0; o < OCg; ++o)
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) grows[o * KK + kh * g.KW + kw] = gp + o * LD + F - sh.tap(g, kh, kw);
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
        // Output gradient on the grid. Only output positions are written, so
        // every other column stays 0 from the allocation.
        for (int64_t s = 0; s < ns; ++s) {
          const float* gyg = gy + ((n0 + s) * g.OC + gi * OCg) * OHW;
          for (int64_t o = 0; o < OCg; ++o) {
            copy_rows(gp + o * LD + F + sh.out_at(s, 0), sh.Ws, gyg + o * OHW, g.OW, g.OH, g.OW);
            if (dbp) {
              float sum = 0;
              for (int64_t i = 0; i < OHW; ++i) sum += gyg[o * OHW + i];
              dbp[gi * OCg + o] += sum;
            }
          }
        }
        if (dwp) {  // dW_g += gy_grid [OCg, L] x cols^T
          sh.pad(g, x, n0, ns, gi, xpad.data<float>());
          gemm_rows_nt(OCg, Kc, L, 1.0f, gp + F, LD, xrows.data(), 1.0f, dwp + gi * OCg * Kc, Kc);
        }
        if (dx) {  // dx_grid [Cg, N] = Wt_g [Cg, OCg*KK] x shifted gradient rows
          const int64_t N = (ns - 1) * sh.plane + (g.H - 1) * sh.Ws + g.W;
          float* dg = dxgrid.data<float>();
          gemm_rows_nn(Cg, N, OCg * KK, 1.0f, wt.data() + gi * Cg * OCg * KK, OCg * KK, grows.data(), 0.0f, dg,
                       N);
          for (int64_t s = 0; s < ns; ++s)
            for (int64_t ch = 0; ch < Cg; ++ch) {
              float* dst = dx + ((n0 + s) * g.C + gi * Cg + ch) * g.H * g.W;
              const float* src = dg + ch * N + s * sh.plane;
              copy_rows(dst, g.W, src, sh.Ws, g.H, g.W);
            }
        }
      }
    }
  });
  if (dw) sum_partials(dw_part, wsize, dw);
  if (db) sum_partials(db_part, g.OC, db);
}

// ---- general path: im2col + GEMM --------------------------------------------

template <class T>
void conv_forward(const T* x, const T* w, const T* b, const ConvGeom& g, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    if (use_shifted(g)) return conv_forward_shifted(x, w, b, g, y);
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
  if constexpr (std::is_same_v<T, float>) {
    if (use_shifted(g)) return conv_backward_shifted(x, w, gy, g, dx, dw, db);
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
