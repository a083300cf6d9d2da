// Batch normalization over axis 1 of [N, C] or [N, C, H, W].
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/parallel.h"

namespace qforge::autograd {

namespace {

// Row reductions with independent partial sums in T, kLanes of them held as
// one GCC vector (which each ISA clone below maps to its own registers), so
// that the compiler keeps several vector accumulators in flight; rows are
// combined in double. Written as lane arrays, GCC 12 vectorized the outer
// loop as well and shuffled every element into place (a fifth of a ResNet-20
// training step's non-GEMM time).
constexpr int kLanes = 16;
template <class T>
struct Lanes {
  typedef T type __attribute__((vector_size(sizeof(T) * kLanes)));
};
// Unaligned load of kLanes values into a new local `v` (a macro: a helper
// returning the vector would be compiled for the baseline ISA).
#define QF_LOAD_LANES(T, v, p)  \
  typename Lanes<T>::type v;    \
  std::memcpy(&v, (p), sizeof v)

template <class T>
[[gnu::always_inline]] inline double row_sum(const T* r, int64_t n) {
  typename Lanes<T>::type acc = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    QF_LOAD_LANES(T, v, r + i);
    acc += v;
  }
  double s = 0;
  for (; i < n; ++i) s += r[i];
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

template <class T>
[[gnu::always_inline]] inline double row_sq_dev(const T* r, int64_t n, T mean) {
  typename Lanes<T>::type acc = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    QF_LOAD_LANES(T, v, r + i);
    const typename Lanes<T>::type d = v - mean;
    acc += d * d;
  }
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(r[i] - mean) * (r[i] - mean);
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

/// sum(g') and sum(g' * (x - mean)) over one row, where g' = g, or, through a
/// fused ReLU whose output is y (y non-null), g' = g where 0 < y <= ymax, else
/// 0 (ymax: +inf, or the top of a fused fake quant's STE range).
template <class T>
[[gnu::always_inline]] inline void row_grad_sums(const T* g, const T* x, const T* y, int64_t n, T mean, double& sg,
                                                 double& sgx, T ymax = std::numeric_limits<T>::infinity()) {
  typedef typename Lanes<T>::type V;
  V a = {}, b = {};
  const V zero = {}, top = zero + ymax;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    QF_LOAD_LANES(T, gv, g + i);
    QF_LOAD_LANES(T, xv, x + i);
    if (y) {
      QF_LOAD_LANES(T, yv, y + i);
      // 0 < y <= top, as two selects of this shape: GCC 12 scalarizes the
      // others (<=, & of masks, chained selects on gv) in a target clone.
      const V t = yv > top ? zero : yv;
      gv = t > zero ? gv : zero;
    }
    a += gv;
    b += gv * (xv - mean);
  }
  for (; i < n; ++i) {
    const T gi = !y || (y[i] > T(0) && y[i] <= ymax) ? g[i] : T(0);
    sg += gi;
    sgx += static_cast<double>(gi) * (x[i] - mean);
  }
  for (int l = 0; l < kLanes; ++l) {
    sg += a[l];
    sgx += b[l];
  }
}

// The double versions (gradient checks) use the generic code.
inline void row_grad_sums(const double* g, const double* x, int64_t n, double mean, double& sg, double& sgx) {
  row_grad_sums<double>(g, x, nullptr, n, mean, sg, sgx);
}
inline void row_grad_sums_relu(const double* g, const double* x, const double* y, int64_t n, double mean, double& sg,
                               double& sgx, double ymax) {
  row_grad_sums<double>(g, x, y, n, mean, sg, sgx, ymax);
}

// Hot per-row loops, float versions built for several ISAs and picked at load
// time (GCC function multiversioning): the rest of the build stays generic.
#define QF_NORM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

QF_NORM_CLONES double row_sum(const float* r, int64_t n) { return row_sum<float>(r, n); }
QF_NORM_CLONES double row_sq_dev(const float* r, int64_t n, float mean) { return row_sq_dev<float>(r, n, mean); }
QF_NORM_CLONES void row_grad_sums(const float* g, const float* x, int64_t n, float mean, double& sg, double& sgx) {
  row_grad_sums<float>(g, x, nullptr, n, mean, sg, sgx);
}
QF_NORM_CLONES void row_grad_sums_relu(const float* g, const float* x, const float* y, int64_t n, float mean,
                                       double& sg, double& sgx, float ymax) {
  row_grad_sums<float>(g, x, y, n, mean, sg, sgx, ymax);
}

/// o = r * a + b, then max(o, 0) when relu.
template <class T>
[[gnu::always_inline]] inline void row_affine(const T* r, int64_t n, T a, T b, bool relu, T* o) {
  if (relu) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = r[i] * a + b;
      o[i] = v > T(0) ? v : T(0);  // as relu(): NaN gives 0
    }
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = r[i] * a + b;
  }
}
QF_NORM_CLONES void row_affine(const float* r, int64_t n, float a, float b, bool relu, float* o) {
  row_affine<float>(r, n, a, b, relu, o);
}
/// o = max(r * a + b, 0), widening the running [lo, hi] (detail::relu_store_range).
template <class T>
[[gnu::always_inline]] inline void row_affine_relu_range(const T* r, int64_t n, T a, T b, T* o, T& lo, T& hi) {
  detail::relu_store_range(n, [r, a, b](int64_t i) { return r[i] * a + b; }, o, lo, hi);
}
QF_NORM_CLONES void row_affine_relu_range(const float* r, int64_t n, float a, float b, float* o, float& lo,
                                          float& hi) {
  row_affine_relu_range<float>(r, n, a, b, o, lo, hi);
}

/// d = k * (m * g - mg - (x - mean) * invstd * mgx), the training-mode input gradient.
template <class T>
[[gnu::always_inline]] inline void row_dx(const T* g, const T* x, int64_t n, T k, T m, T mg, T mean, T invstd_mgx, T* d) {
  for (int64_t i = 0; i < n; ++i) d[i] = k * (m * g[i] - mg - (x[i] - mean) * invstd_mgx);
}
QF_NORM_CLONES void row_dx(const float* g, const float* x, int64_t n, float k, float m, float mg, float mean,
                           float invstd_mgx, float* d) {
  row_dx<float>(g, x, n, k, m, mg, mean, invstd_mgx, d);
}
/// row_dx with g' = g where 0 < y <= ymax, else 0 (through a fused ReLU).
template <class T>
[[gnu::always_inline]] inline void row_dx_relu(const T* g, const T* x, const T* y, int64_t n, T k, T m, T mg, T mean,
                                               T invstd_mgx, T ymax, T* d) {
  for (int64_t i = 0; i < n; ++i)
    d[i] = k * (m * ((y[i] > T(0)) & (y[i] <= ymax) ? g[i] : T(0)) - mg - (x[i] - mean) * invstd_mgx);
}
QF_NORM_CLONES void row_dx_relu(const float* g, const float* x, const float* y, int64_t n, float k, float m,
                                float mg, float mean, float invstd_mgx, float ymax, float* d) {
  row_dx_relu<float>(g, x, y, n, k, m, mg, mean, invstd_mgx, ymax, d);
}

// The two-sided forms, for a fused fake quant without a ReLU: the STE passes
// g where ylo <= y <= yhi (the band of ste_lower_bound, ste_upper_bound).

/// o = r * a + b, widening [lo, hi] over the outputs; `bad` gets o - o added
/// (0 while every output is finite, NaN after an inf or NaN).
template <class T>
[[gnu::always_inline]] inline void row_affine_range(const T* r, int64_t n, T a, T b, T* o, T& lo, T& hi, T& bad) {
  typedef typename Lanes<T>::type V;
  const V zero = {};
  V l = zero + lo, h = zero + hi, bv = zero;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    QF_LOAD_LANES(T, v, r + i);
    const V y = v * a + b;
    std::memcpy(o + i, &y, sizeof y);
    l = y < l ? y : l;
    h = y > h ? y : h;
    bv += y - y;
  }
  for (; i < n; ++i) {
    const T y = r[i] * a + b;
    o[i] = y;
    lo = y < lo ? y : lo;
    hi = y > hi ? y : hi;
    bad += y - y;
  }
  for (int k = 0; k < kLanes; ++k) {
    lo = l[k] < lo ? l[k] : lo;
    hi = h[k] > hi ? h[k] : hi;
    bad += bv[k];
  }
}

/// row_grad_sums with g' = g where ylo <= y <= yhi, else 0.
template <class T>
[[gnu::always_inline]] inline void row_grad_sums_band(const T* g, const T* x, const T* y, int64_t n, T mean,
                                                      double& sg, double& sgx, T ylo, T yhi) {
  typedef typename Lanes<T>::type V;
  V a = {}, b = {};
  const V zero = {}, top = zero + yhi, bot = zero + ylo, out = zero - std::numeric_limits<T>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    QF_LOAD_LANES(T, gv, g + i);
    QF_LOAD_LANES(T, xv, x + i);
    QF_LOAD_LANES(T, yv, y + i);
    // Two selects, the first on y, as row_grad_sums does (see there). A NaN
    // y fails the second comparison.
    const V t = yv > top ? out : yv;
    gv = t >= bot ? gv : zero;
    a += gv;
    b += gv * (xv - mean);
  }
  for (; i < n; ++i) {
    const T gi = y[i] >= ylo && y[i] <= yhi ? g[i] : T(0);
    sg += gi;
    sgx += static_cast<double>(gi) * (x[i] - mean);
  }
  for (int l = 0; l < kLanes; ++l) {
    sg += a[l];
    sgx += b[l];
  }
}

/// row_dx with g' = g where ylo <= y <= yhi, else 0.
template <class T>
[[gnu::always_inline]] inline void row_dx_band(const T* g, const T* x, const T* y, int64_t n, T k, T m, T mg, T mean,
                                               T invstd_mgx, T ylo, T yhi, T* d) {
  for (int64_t i = 0; i < n; ++i)
    d[i] = k * (m * ((y[i] >= ylo) & (y[i] <= yhi) ? g[i] : T(0)) - mg - (x[i] - mean) * invstd_mgx);
}

inline void row_affine_range(const double* r, int64_t n, double a, double b, double* o, double& lo, double& hi,
                             double& bad) {
  row_affine_range<double>(r, n, a, b, o, lo, hi, bad);
}
inline void row_grad_sums_band(const double* g, const double* x, const double* y, int64_t n, double mean, double& sg,
                               double& sgx, double ylo, double yhi) {
  row_grad_sums_band<double>(g, x, y, n, mean, sg, sgx, ylo, yhi);
}
inline void row_dx_band(const double* g, const double* x, const double* y, int64_t n, double k, double m, double mg,
                        double mean, double invstd_mgx, double ylo, double yhi, double* d) {
  row_dx_band<double>(g, x, y, n, k, m, mg, mean, invstd_mgx, ylo, yhi, d);
}
QF_NORM_CLONES void row_affine_range(const float* r, int64_t n, float a, float b, float* o, float& lo, float& hi,
                                     float& bad) {
  row_affine_range<float>(r, n, a, b, o, lo, hi, bad);
}
QF_NORM_CLONES void row_grad_sums_band(const float* g, const float* x, const float* y, int64_t n, float mean,
                                       double& sg, double& sgx, float ylo, float yhi) {
  row_grad_sums_band<float>(g, x, y, n, mean, sg, sgx, ylo, yhi);
}
QF_NORM_CLONES void row_dx_band(const float* g, const float* x, const float* y, int64_t n, float k, float m,
                                float mg, float mean, float invstd_mgx, float ylo, float yhi, float* d) {
  row_dx_band<float>(g, x, y, n, k, m, mg, mean, invstd_mgx, ylo, yhi, d);
}
#undef QF_NORM_CLONES
#undef QF_LOAD_LANES

}  // namespace

Variable batch_norm(const Variable& x, Tensor running_mean, Tensor running_var, const Variable& weight,
                    const Variable& bias, const BatchNormOptions& opt) {
  const Tensor& xv = x.value();
  const DType dt = detail::common_float_dtype(
      {&xv, weight.defined() ? &weight.value() : nullptr, bias.defined() ? &bias.value() : nullptr,
       running_mean.defined() ? &running_mean : nullptr, running_var.defined() ? &running_var : nullptr},
      "batch_norm");
  QF_CHECK_SHAPE(xv.ndim() == 2 || xv.ndim() == 4)
      << "batch_norm: input must be [N, C] or [N, C, H, W], got " << xv.desc();
  QF_CHECK(opt.eps > 0) << "batch_norm: eps must be > 0, got " << opt.eps;
  QF_CHECK(opt.momentum >= 0 && opt.momentum <= 1) << "batch_norm: momentum must be in [0, 1], got "
                                                   << opt.momentum;
  const int64_t N = xv.size(0), C = xv.size(1);
  const int64_t S = xv.ndim() == 4 ? xv.size(2) * xv.size(3) : 1;
  const int64_t M = N * S;
  for (const Tensor* t : std::initializer_list<const Tensor*>{weight.defined() ? &weight.value() : nullptr, bias.defined() ? &bias.value() : nullptr,
                          running_mean.defined() ? &running_mean : nullptr,
                          running_var.defined() ? &running_var : nullptr})
    if (t) QF_CHECK_SHAPE(t->ndim() == 1 && t->size(0) == C)
        << "batch_norm: per-channel tensor " << t->desc() << " does not match " << C << " channels of "
        << xv.desc();
  QF_CHECK(running_mean.defined() == running_var.defined())
      << "batch_norm: give both running_mean and running_var, or neither";
  const bool use_batch_stats = opt.training || !running_mean.defined();
  if (use_batch_stats)
    QF_CHECK_SHAPE(M > 1) << "batch_norm: training needs more than one value per channel, got " << xv.desc();
  const bool fq = static_cast<bool>(opt.output_fake_quant);
  const bool band = fq && !opt.relu;  // fake quant without a ReLU: a two-sided STE mask
  // Per-channel range of the (ReLU) output, when fake quant follows; ch_bad
  // is nonzero for a channel with an inf or NaN output.
  std::vector<double> ch_lo(fq ? C : 0), ch_hi(fq ? C : 0), ch_bad(band ? C : 0);

  Tensor y = Tensor::empty(xv.shape(), dt);
  Tensor mean_t = Tensor::empty({C}, dt), invstd_t = Tensor::empty({C}, dt);
  detail::with_float(xv, "batch_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = xv.data<T>();
    T* py = y.data<T>();
    T* pm = mean_t.data<T>();
    T* pi = invstd_t.data<T>();
    const T* pw = weight.defined() ? weight.value().data<T>() : nullptr;
    const T* pb = bias.defined() ? bias.value().data<T>() : nullptr;
    T* prm = running_mean.defined() ? running_mean.data<T>() : nullptr;
    T* prv = running_var.defined() ? running_var.data<T>() : nullptr;
    parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double mean, var;
        if (use_batch_stats) {
          double s = 0;
          for (int64_t n = 0; n < N; ++n) s += row_sum(px + (n * C + c) * S, S);
          mean = s / static_cast<double>(M);
          // Deviations from the mean rounded to T; the residual shift
          // (mean - T(mean)) is folded in exactly below.
          const T tm = static_cast<T>(mean);
          double q = 0;
          for (int64_t n = 0; n < N; ++n) q += row_sq_dev(px + (n * C + c) * S, S, tm);
          const double shift = mean - static_cast<double>(tm);
          var = std::max(q / static_cast<double>(M) - shift * shift, 0.0);
          if (opt.training && prm) {
            prm[c] = static_cast<T>((1 - opt.momentum) * prm[c] + opt.momentum * mean);
            prv[c] = static_cast<T>((1 - opt.momentum) * prv[c] +
                                    opt.momentum * var * static_cast<double>(M) / static_cast<double>(M - 1));
          }
        } else {
          mean = prm[c];
          var = prv[c];
        }
        const T invstd = static_cast<T>(1.0 / std::sqrt(var + opt.eps));
        pm[c] = static_cast<T>(mean);
        pi[c] = invstd;
        const T a = pw ? pw[c] * invstd : invstd;
        const T b = (pb ? pb[c] : T(0)) - static_cast<T>(mean) * a;
        T lo = std::numeric_limits<T>::infinity(), hi = -lo, bad = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* r = px + (n * C + c) * S;
          T* o = py + (n * C + c) * S;
          if (band)
            row_affine_range(r, S, a, b, o, lo, hi, bad);
          else if (fq)
            row_affine_relu_range(r, S, a, b, o, lo, hi);
          else
            row_affine(r, S, a, b, opt.relu, o);
        }
        if (fq) {
          ch_lo[c] = lo;
          ch_hi[c] = hi;
        }
        if (band) ch_bad[c] = bad != T(0) ? 1.0 : 0.0;  // NaN != 0 too
      }
    });
  });
  // Fake quant of the ReLU output: the hook sees its range (min and max are
  // exact, so the per-channel split does not matter), then one pass writes
  // the quantized values; the backward's ReLU mask also clips at the top of
  // the STE range.
  Tensor out_v = y;
  double ymax = std::numeric_limits<double>::infinity(), ymin = -ymax;
  if (fq) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;  // none: an empty output
    if (y.numel() > 0) {
      lo = *std::min_element(ch_lo.begin(), ch_lo.end());
      hi = *std::max_element(ch_hi.begin(), ch_hi.end());
      if (band && std::any_of(ch_bad.begin(), ch_bad.end(), [](double b) { return b != 0; }))
        lo = std::numeric_limits<double>::quiet_NaN();
    }
    const FakeQuantParams p = opt.output_fake_quant(lo, hi);
    out_v = detail::fake_quantize_values(y, p);
    ymax = detail::ste_upper_bound(dt, p);
    if (band) ymin = detail::ste_lower_bound(dt, p);
  }
  if (!any_requires_grad({&x, &weight, &bias})) return Variable(out_v);
  Tensor wv = weight.defined() ? weight.value() : Tensor();
  // With the fused ReLU or fake quant, the (pre-quantization) output is the
  // gradient's mask.
  Tensor yv = opt.relu || band ? y : Tensor();
  const char* name = band       ? "batch_norm_fake_quant"
                     : fq       ? "batch_norm_relu_fake_quant"
                     : opt.relu ? "batch_norm_relu"
                                : "batch_norm";
  return Variable::make(
      out_v, {&x, &weight, &bias}, name,
      [xv, wv, yv, mean_t, invstd_t, N, C, S, M, use_batch_stats, ymax, ymin, band](const Tensor& g, GradSink& out) {
        Tensor dx = out.needs(0) ? Tensor::empty(xv.shape(), xv.dtype()) : Tensor();
        Tensor dw = out.needs(1) ? Tensor::empty({C}, xv.dtype()) : Tensor();
        Tensor db = out.needs(2) ? Tensor::empty({C}, xv.dtype()) : Tensor();
        detail::with_float(xv, "batch_norm backward", [&](auto tag) {
          using T = decltype(tag);
          const T* px = xv.data<T>();
          const T* pg = g.data<T>();
          const T* pw = wv.defined() ? wv.data<T>() : nullptr;
          const T* pm = mean_t.data<T>();
          const T* pi = invstd_t.data<T>();
          const T* py = yv.defined() ? yv.data<T>() : nullptr;  // the ReLU mask, when fused
          const T top = static_cast<T>(ymax), bot = static_cast<T>(ymin);  // exact: T values or infinities
          parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
            for (int64_t c = c0; c < c1; ++c) {
              const T mean = pm[c], invstd = pi[c];
              double sg = 0, sgx = 0;  // sum(g), sum(g * xhat)
              for (int64_t n = 0; n < N; ++n) {
                const int64_t off = (n * C + c) * S;
                if (band)
                  row_grad_sums_band(pg + off, px + off, py + off, S, mean, sg, sgx, bot, top);
                else if (py)
                  row_grad_sums_relu(pg + off, px + off, py + off, S, mean, sg, sgx, top);
                else
                  row_grad_sums(pg + off, px + off, S, mean, sg, sgx);
              }
              sgx *= invstd;
              if (dw.defined()) dw.data<T>()[c] = static_cast<T>(sgx);
              if (db.defined()) db.data<T>()[c] = static_cast<T>(sg);
              if (!dx.defined()) continue;
              const T w = pw ? pw[c] : T(1);
              T* pd = dx.data<T>();
              if (use_batch_stats) {
                // dx = w * invstd / M * (M g - sum(g) - xhat * sum(g xhat))
                const T k = w * invstd / static_cast<T>(M);
                const T mg = static_cast<T>(sg);
                const T mgx = static_cast<T>(sgx);
                const T invstd_mgx = invstd * mgx;
                for (int64_t n = 0; n < N; ++n) {
                  const int64_t off = (n * C + c) * S;
                  if (band)
                    row_dx_band(pg + off, px + off, py + off, S, k, static_cast<T>(M), mg, mean, invstd_mgx, bot, top,
                                pd + off);
                  else if (py)
                    row_dx_relu(pg + off, px + off, py + off, S, k, static_cast<T>(M), mg, mean, invstd_mgx, top,
                                pd + off);
                  else
                    row_dx(pg + off, px + off, S, k, static_cast<T>(M), mg, mean, invstd_mgx, pd + off);
                }
              } else {
                const T k = w * invstd;
                for (int64_t n = 0; n < N; ++n) {
                  const int64_t off = (n * C + c) * S;
                  const T* gr = pg + off;
                  T* d = pd + off;
                  if (band) {
                    for (int64_t i = 0; i < S; ++i)
                      d[i] = k * (py[off + i] >= bot && py[off + i] <= top ? gr[i] : T(0));
                  } else if (py) {
                    // k * 0 where only the STE clips, as the separate ops give (-0 for k < 0)
                    for (int64_t i = 0; i < S; ++i)
                      d[i] = py[off + i] > T(0) ? k * (py[off + i] <= top ? gr[i] : T(0)) : T(0);
                  } else {
                    for (int64_t i = 0; i < S; ++i) d[i] = k * gr[i];
                  }
                }
              }
            }
          });
        });
        if (dx.defined()) out.add(0, dx);
        if (dw.defined()) out.add(1, dw);
        if (db.defined()) out.add(2, db);
      });
}

}  // namespace qforge::autograd
