// Arithmetic with NumPy broadcasting: add, sub, mul, div, scale, neg.
#include <algorithm>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace detail {

DType common_float_dtype(std::initializer_list<const Tensor*> ts, const char* what) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      QF_CHECK_DTYPE(is_floating(t->dtype())) << what << ": expected f32 or f64, got " << t->desc();
    } else {
      QF_CHECK_DTYPE(t->dtype() == first->dtype())
          << what << ": dtypes differ: " << first->desc() << " and " << t->desc();
    }
  }
  QF_CHECK(first) << what << ": no defined input";
  return first->dtype();
}

namespace {

// Element strides of `s` laid against the broadcast shape `out` (0 on axes
// that broadcast).
std::vector<int64_t> broadcast_strides(const Shape& s, const Shape& out) {
  const size_t D = out.size();
  std::vector<int64_t> st(D, 0);
  int64_t stride = 1;
  for (size_t k = 0; k < s.size(); ++k) {
    const size_t i = s.size() - 1 - k;
    const size_t o = D - 1 - k;
    st[o] = s[i] == 1 ? 0 : stride;
    stride *= s[i];
  }
  return st;
}

/// out[i] = a[i * ia] op b[i * ib] for i < n, with each stride 0 or 1; the
/// op and stride cases are hoisted out of the loop so that it vectorizes.
template <class T, class F>
inline void run_strided(const T* pa, int64_t ia, const T* pb, int64_t ib, T* po, int64_t n, F f) {
  if (ia == 1 && ib == 1) {
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
  } else if (ia == 1 && ib == 0) {
    const T y = pb[0];
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], y);
  } else if (ia == 0 && ib == 1) {
    const T x = pa[0];
    for (int64_t i = 0; i < n; ++i) po[i] = f(x, pb[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i * ia], pb[i * ib]);
  }
}

template <class T>
inline void run_op(BinOp op, const T* pa, int64_t ia, const T* pb, int64_t ib, T* po, int64_t n) {
  switch (op) {
    case BinOp::kAdd: return run_strided(pa, ia, pb, ib, po, n, [](T x, T y) { return x + y; });
    case BinOp::kSub: return run_strided(pa, ia, pb, ib, po, n, [](T x, T y) { return x - y; });
    case BinOp::kMul: return run_strided(pa, ia, pb, ib, po, n, [](T x, T y) { return x * y; });
    case BinOp::kDiv: return run_strided(pa, ia, pb, ib, po, n, [](T x, T y) { return x / y; });
  }
}

template <class T>
void binary_kernel(const Tensor& a, const Tensor& b, Tensor& out, BinOp op) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  const int64_t n = out.numel();
  // Collapse the broadcast to [rows..., inner]: adjacent output axes merge
  // when both inputs step through them as one axis (contiguous, or both
  // broadcast). [N,C,H,W] op [1,C,1,1] becomes [N, C, H*W] with b constant
  // along the inner run.
  const Shape& os = out.shape();
  const auto sa0 = broadcast_strides(a.shape(), os);
  const auto sb0 = broadcast_strides(b.shape(), os);
  std::vector<int64_t> dims, sa, sb;  // innermost first
  for (int d = static_cast<int>(os.size()) - 1; d >= 0; --d) {
    if (os[d] == 1) continue;
    if (!dims.empty() && sa0[d] == sa.back() * dims.back() && sb0[d] == sb.back() * dims.back()) {
      dims.back() *= os[d];
      continue;
    }
    dims.push_back(os[d]);
    sa.push_back(sa0[d]);
    sb.push_back(sb0[d]);
  }
  if (dims.empty()) {  // a single element
    run_op(op, pa, 0, pb, 0, po, 1);
    return;
  }
  const int64_t inner = dims[0], ia = sa[0], ib = sb[0];
  const int64_t rows = n / inner;
  if (rows == 1) {
    parallel_for(0, n, 1 << 15, [&](int64_t s, int64_t e) {
      run_op(op, pa + s * ia, ia, pb + s * ib, ib, po + s, e - s);
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / inner);
  parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t oa = 0, ob = 0, rem = r;
      for (size_t k = 1; k < dims.size(); ++k) {
        const int64_t i = rem % dims[k];
        rem /= dims[k];
        oa += i * sa[k];
        ob += i * sb[k];
      }
      run_op(op, pa + oa, ia, pb + ob, ib, po + r * inner, inner);
    }
  });
}

}  // namespace

Tensor binary(const Tensor& a, const Tensor& b, BinOp op) {
  const DType dt = common_float_dtype({&a, &b}, "elementwise op");
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape()), dt);
  if (out.numel() == 0) return out;
  with_float(out, "elementwise op", [&](auto tag) { binary_kernel<decltype(tag)>(a, b, out, op); });
  return out;
}

Tensor scaled(const Tensor& a, double s) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  with_float(a, "scale", [&](auto tag) {
    using T = decltype(tag);
    out.vec<T>() = a.vec<T>() * static_cast<T>(s);
  });
  return out;
}

}  // namespace detail

using detail::BinOp;

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t D = std::max(a.size(), b.size());
  Shape out(D);
  for (size_t k = 0; k < D; ++k) {
    const int64_t x = k < a.size() ? a[a.size() - 1 - k] : 1;
    const int64_t y = k < b.size() ? b[b.size() - 1 - k] : 1;
    QF_CHECK_SHAPE(x == y || x == 1 || y == 1)
        << "shapes " << shape_str(a) << " and " << shape_str(b) << " do not broadcast";
    out[D - 1 - k] = x == 1 ? y : x;
  }
  return out;
}

Tensor sum_to_shape(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  QF_CHECK_SHAPE(broadcast_shapes(shape, t.shape()) == t.shape())
      << "sum_to_shape: " << shape_str(shape) << " does not broadcast to " << t.shape_str();
  Tensor out = Tensor::zeros(shape, t.dtype());
  detail::with_float(t, "sum_to_shape", [&](auto tag) {
    using T = decltype(tag);
    const T* src = t.data<T>();
    T* dst = out.data<T>();
    if (out.numel() == 1) {
      double acc = 0;
      for (int64_t i = 0; i < t.numel(); ++i) acc += src[i];
      dst[0] = static_cast<T>(acc);
      return;
    }
    const Shape& ts = t.shape();
    const int D = t.ndim();
    // Strides of `out` against t's axes (0 where out broadcasts).
    std::vector<int64_t> so(D, 0);
    int64_t stride = 1;
    for (size_t k = 0; k < shape.size(); ++k) {
      const size_t i = shape.size() - 1 - k;
      so[D - 1 - k] = shape[i] == 1 ? 0 : stride;
      stride *= shape[i];
    }
    std::vector<int64_t> idx(D, 0);
    int64_t off = 0;
    const int64_t inner = ts[D - 1];
    const int64_t si = so[D - 1];
    for (int64_t base = 0; base < t.numel(); base += inner) {
      for (int64_t j = 0; j < inner; ++j) dst[off + j * si] += src[base + j];
      for (int d = D - 2; d >= 0; --d) {
        ++idx[d];
        off += so[d];
        if (idx[d] < ts[d]) break;
        off -= so[d] * ts[d];
        idx[d] = 0;
      }
    }
  });
  return out;
}

Variable add(const Variable& a, const Variable& b) {
  Tensor y = detail::binary(a.value(), b.value(), BinOp::kAdd);
  if (!any_requires_grad({&a, &b})) return Variable(y);
  return Variable::make(y, {&a, &b}, "add",
                        [sa = a.shape(), sb = b.shape()](const Tensor& g, GradSink& out) {
                          if (out.needs(0)) out.add(0, sum_to_shape(g, sa));
                          if (out.needs(1)) out.add(1, sum_to_shape(g, sb));
                        });
}

Variable sub(const Variable& a, const Variable& b) {
  Tensor y = detail::binary(a.value(), b.value(), BinOp::kSub);
  if (!any_requires_grad({&a, &b})) return Variable(y);
  return Variable::make(y, {&a, &b}, "sub",
                        [sa = a.shape(), sb = b.shape()](const Tensor& g, GradSink& out) {
                          if (out.needs(0)) out.add(0, sum_to_shape(g, sa));
                          if (out.needs(1)) out.add(1, detail::scaled(sum_to_shape(g, sb), -1.0));
                        });
}

Variable mul(const Variable& a, const Variable& b) {
  Tensor y = detail::binary(a.value(), b.value(), BinOp::kMul);
  if (!any_requires_grad({&a, &b})) return Variable(y);
  // Each input's gradient needs only the other input's value.
  Tensor av = b.requires_grad() ? a.value() : Tensor();
  Tensor bv = a.requires_grad() ? b.value() : Tensor();
  return Variable::make(y, {&a, &b}, "mul",
                        [av, bv, sa = a.shape(), sb = b.shape()](const Tensor& g, GradSink& out) {
                          if (out.needs(0)) out.add(0, sum_to_shape(detail::binary(g, bv, BinOp::kMul), sa));
                          if (out.needs(1)) out.add(1, sum_to_shape(detail::binary(g, av, BinOp::kMul), sb));
                        });
}

Variable div(const Variable& a, const Variable& b) {
  Tensor y = detail::binary(a.value(), b.value(), BinOp::kDiv);
  if (!any_requires_grad({&a, &b})) return Variable(y);
  Tensor bv = b.value();
  Tensor yv = b.requires_grad() ? y : Tensor();
  return Variable::make(y, {&a, &b}, "div",
                        [bv, yv, sa = a.shape(), sb = b.shape()](const Tensor& g, GradSink& out) {
                          Tensor g_over_b = detail::binary(g, bv, BinOp::kDiv);
                          if (out.needs(0)) out.add(0, sum_to_shape(g_over_b, sa));
                          // d(a/b)/db = -(a/b)/b = -y/b
                          if (out.needs(1))
                            out.add(1, detail::scaled(sum_to_shape(detail::binary(g_over_b, yv, BinOp::kMul), sb),
                                                      -1.0));
                        });
}

Variable scale(const Variable& a, double s) {
  Tensor y = detail::scaled(a.value(), s);
  if (!any_requires_grad({&a})) return Variable(y);
  return Variable::make(y, {&a}, "scale",
                        [s](const Tensor& g, GradSink& out) { out.add(0, detail::scaled(g, s)); });
}

Variable add_scalar(const Variable& a, double s) {
  Tensor y = Tensor::empty(a.shape(), a.dtype());
  detail::with_float(y, "add_scalar", [&](auto tag) {
    using T = decltype(tag);
    y.vec<T>() = a.value().vec<T>() + static_cast<T>(s);
  });
  if (!any_requires_grad({&a})) return Variable(y);
  return Variable::make(y, {&a}, "add_scalar", [](const Tensor& g, GradSink& out) { out.add(0, g); });
}

Variable neg(const Variable& a) { return scale(a, -1.0); }

Variable operator+(const Variable& a, const Variable& b) { return add(a, b); }
Variable operator-(const Variable& a, const Variable& b) { return sub(a, b); }
Variable operator*(const Variable& a, const Variable& b) { return mul(a, b); }
Variable operator/(const Variable& a, const Variable& b) { return div(a, b); }

}  // namespace qforge::autograd
