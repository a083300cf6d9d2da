// softmax, log_softmax and cross-entropy.
#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace {

struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};

AxisView axis_view(const Shape& s, int axis, const char* what) {
  const int ax = normalize_axis(axis, static_cast<int>(s.size()), what);
  AxisView v;
  for (int i = 0; i < ax; ++i) v.outer *= s[i];
  v.n = s[ax];
  for (size_t i = ax + 1; i < s.size(); ++i) v.inner *= s[i];
  return v;
}

// y = softmax or log_softmax of x along the axis.
template <class T>
void softmax_kernel(const T* x, T* y, const AxisView& v, bool log) {
  parallel_for(0, v.outer, 16, [&](int64_t s, int64_t e) {
    for (int64_t o = s; o < e; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        const T* xr = x + o * v.n * v.inner + i;
        T* yr = y + o * v.n * v.inner + i;
        T mx = -INFINITY;
        for (int64_t k = 0; k < v.n; ++k) mx = std::max(mx, xr[k * v.inner]);
        T sum = 0;
        for (int64_t k = 0; k < v.n; ++k) sum += std::exp(xr[k * v.inner] - mx);
        if (log) {
          const T lse = mx + std::log(sum);
          for (int64_t k = 0; k < v.n; ++k) yr[k * v.inner] = xr[k * v.inner] - lse;
        } else {
          for (int64_t k = 0; k < v.n; ++k) yr[k * v.inner] = std::exp(xr[k * v.inner] - mx) / sum;
        }
      }
  });
}

Variable softmax_impl(const Variable& x, int axis, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  const Tensor& xv = x.value();
  detail::common_float_dtype({&xv}, name);
  const AxisView v = axis_view(xv.shape(), axis, name);
  Tensor y = Tensor::empty(xv.shape(), xv.dtype());
  detail::with_float(xv, name, [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T>(xv.data<T>(), y.data<T>(), v, log);
  });
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, name, [y, v, log](const Tensor& g, GradSink& out) {
    Tensor dx = Tensor::empty(g.shape(), g.dtype());
    detail::with_float(g, "softmax backward", [&](auto tag) {
      using T = decltype(tag);
      const T* pg = g.data<T>();
      const T* py = y.data<T>();
      T* pd = dx.data<T>();
      for (int64_t o = 0; o < v.outer; ++o)
        for (int64_t i = 0; i < v.inner; ++i) {
          const int64_t base = o * v.n * v.inner + i;
          T acc = 0;
          if (log) {  // dx = g - softmax * sum(g)
            for (int64_t k = 0; k < v.n; ++k) acc += pg[base + k * v.inner];
            for (int64_t k = 0; k < v.n; ++k) {
              const int64_t j = base + k * v.inner;
              pd[j] = pg[j] - std::exp(py[j]) * acc;
            }
          } else {  // dx = y * (g - sum(g * y))
            for (int64_t k = 0; k < v.n; ++k) acc += pg[base + k * v.inner] * py[base + k * v.inner];
            for (int64_t k = 0; k < v.n; ++k) {
              const int64_t j = base + k * v.inner;
              pd[j] = py[j] * (pg[j] - acc);
            }
          }
        }
    });
    out.add(0, dx);
  });
}

}  // namespace

Variable softmax(const Variable& x, int axis) { return softmax_impl(x, axis, false); }
Variable log_softmax(const Variable& x, int axis) { return softmax_impl(x, axis, true); }

Variable cross_entropy(const Variable& logits, const Tensor& targets, double label_smoothing) {
  const Tensor& xv = logits.value();
  detail::common_float_dtype({&xv}, "cross_entropy");
  QF_CHECK_SHAPE(xv.ndim() == 2) << "cross_entropy: logits must be [N, C], got " << xv.desc();
  QF_CHECK_DTYPE(targets.defined() && targets.dtype() == DType::i32)
      << "cross_entropy: targets must be i32 class indices, got " << targets.desc();
  const int64_t N = xv.size(0), C = xv.size(1);
  QF_CHECK_SHAPE(targets.ndim() == 1 && targets.size(0) == N)
      << "cross_entropy: targets " << targets.desc() << " do not match logits " << xv.desc();
  QF_CHECK_SHAPE(N >= 1 && C >= 1) << "cross_entropy: empty logits " << xv.desc();
  QF_CHECK(label_smoothing >= 0 && label_smoothing < 1)
      << "cross_entropy: label_smoothing must be in [0, 1), got " << label_smoothing;
  const double eps = label_smoothing;
  const int32_t* pt = targets.data<int32_t>();
  for (int64_t i = 0; i < N; ++i)
    QF_CHECK_INDEX(pt[i] >= 0 && pt[i] < C)
        << "cross_entropy: target " << pt[i] << " at row " << i << " is not a class index in [0, " << C << ")";
  Tensor logp = Tensor::empty(xv.shape(), xv.dtype());
  Tensor loss = Tensor::empty({}, xv.dtype());
  detail::with_float(xv, "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T>(xv.data<T>(), logp.data<T>(), AxisView{N, C, 1}, true);
    const T* lp = logp.data<T>();
    double acc = 0;
    for (int64_t i = 0; i < N; ++i) {
      double row = 0;
      if (eps > 0)
        for (int64_t c = 0; c < C; ++c) row += lp[i * C + c];
      acc -= (1 - eps) * lp[i * C + pt[i]] + eps / static_cast<double>(C) * row;
    }
    loss.data<T>()[0] = static_cast<T>(acc / static_cast<double>(N));
  });
  if (!any_requires_grad({&logits})) return Variable(loss);
  return Variable::make(loss, {&logits}, "cross_entropy", [logp, targets = targets.clone(), N, C, eps](const Tensor& g, GradSink& out) {
    Tensor dx = Tensor::empty(logp.shape(), logp.dtype());
    detail::with_float(logp, "cross_entropy backward", [&](auto tag) {
      using T = decltype(tag);
      const T s = g.data<T>()[0] / static_cast<T>(N);
      const T* lp = logp.data<T>();
      const int32_t* pt = targets.data<int32_t>();
      T* pd = dx.data<T>();
      // d/dx of -sum_c q_c log p_c is p - q, with q = (1 - eps)·onehot + eps/C.
      const T on = static_cast<T>(1 - eps) * s, every = static_cast<T>(eps / static_cast<double>(C)) * s;
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t c = 0; c < C; ++c) pd[i * C + c] = std::exp(lp[i * C + c]) * s - every;
        pd[i * C + pt[i]] -= on;
      }
    });
    out.add(0, dx);
  });
}

Variable distillation_kl(const Variable& logits, const Tensor& teacher_logits, double temperature) {
  const Tensor& xv = logits.value();
  detail::common_float_dtype({&xv}, "distillation_kl");
  QF_CHECK_SHAPE(xv.ndim() == 2 && xv.size(0) >= 1 && xv.size(1) >= 1)
      << "distillation_kl: logits must be [N, C], got " << xv.desc();
  QF_CHECK_SHAPE(teacher_logits.defined() && teacher_logits.shape() == xv.shape())
      << "distillation_kl: teacher logits " << teacher_logits.desc() << " do not match the logits " << xv.desc();
  QF_CHECK(std::isfinite(temperature) && temperature >= 1e-6)
      << "distillation_kl: temperature must be finite and >= 1e-6, got " << temperature;
  const int64_t N = xv.size(0), C = xv.size(1);
  const Tensor t = teacher_logits.to(xv.dtype());
  // log p_s and log p_t of the logits divided by the temperature.
  Tensor logp = Tensor::empty(xv.shape(), xv.dtype()), logq = Tensor::empty(xv.shape(), xv.dtype());
  Tensor loss = Tensor::empty({}, xv.dtype());
  detail::with_float(xv, "distillation_kl", [&](auto tag) {
    using T = decltype(tag);
    const T inv = static_cast<T>(1 / temperature);
    const T* px = xv.data<T>();
    const T* pt = t.data<T>();
    T* lp = logp.data<T>();
    T* lq = logq.data<T>();
    for (int64_t i = 0; i < N * C; ++i) {
      QF_CHECK(std::isfinite(pt[i])) << "distillation_kl: teacher logit " << i << " is " << pt[i];
      lp[i] = px[i] * inv;
      lq[i] = pt[i] * inv;
    }
    softmax_kernel<T>(lp, lp, AxisView{N, C, 1}, true);
    softmax_kernel<T>(lq, lq, AxisView{N, C, 1}, true);
    double acc = 0;
    for (int64_t i = 0; i < N * C; ++i) acc += std::exp(static_cast<double>(lq[i])) * (lq[i] - lp[i]);
    loss.data<T>()[0] = static_cast<T>(acc * temperature * temperature / static_cast<double>(N));
  });
  if (!any_requires_grad({&logits})) return Variable(loss);
  return Variable::make(loss, {&logits}, "distillation_kl", [logp, logq, N, temperature](const Tensor& g, GradSink& out) {
    Tensor dx = Tensor::empty(logp.shape(), logp.dtype());
    detail::with_float(logp, "distillation_kl backward", [&](auto tag) {
      using T = decltype(tag);
      // d/dx of T^2 KL(q || softmax(x / T)) is T (p - q).
      const T s = g.data<T>()[0] * static_cast<T>(temperature / static_cast<double>(N));
      const T* lp = logp.data<T>();
      const T* lq = logq.data<T>();
      T* pd = dx.data<T>();
      for (int64_t i = 0; i < logp.numel(); ++i) pd[i] = (std::exp(lp[i]) - std::exp(lq[i])) * s;
    });
    out.add(0, dx);
  });
}

}  // namespace qforge::autograd
