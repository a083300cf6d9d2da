// Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d, global_avg_pool2d.
#include <algorithm>
#include <limits>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace {

struct PoolGeom {
  int64_t N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw;
};

PoolGeom pool_geom(const Tensor& x, const Pool2dOptions& opt, const char* what) {
  QF_CHECK_SHAPE(x.ndim() == 4) << what << ": input must be [N, C, H, W], got " << x.desc();
  PoolGeom g{};
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.kh = opt.kernel[0], g.kw = opt.kernel[1];
  g.sh = opt.stride[0] ? opt.stride[0] : g.kh;
  g.sw = opt.stride[1] ? opt.stride[1] : g.kw;
  g.ph = opt.padding[0], g.pw = opt.padding[1];
  QF_CHECK(g.kh >= 1 && g.kw >= 1 && g.sh >= 1 && g.sw >= 1)
      << what << ": kernel and stride must be >= 1, got kernel " << g.kh << "x" << g.kw << " stride " << g.sh
      << "x" << g.sw;
  QF_CHECK(g.ph >= 0 && g.pw >= 0 && 2 * g.ph <= g.kh && 2 * g.pw <= g.kw)
      << what << ": padding must be between 0 and half the kernel, got " << g.ph << "x" << g.pw;
  g.OH = conv_out_size(g.H, g.kh, g.sh, g.ph, 1);
  g.OW = conv_out_size(g.W, g.kw, g.sw, g.pw, 1);
  QF_CHECK_SHAPE(g.OH >= 1 && g.OW >= 1) << what << ": input " << x.desc() << " is smaller than the window "
                                         << g.kh << "x" << g.kw;
  return g;
}

}  // namespace

Variable max_pool2d(const Variable& x, const Pool2dOptions& opt) {
  const Tensor& xv = x.value();
  const PoolGeom g = pool_geom(xv, opt, "max_pool2d");
  Tensor y = Tensor::empty({g.N, g.C, g.OH, g.OW}, xv.dtype());
  const bool need_grad = any_requires_grad({&x});
  // Argmax per output, as an offset into its input plane.
  Tensor idx = need_grad ? Tensor::empty({g.N, g.C, g.OH, g.OW}, DType::i32) : Tensor();
  detail::with_float(xv, "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xv.data<T>();
    T* py = y.data<T>();
    int32_t* pi = need_grad ? idx.data<int32_t>() : nullptr;
    const bool k2s2 = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
    parallel_for(0, g.N * g.C, 4, [&](int64_t s, int64_t e) {
      for (int64_t p = s; p < e; ++p) {
        const T* xp = px + p * g.H * g.W;
        if (k2s2) {  // the common 2x2 window, branch-free; same choice as the general loop
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const T* r0 = xp + 2 * oh * g.W;
            const T* r1 = r0 + g.W;
            T* yo = py + (p * g.OH + oh) * g.OW;
            int32_t* io = pi ? pi + (p * g.OH + oh) * g.OW : nullptr;
            for (int64_t ow = 0; ow < g.OW; ++ow) {
              const int32_t base = static_cast<int32_t>(2 * oh * g.W + 2 * ow);
              T best = r0[2 * ow];
              int32_t bi = base;
              auto take = [&](T v, int32_t i) {
                const bool t = (v > best) || (v != v && best == best);
                best = t ? v : best;
                bi = t ? i : bi;
              };
              take(r0[2 * ow + 1], base + 1);
              take(r1[2 * ow], base + static_cast<int32_t>(g.W));
              take(r1[2 * ow + 1], base + static_cast<int32_t>(g.W) + 1);
              yo[ow] = best;
              if (io) io[ow] = bi;
            }
          }
          continue;
        }
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const int64_t h0 = std::max<int64_t>(oh * g.sh - g.ph, 0);
          const int64_t h1 = std::min<int64_t>(oh * g.sh - g.ph + g.kh, g.H);
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t w0 = std::max<int64_t>(ow * g.sw - g.pw, 0);
            const int64_t w1 = std::min<int64_t>(ow * g.sw - g.pw + g.kw, g.W);
            T best = -std::numeric_limits<T>::infinity();
            int64_t bi = h0 * g.W + w0;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) {
                const T v = xp[h * g.W + w];
                if (v > best || v != v) {  // NaN propagates, as in PyTorch
                  best = v;
                  bi = h * g.W + w;
                  if (v != v) goto done;
                }
              }
          done:
            const int64_t o = (p * g.OH + oh) * g.OW + ow;
            py[o] = best;
            if (pi) pi[o] = static_cast<int32_t>(bi);
          }
        }
      }
    });
  });
  if (!need_grad) return Variable(y);
  return Variable::make(y, {&x}, "max_pool2d", [idx, g](const Tensor& gy, GradSink& out) {
    Tensor dx = Tensor::zeros({g.N, g.C, g.H, g.W}, gy.dtype());
    detail::with_float(gy, "max_pool2d backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = gy.data<T>();
      const int32_t* pi = idx.data<int32_t>();
      T* pd = dx.data<T>();
      const int64_t ohw = g.OH * g.OW, hw = g.H * g.W;
      parallel_for(0, g.N * g.C, 4, [&](int64_t s, int64_t e) {
        for (int64_t p = s; p < e; ++p)
          for (int64_t o = 0; o < ohw; ++o) pd[p * hw + pi[p * ohw + o]] += pg[p * ohw + o];
      });
    });
    out.add(0, dx);
  });
}

Variable avg_pool2d(const Variable& x, const Pool2dOptions& opt) {
  const Tensor& xv = x.value();
  const PoolGeom g = pool_geom(xv, opt, "avg_pool2d");
  const bool include_pad = opt.count_include_pad;
  // Window bounds and divisor of output (oh, ow), as PyTorch defines them.
  auto window = [g, include_pad](int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0, int64_t& w1) {
    h0 = oh * g.sh - g.ph;
    w0 = ow * g.sw - g.pw;
    h1 = std::min(h0 + g.kh, g.H + g.ph);
    w1 = std::min(w0 + g.kw, g.W + g.pw);
    int64_t div = (h1 - h0) * (w1 - w0);
    h0 = std::max<int64_t>(h0, 0);
    w0 = std::max<int64_t>(w0, 0);
    h1 = std::min(h1, g.H);
    w1 = std::min(w1, g.W);
    if (!include_pad) div = (h1 - h0) * (w1 - w0);
    return div;
  };
  Tensor y = Tensor::empty({g.N, g.C, g.OH, g.OW}, xv.dtype());
  detail::with_float(xv, "avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xv.data<T>();
    T* py = y.data<T>();
    parallel_for(0, g.N * g.C, 4, [&](int64_t s, int64_t e) {
      for (int64_t p = s; p < e; ++p) {
        const T* xp = px + p * g.H * g.W;
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            int64_t h0, h1, w0, w1;
            const int64_t div = window(oh, ow, h0, h1, w0, w1);
            T acc = 0;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) acc += xp[h * g.W + w];
            py[(p * g.OH + oh) * g.OW + ow] = acc / static_cast<T>(div);
          }
      }
    });
  });
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, "avg_pool2d", [g, window](const Tensor& gy, GradSink& out) {
    Tensor dx = Tensor::zeros({g.N, g.C, g.H, g.W}, gy.dtype());
    detail::with_float(gy, "avg_pool2d backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = gy.data<T>();
      T* pd = dx.data<T>();
      parallel_for(0, g.N * g.C, 4, [&](int64_t s, int64_t e) {
        for (int64_t p = s; p < e; ++p) {
          T* dp = pd + p * g.H * g.W;
          for (int64_t oh = 0; oh < g.OH; ++oh)
            for (int64_t ow = 0; ow < g.OW; ++ow) {
              int64_t h0, h1, w0, w1;
              const int64_t div = window(oh, ow, h0, h1, w0, w1);
              const T v = pg[(p * g.OH + oh) * g.OW + ow] / static_cast<T>(div);
              for (int64_t h = h0; h < h1; ++h)
                for (int64_t w = w0; w < w1; ++w) dp[h * g.W + w] += v;
            }
        }
      });
    });
    out.add(0, dx);
  });
}

Variable adaptive_avg_pool2d(const Variable& x, int64_t out_h, int64_t out_w) {
  const Tensor& xv = x.value();
  QF_CHECK_SHAPE(xv.ndim() == 4) << "adaptive_avg_pool2d: input must be [N, C, H, W], got " << xv.desc();
  QF_CHECK(out_h >= 1 && out_w >= 1) << "adaptive_avg_pool2d: output size must be >= 1, got " << out_h << "x"
                                     << out_w;
  const int64_t N = xv.size(0), C = xv.size(1), H = xv.size(2), W = xv.size(3);
  auto start = [](int64_t i, int64_t in, int64_t out) { return (i * in) / out; };
  auto end = [](int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; };
  Tensor y = Tensor::empty({N, C, out_h, out_w}, xv.dtype());
  detail::with_float(xv, "adaptive_avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xv.data<T>();
    T* py = y.data<T>();
    parallel_for(0, N * C, 4, [&](int64_t s, int64_t e) {
      for (int64_t p = s; p < e; ++p) {
        const T* xp = px + p * H * W;
        for (int64_t oh = 0; oh < out_h; ++oh) {
          const int64_t h0 = start(oh, H, out_h), h1 = end(oh, H, out_h);
          for (int64_t ow = 0; ow < out_w; ++ow) {
            const int64_t w0 = start(ow, W, out_w), w1 = end(ow, W, out_w);
            T acc = 0;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) acc += xp[h * W + w];
            py[(p * out_h + oh) * out_w + ow] = acc / static_cast<T>((h1 - h0) * (w1 - w0));
          }
        }
      }
    });
  });
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, "adaptive_avg_pool2d",
                        [N, C, H, W, out_h, out_w, start, end](const Tensor& gy, GradSink& out) {
                          Tensor dx = Tensor::zeros({N, C, H, W}, gy.dtype());
                          detail::with_float(gy, "adaptive_avg_pool2d backward", [&](auto tag) {
                            using T = decltype(tag);
                            const T* pg = gy.data<T>();
                            T* pd = dx.data<T>();
                            for (int64_t p = 0; p < N * C; ++p) {
                              T* dp = pd + p * H * W;
                              for (int64_t oh = 0; oh < out_h; ++oh) {
                                const int64_t h0 = start(oh, H, out_h), h1 = end(oh, H, out_h);
                                for (int64_t ow = 0; ow < out_w; ++ow) {
                                  const int64_t w0 = start(ow, W, out_w), w1 = end(ow, W, out_w);
                                  const T v = pg[(p * out_h + oh) * out_w + ow] /
                                              static_cast<T>((h1 - h0) * (w1 - w0));
                                  for (int64_t h = h0; h < h1; ++h)
                                    for (int64_t w = w0; w < w1; ++w) dp[h * W + w] += v;
                                }
                              }
                            }
                          });
                          out.add(0, dx);
                        });
}

Variable global_avg_pool2d(const Variable& x) {
  QF_CHECK_SHAPE(x.ndim() == 4) << "global_avg_pool2d: input must be [N, C, H, W], got " << x.value().desc();
  return adaptive_avg_pool2d(x, 1, 1);
}

}  // namespace qforge::autograd
