// Pointwise activations: relu, relu6, leaky_relu, sigmoid, tanh, clamp.
#include <cmath>
#include <type_traits>
#include <cstring>
#include <vector>
#include <limits>
#include <algorithm>

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

// y = max(a + b, 0) and its range (detail::relu_store_range).
template <class T>
[[gnu::always_inline]] inline void add_relu_range(const T* a, const T* b, int64_t n, T* y, T& lo, T& hi) {
  lo = std::numeric_limits<T>::infinity();
  hi = -lo;
  detail::relu_store_range(n, [a, b](int64_t i) { return a[i] + b[i]; }, y, lo, hi);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void add_relu_range_f32(const float* a, const float* b,
                                                                                     int64_t n, float* y, float& lo,
                                                                                     float& hi) {
  add_relu_range(a, b, n, y, lo, hi);
}

}  // namespace

Variable relu(const Variable& x) {
  return pointwise(
      x, "relu", true, [](auto v) { return v > 0 ? v : decltype(v)(0); },
      [](auto g, auto y) { return y > 0 ? g : decltype(g)(0); });
}

Variable add_relu(const Variable& a, const Variable& b, const FakeQuantHook& fake_quant) {
  const Tensor &av = a.value(), &bv = b.value();
  const DType dt = detail::common_float_dtype({&av, &bv}, "add_relu");
  QF_CHECK_SHAPE(av.shape() == bv.shape())
      << "add_relu: shapes differ: " << av.desc() << " and " << bv.desc() << " (no broadcasting)";
  const bool fq = static_cast<bool>(fake_quant);
  Tensor y = Tensor::empty(av.shape(), av.dtype());
  // Range of the output per fixed chunk, for the fake quant's hook (min and
  // max are exact, so the split does not matter).
  const int64_t n = av.numel(), chunks = fq ? std::max<int64_t>(1, (n + kGrain - 1) / kGrain) : 0;
  std::vector<double> lo(chunks, std::numeric_limits<double>::infinity()), hi(chunks, 0.0);
  detail::with_float(av, "add_relu", [&](auto tag) {
    using T = decltype(tag);
    const T *pa = av.data<T>(), *pb = bv.data<T>();
    T* py = y.data<T>();
    if (!fq) {
      parallel_for(0, n, kGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) {
          const T v = pa[i] + pb[i];
          py[i] = v > 0 ? v : T(0);
        }
      });
      return;
    }
    parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        T l, h;
        const int64_t b0 = c * kGrain;
        if constexpr (std::is_same_v<T, float>)
          add_relu_range_f32(pa + b0, pb + b0, std::min(kGrain, n - b0), py + b0, l, h);
        else
          add_relu_range(pa + b0, pb + b0, std::min(kGrain, n - b0), py + b0, l, h);
        lo[c] = l;
        hi[c] = h;
      }
    });
  });
  Tensor out_v = y;
  double ymax = std::numeric_limits<double>::infinity();
  if (fq) {
    const double inf = std::numeric_limits<double>::infinity();
    const FakeQuantParams p = n > 0 ? fake_quant(*std::min_element(lo.begin(), lo.end()),
                                                 *std::max_element(hi.begin(), hi.end()))
                                    : fake_quant(inf, -inf);  // no values
    out_v = detail::fake_quantize_values(y, p);
    ymax = detail::ste_upper_bound(dt, p);
  }
  if (!any_requires_grad({&a, &b})) return Variable(out_v);
  return Variable::make(out_v, {&a, &b}, fq ? "add_relu_fake_quant" : "add_relu", [y, ymax](const Tensor& g, GradSink& out) {
    Tensor d = Tensor::empty(g.shape(), g.dtype());
    detail::with_float(g, "add_relu", [&](auto tag) {
      using T = decltype(tag);
      const T top = static_cast<T>(ymax);  // a T value or +inf
      map2<T>(g.data<T>(), y.data<T>(), d.data<T>(), g.numel(),
              [top](T gi, T yi) { return (yi > 0) & (yi <= top) ? gi : T(0); });
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
