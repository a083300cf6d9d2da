// Fake quantization: quantize then dequantize in one pass, with the
// straight-through estimator (fake_quantize) or LSQ's learnable step size and
// offset (lsq_fake_quantize). The rounding rule is quant/qparams.h's: round
// half to even of x * (1 / scale), computed in the tensor's precision.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace {

/// x viewed as [outer, C, inner] for a channel axis (C = 1 per tensor).
struct ChannelView {
  int64_t outer = 1, C = 1, inner = 1;
};

ChannelView channel_view(const Tensor& x, int axis, int64_t channels, const char* what) {
  ChannelView v;
  if (axis < 0) {
    QF_CHECK_SHAPE(channels == 1) << what << ": per-tensor quantization takes one scale, got " << channels;
    v.inner = x.numel();
    return v;
  }
  QF_CHECK_INDEX(axis < x.ndim()) << what << ": channel axis " << axis << " is out of range for " << x.desc();
  QF_CHECK_SHAPE(x.size(axis) == channels)
      << what << ": " << channels << " scales for " << x.size(axis) << " channels along axis " << axis << " of "
      << x.desc();
  for (int d = 0; d < axis; ++d) v.outer *= x.size(d);
  v.C = channels;
  for (int d = axis + 1; d < x.ndim(); ++d) v.inner *= x.size(d);
  return v;
}

void check_range(int64_t qmin, int64_t qmax, const char* what) {
  QF_CHECK(qmin < qmax && qmin >= -(int64_t{1} << 16) && qmax <= (int64_t{1} << 16))
      << what << ": need qmin < qmax within +-65536, got [" << qmin << ", " << qmax << "]";
}

/// Splits x (viewed as [outer, C, inner]) into blocks of at most about
/// kBlock elements, each inside one channel's contiguous run, and calls
/// fn(c, begin, end, block) on them in parallel. The split depends on the
/// shape only, so per-block partial sums reduced in block order are
/// deterministic at any thread count.
struct BlockSplit {
  int64_t per_run = 1, len = 1, count = 0;
};

constexpr int64_t kBlock = 16384;

BlockSplit block_split(const ChannelView& v) {
  BlockSplit b;
  b.per_run = std::max<int64_t>(1, (v.inner + kBlock - 1) / kBlock);
  b.len = (v.inner + b.per_run - 1) / b.per_run;
  b.count = v.outer * v.C * b.per_run;
  return b;
}

template <class Fn>
void for_channel_blocks(const ChannelView& v, Fn&& fn) {
  const BlockSplit bs = block_split(v);
  const int64_t grain = std::max<int64_t>(1, kBlock / std::max<int64_t>(bs.len, 1));
  parallel_for(0, bs.count, grain, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t run = k / bs.per_run, part = k % bs.per_run;
      const int64_t begin = run * v.inner + part * bs.len;
      const int64_t end = std::min(run * v.inner + v.inner, begin + bs.len);
      fn(run % v.C, begin, end, k);
    }
  });
}

// The inner loops, written so that the compiler vectorizes them (clamps as
// comparisons rather than fmin/fmax, which also lets a NaN input through as
// NaN), and compiled for AVX-512, AVX2 and the baseline (nearbyint becomes
// one vrndscaleps/vroundps with the current rounding mode: half to even).
template <class T>
[[gnu::always_inline]] inline void qdq_loop(const T* x, T* y, int64_t n, T s, T inv, T z, T lo, T hi) {
  for (int64_t i = 0; i < n; ++i) {
    T q = std::nearbyint(x[i] * inv) + z;
    q = q < lo ? lo : q;
    q = q > hi ? hi : q;
    y[i] = (q - z) * s;
  }
}

template <class T>
[[gnu::always_inline]] inline void ste_loop(const T* x, const T* g, T* d, int64_t n, T inv, T z, T lo, T hi) {
  for (int64_t i = 0; i < n; ++i) {
    const T q = std::nearbyint(x[i] * inv) + z;
    d[i] = (q >= lo && q <= hi) ? g[i] : T(0);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void qdq_f32(const float* x, float* y, int64_t n,
                                                                          float s, float inv, float z, float lo,
                                                                          float hi) {
  qdq_loop(x, y, n, s, inv, z, lo, hi);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void ste_f32(const float* x, const float* g, float* d,
                                                                          int64_t n, float inv, float z, float lo,
                                                                          float hi) {
  ste_loop(x, g, d, n, inv, z, lo, hi);
}

/// LSQ's backward over one run of one channel (v = x/s + z, q = round(v)):
/// d = g where q is inside [lo, hi] (when d is given), and the run's sums of
/// g * ((q - z) - x/s inside, lo - z below, hi - z above) and of g over the
/// clamped elements. Chunks of kChunk elements: one elementwise pass into
/// scratch (which the compiler vectorizes), then kLanes fixed partial sums in
/// T, added into double per chunk. The order depends on n alone.
template <class T, bool kDx>
[[gnu::always_inline]] inline void lsq_back_loop(const T* __restrict x, const T* __restrict g, T* __restrict d,
                                                 int64_t n, T inv, T z, T lo, T hi, double& sum_s,
                                                 double& sum_clamped) {
  constexpr int kLanes = 16, kChunk = 256;
  alignas(64) T ts[kChunk], tc[kChunk];
  double as[kLanes] = {}, ac[kLanes] = {};
  for (int64_t i = 0; i < n; i += kChunk) {
    const int m = static_cast<int>(std::min<int64_t>(kChunk, n - i));
    const T* xk = x + i;
    const T* gk = g + i;
    for (int j = 0; j < m; ++j) {
      const T xs = xk[j] * inv;
      const T q = std::nearbyint(xs) + z;
      const bool below = q < lo, above = q > hi;
      const T gi = gk[j];
      if constexpr (kDx) d[i + j] = (below || above) ? T(0) : gi;
      const T gs = below ? lo - z : (above ? hi - z : (q - z) - xs);
      ts[j] = gi * gs;
      tc[j] = (below || above) ? gi : T(0);
    }
    for (int j = m; j < kChunk; ++j) ts[j] = tc[j] = T(0);
    T fs[kLanes] = {}, fc[kLanes] = {};
    for (int k = 0; k < kChunk; k += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        fs[j] += ts[k + j];
        fc[j] += tc[k + j];
      }
    for (int j = 0; j < kLanes; ++j) {
      as[j] += static_cast<double>(fs[j]);
      ac[j] += static_cast<double>(fc[j]);
    }
  }
  double s = 0, c = 0;
  for (int j = 0; j < kLanes; ++j) {
    s += as[j];
    c += ac[j];
  }
  sum_s = s;
  sum_clamped = c;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void lsq_back_f32(const float* __restrict x,
                                                                               const float* __restrict g,
                                                                               float* __restrict d, int64_t n, float inv,
                                                                               float z, float lo, float hi,
                                                                               double* sum_s, double* sum_clamped) {
  if (d) {
    lsq_back_loop<float, true>(x, g, d, n, inv, z, lo, hi, *sum_s, *sum_clamped);
  } else {
    lsq_back_loop<float, false>(x, g, d, n, inv, z, lo, hi, *sum_s, *sum_clamped);
  }
}

/// y = (clamp(round(x * (1/s_c)) + z_c, qmin, qmax) - z_c) * s_c in one pass,
/// with s_c = scale_of(c) and z_c = zp_of(c) (as doubles).
template <class ScaleOf, class ZpOf>
Tensor quant_dequant(const Tensor& xv, const ChannelView& v, int64_t qmin, int64_t qmax, ScaleOf scale_of,
                     ZpOf zp_of, const char* what) {
  Tensor y = Tensor::empty(xv.shape(), xv.dtype());
  detail::with_float(xv, what, [&](auto tag) {
    using T = decltype(tag);
    const T* px = xv.data<T>();
    T* py = y.data<T>();
    for_channel_blocks(v, [&](int64_t c, int64_t b, int64_t e, int64_t) {
      const T s = static_cast<T>(scale_of(c)), inv = T(1) / s, z = static_cast<T>(zp_of(c));
      const T lo = static_cast<T>(qmin), hi = static_cast<T>(qmax);
      if constexpr (std::is_same_v<T, float>) {
        qdq_f32(px + b, py + b, e - b, s, inv, z, lo, hi);
      } else {
        qdq_loop(px + b, py + b, e - b, s, inv, z, lo, hi);
      }
    });
  });
  return y;
}

}  // namespace

Variable fake_quantize(const Variable& x, const Tensor& scale, const Tensor& zero_point, int64_t qmin, int64_t qmax,
                       int axis) {
  const char* what = "fake_quantize";
  const Tensor& xv = x.value();
  detail::common_float_dtype({&xv}, what);
  check_range(qmin, qmax, what);
  QF_CHECK_DTYPE(scale.dtype() == DType::f32 && zero_point.dtype() == DType::i32)
      << what << ": scale must be f32 and zero_point i32, got " << scale.desc() << " and " << zero_point.desc();
  QF_CHECK_SHAPE(scale.ndim() <= 1 && scale.numel() == zero_point.numel() && scale.numel() >= 1)
      << what << ": scale and zero_point must be 1-D of equal size, got " << scale.desc() << " and "
      << zero_point.desc();
  const ChannelView v = channel_view(xv, axis, scale.numel(), what);
  const float* ps = scale.data<float>();
  const int32_t* pz = zero_point.data<int32_t>();
  for (int64_t c = 0; c < v.C; ++c)
    QF_CHECK(std::isfinite(ps[c]) && ps[c] > 0) << what << ": scale[" << c << "] is " << ps[c] << "; need > 0";
  for (int64_t c = 0; c < v.C; ++c)
    QF_CHECK(pz[c] >= qmin && pz[c] <= qmax)
        << what << ": zero_point[" << c << "] = " << pz[c] << " is outside [" << qmin << ", " << qmax << "]";

  Tensor y = quant_dequant(
      xv, v, qmin, qmax, [ps](int64_t c) { return static_cast<double>(ps[c]); },
      [pz](int64_t c) { return static_cast<double>(pz[c]); }, what);
  if (!any_requires_grad({&x})) return Variable(y);
  // STE with the clipping mask: the gradient passes where the rounded value
  // lies inside [qmin, qmax] and is 0 elsewhere.
  // Copies (C values): the caller may overwrite its qparam buffers before
  // this graph's backward runs.
  Tensor sc = scale.clone(), zp = zero_point.clone();
  return Variable::make(y, {&x}, what, [xv, sc, zp, v, qmin, qmax](const Tensor& g, GradSink& out) {
    Tensor dx = Tensor::empty(g.shape(), g.dtype());
    detail::with_float(g, "fake_quantize backward", [&](auto tag) {
      using T = decltype(tag);
      const T* px = xv.data<T>();
      const T* pg = g.data<T>();
      T* pd = dx.data<T>();
      const float* ps = sc.data<float>();
      const int32_t* pz = zp.data<int32_t>();
      for_channel_blocks(v, [&](int64_t c, int64_t b, int64_t e, int64_t) {
        const T inv = T(1) / static_cast<T>(ps[c]), z = static_cast<T>(pz[c]);
        const T lo = static_cast<T>(qmin), hi = static_cast<T>(qmax);
        if constexpr (std::is_same_v<T, float>) {
          ste_f32(px + b, pg + b, pd + b, e - b, inv, z, lo, hi);
        } else {
          ste_loop(px + b, pg + b, pd + b, e - b, inv, z, lo, hi);
        }
      });
    });
    out.add(0, dx);
  });
}

namespace detail {

namespace {
void check_params(const FakeQuantParams& p, const char* what) {
  check_range(p.qmin, p.qmax, what);
  QF_CHECK(std::isfinite(p.scale) && p.scale > 0) << what << ": scale is " << p.scale << "; need > 0";
  QF_CHECK(p.zero_point >= p.qmin && p.zero_point <= p.qmax)
      << what << ": zero_point = " << p.zero_point << " is outside [" << p.qmin << ", " << p.qmax << "]";
}

// ste_loop's test at the top, q = nearbyint(x * inv) + z <= qmax, is monotone
// in x, so the last passing value is found by bisection over the ordered bit
// patterns of the non-negative values (0 passes since z <= qmax; +inf fails).
template <class T, class Bits>
double upper_bound_bits(const FakeQuantParams& p) {
  const T inv = T(1) / static_cast<T>(p.scale), z = static_cast<T>(p.zero_point), hi = static_cast<T>(p.qmax);
  auto passes = [&](Bits b) {
    T x;
    std::memcpy(&x, &b, sizeof x);
    return std::nearbyint(x * inv) + z <= hi;
  };
  const T inf = std::numeric_limits<T>::infinity();
  Bits lo = 0, up;
  std::memcpy(&up, &inf, sizeof up);
  while (up - lo > 1) {
    const Bits mid = lo + (up - lo) / 2;
    (passes(mid) ? lo : up) = mid;
  }
  T x;
  std::memcpy(&x, &lo, sizeof x);
  return static_cast<double>(x);
}
}  // namespace

Tensor fake_quantize_values(const Tensor& x, const FakeQuantParams& p) {
  const char* what = "fake_quantize";
  check_params(p, what);
  detail::common_float_dtype({&x}, what);
  const ChannelView v = channel_view(x, -1, 1, what);
  return quant_dequant(
      x, v, p.qmin, p.qmax, [&p](int64_t) { return static_cast<double>(p.scale); },
      [&p](int64_t) { return static_cast<double>(p.zero_point); }, what);
}

double ste_upper_bound(DType dt, const FakeQuantParams& p) {
  check_params(p, "ste_upper_bound");
  QF_CHECK_DTYPE(dt == DType::f32 || dt == DType::f64) << "ste_upper_bound: f32 or f64, got " << dtype_name(dt);
  return dt == DType::f32 ? upper_bound_bits<float, uint32_t>(p) : upper_bound_bits<double, uint64_t>(p);
}

double ste_lower_bound(DType dt, const FakeQuantParams& p) {
  check_params(p, "ste_lower_bound");
  QF_CHECK_DTYPE(dt == DType::f32 || dt == DType::f64) << "ste_lower_bound: f32 or f64, got " << dtype_name(dt);
  // For x <= 0, x * inv = -((-x) * inv) and round half to even is odd, so
  // round(x * inv) + z >= qmin is round((-x) * inv) <= z - qmin: the upper
  // bound of the mirrored range (zero point 0, top z - qmin), negated.
  FakeQuantParams m = p;
  m.zero_point = 0;
  m.qmin = 0;
  m.qmax = p.zero_point - p.qmin;
  return -(dt == DType::f32 ? upper_bound_bits<float, uint32_t>(m) : upper_bound_bits<double, uint64_t>(m));
}

}  // namespace detail

Variable lsq_fake_quantize(const Variable& x, const Variable& scale, const Variable& zero_point, int64_t qmin,
                           int64_t qmax, int axis, double grad_scale) {
  const char* what = "lsq_fake_quantize";
  const Tensor& xv = x.value();
  const DType dt = detail::common_float_dtype(
      {&xv, &scale.value(), zero_point.defined() ? &zero_point.value() : nullptr}, what);
  check_range(qmin, qmax, what);
  QF_CHECK(std::isfinite(grad_scale) && grad_scale > 0) << what << ": grad_scale must be > 0, got " << grad_scale;
  QF_CHECK_SHAPE(scale.ndim() <= 1 && scale.numel() >= 1) << what << ": scale must be 1-D, got "
                                                          << scale.value().desc();
  QF_CHECK_SHAPE(!zero_point.defined() || zero_point.numel() == scale.numel())
      << what << ": zero_point " << zero_point.value().desc() << " does not match scale " << scale.value().desc();
  const ChannelView v = channel_view(xv, axis, scale.numel(), what);
  (void)dt;

  // Effective per-channel step (kept >= eps, so that a step pushed through 0
  // by the optimizer cannot divide by zero) and rounded, clamped offset.
  const int64_t C = v.C;
  std::vector<double> s_eff(C), z_eff(C);
  std::vector<bool> s_clamped(C);
  constexpr double kEps = 1.1920928955078125e-07;
  for (int64_t c = 0; c < C; ++c) {
    const double s = scale.value().item(c);
    QF_CHECK(std::isfinite(s)) << what << ": scale[" << c << "] is " << s;
    s_clamped[c] = s < kEps;
    s_eff[c] = s_clamped[c] ? kEps : s;
    const double z = zero_point.defined() ? zero_point.value().item(c) : 0.0;
    QF_CHECK(std::isfinite(z)) << what << ": zero_point[" << c << "] is " << z;
    z_eff[c] = std::fmin(std::fmax(std::nearbyint(z), static_cast<double>(qmin)), static_cast<double>(qmax));
  }

  Tensor y = quant_dequant(
      xv, v, qmin, qmax, [&](int64_t c) { return s_eff[c]; }, [&](int64_t c) { return z_eff[c]; }, what);
  if (!any_requires_grad({&x, &scale, &zero_point})) return Variable(y);

  // Gradients (Esser et al. 2020; LSQ+ for the offset), with v = x/s + z and
  // q = round(v):
  //   dx = g inside [qmin, qmax], 0 outside;
  //   ds = g * ((q - z) - x/s) inside, g * (qmin - z) below, g * (qmax - z) above;
  //   dz = 0 inside, -g * s outside;
  // ds and dz are scaled by grad_scale.
  const Shape sshape = scale.shape(), zshape = zero_point.defined() ? zero_point.shape() : scale.shape();
  return Variable::make(
      y, {&x, &scale, &zero_point}, what,
      [xv, v, s_eff, z_eff, s_clamped, qmin, qmax, grad_scale, sshape, zshape](const Tensor& g, GradSink& out) {
        const bool need_x = out.needs(0), need_s = out.needs(1), need_z = out.needs(2);
        Tensor dx = need_x ? Tensor::empty(g.shape(), g.dtype()) : Tensor();
        const BlockSplit bs = block_split(v);
        std::vector<double> ds(bs.count, 0.0), dz(bs.count, 0.0);
        detail::with_float(g, "lsq_fake_quantize backward", [&](auto tag) {
          using T = decltype(tag);
          const T* px = xv.data<T>();
          const T* pg = g.data<T>();
          T* pd = need_x ? dx.data<T>() : nullptr;
          for_channel_blocks(v, [&](int64_t c, int64_t b, int64_t e, int64_t block) {
            const T s = static_cast<T>(s_eff[c]), inv = T(1) / s, z = static_cast<T>(z_eff[c]);
            const T lo = static_cast<T>(qmin), hi = static_cast<T>(qmax);
            double acc_s = 0, acc_clamped = 0;
            if constexpr (std::is_same_v<T, float>) {
              lsq_back_f32(px + b, pg + b, pd ? pd + b : nullptr, e - b, inv, z, lo, hi, &acc_s, &acc_clamped);
            } else if (pd) {
              lsq_back_loop<T, true>(px + b, pg + b, pd + b, e - b, inv, z, lo, hi, acc_s, acc_clamped);
            } else {
              lsq_back_loop<T, false>(px + b, pg + b, nullptr, e - b, inv, z, lo, hi, acc_s, acc_clamped);
            }
            // One slot per block, summed in block order below: deterministic.
            ds[block] = acc_s;
            dz[block] = -acc_clamped * static_cast<double>(s);
          });
        });
        if (need_x) out.add(0, dx);
        if (need_s || need_z) {
          Tensor gs = Tensor::zeros(sshape, g.dtype()), gz = Tensor::zeros(zshape, g.dtype());
          std::vector<double> sum_s(v.C, 0.0), sum_z(v.C, 0.0);
          for (int64_t k = 0; k < bs.count; ++k) {
            const int64_t c = (k / bs.per_run) % v.C;
            sum_s[c] += ds[k];
            sum_z[c] += dz[k];
          }
          detail::with_float(g, "lsq_fake_quantize backward", [&](auto tag) {
            using T = decltype(tag);
            for (int64_t c = 0; c < v.C; ++c) {
              // A step held at eps does not move through the clamp.
              gs.data<T>()[c] = s_clamped[c] ? T(0) : static_cast<T>(sum_s[c] * grad_scale);
              gz.data<T>()[c] = static_cast<T>(sum_z[c] * grad_scale);
            }
          });
          if (need_s) out.add(1, gs);
          if (need_z) out.add(2, gz);
        }
      });
}

}  // namespace qforge::autograd
