// Pointwise activations: relu, relu6, leaky_relu, sigmoid, tanh, clamp.
#include <cmath>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace {

constexpr int64_t kGrain = 1 << 15;

// out[i] = f(in[i]) in parallel chunks; T is the element type.
template <class T, class F>
void map1(const T* in, T* out, int64_t n, F f) {
  parallel_for(0, n, kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) out[i] = f(in[i]);
  });
}

// out[i] = f(g[i], saved[i]).
template <class T, class F>
void map2(const T* g, const T* saved, T* out, int64_t n, F f) {
  parallel_for(0, n, kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) out[i] = f(g[i], saved[i]);
  });
}

// Builds a pointwise op: fwd(x) -> y; bwd(g, saved) -> dx, where `saved` is
// y when save_output, else x.
template <class Fwd, class Bwd>
Variable pointwise(const Variable& x, const char* name, bool save_output, Fwd fwd, Bwd bwd) {
  const Tensor& xv = x.value();
  Tensor y = Tensor::empty(xv.shape(), xv.dtype());
  detail::with_float(xv, name, [&](auto tag) {
    using T = decltype(tag);
    map1<T>(xv.data<T>(), y.data<T>(), xv.numel(), [&](T v) { return fwd(v); });
  });
  if (!any_requires_grad({&x})) return Variable(y);
  Tensor saved = save_output ? y : xv;
  return Variable::make(y, {&x}, name, [saved, bwd, name](const Tensor& g, GradSink& out) {
    Tensor dx = Tensor::empty(g.shape(), g.dtype());
    detail::with_float(g, name, [&](auto tag) {
      using T = decltype(tag);
      map2<T>(g.data<T>(), saved.data<T>(), dx.data<T>(), g.numel(), [&](T gi, T si) { return bwd(gi, si); });
    });
    out.add(0, dx);
  });
}

}  // namespace

Variable relu(const Variable& x) {
  return pointwise(
      x, "relu", true, [](auto v) { return v > 0 ? v : decltype(v)(0); },
      [](auto g, auto y) { return y > 0 ? g : decltype(g)(0); });
}

Variable add_relu(const Variable& a, const Variable& b) {
  const Tensor &av = a.value(), &bv = b.value();
  detail::common_float_dtype({&av, &bv}, "add_relu");
  QF_CHECK_SHAPE(av.shape() == bv.shape())
      << "add_relu: shapes differ: " << av.desc() << " and " << bv.desc() << " (no broadcasting)";
  Tensor y = Tensor::empty(av.shape(), av.dtype());
  detail::with_float(av, "add_relu", [&](auto tag) {
    using T = decltype(tag);
    const T *pa = av.data<T>(), *pb = bv.data<T>();
    T* py = y.data<T>();
    parallel_for(0, av.numel(), kGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const T v = pa[i] + pb[i];
        py[i] = v > 0 ? v : T(0);
      }
    });
  });
  if (!any_requires_grad({&a, &b})) return Variable(y);
  return Variable::make(y, {&a, &b}, "add_relu", [y](const Tensor& g, GradSink& out) {
    Tensor d = Tensor::empty(g.shape(), g.dtype());
    detail::with_float(g, "add_relu", [&](auto tag) {
      using T = decltype(tag);
      map2<T>(g.data<T>(), y.data<T>(), d.data<T>(), g.numel(), [](T gi, T yi) { return yi > 0 ? gi : T(0); });
    });
    out.add(0, d);  // one tensor for both: accumulation copies it before writing
    out.add(1, d);
  });
}

Variable relu6(const Variable& x) {
  return pointwise(
      x, "relu6", false, [](auto v) { return std::min(std::max(v, decltype(v)(0)), decltype(v)(6)); },
      [](auto g, auto v) { return (v > 0 && v < 6) ? g : decltype(g)(0); });
}

Variable leaky_relu(const Variable& x, double slope) {
  return pointwise(
      x, "leaky_relu", false, [slope](auto v) { return v > 0 ? v : static_cast<decltype(v)>(v * slope); },
      [slope](auto g, auto v) { return v > 0 ? g : static_cast<decltype(g)>(g * slope); });
}

Variable sigmoid(const Variable& x) {
  return pointwise(
      x, "sigmoid", true,
      [](auto v) {
        using T = decltype(v);
        return v >= 0 ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v));
      },
      [](auto g, auto y) { return g * y * (decltype(y)(1) - y); });
}

Variable tanh(const Variable& x) {
  return pointwise(
      x, "tanh", true, [](auto v) { return std::tanh(v); },
      [](auto g, auto y) { return g * (decltype(y)(1) - y * y); });
}

Variable clamp(const Variable& x, double lo, double hi) {
  QF_CHECK(lo <= hi) << "clamp: lo " << lo << " > hi " << hi;
  return pointwise(
      x, "clamp", false,
      [lo, hi](auto v) {
        using T = decltype(v);
        return std::min(std::max(v, static_cast<T>(lo)), static_cast<T>(hi));
      },
      [lo, hi](auto g, auto v) {
        using T = decltype(g);
        return (v > static_cast<T>(lo) && v < static_cast<T>(hi)) ? g : T(0);
      });
}

}  // namespace qforge::autograd
