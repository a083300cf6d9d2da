#pragma once
// Tensor-level (non-differentiable) helpers shared by the op families. Every
// function returns a new tensor; inputs must share a floating dtype.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/tensor.h"

namespace qforge::autograd::detail {

enum class BinOp { kAdd, kSub, kMul, kDiv };

/// Elementwise a (op) b with NumPy broadcasting.
Tensor binary(const Tensor& a, const Tensor& b, BinOp op);
/// a * s.
Tensor scaled(const Tensor& a, double s);
/// Checks that all defined tensors share a floating dtype; returns it.
DType common_float_dtype(std::initializer_list<const Tensor*> ts, const char* what);

/// Calls fn(T{}) for the float dtype of `t` (f32 or f64).
template <class Fn>
decltype(auto) with_float(const Tensor& t, const char* what, Fn&& fn) {
  return dispatch_floating(t.dtype(), what, std::forward<Fn>(fn));
}

/// o[i] = max(value(i), 0) for i < n (NaN gives 0, as relu()), widening
/// [lo, hi] to cover the outputs (start from lo = +inf, hi = -inf). The
/// outputs are >= 0, and non-negative floats order like their bit patterns,
/// so the range is an integer min/max reduction, which the compiler
/// vectorizes (a float one it does not, or scalarizes).
template <class T, class Value>
[[gnu::always_inline]] inline void relu_store_range(int64_t n, Value value, T* o, T& lo, T& hi) {
  using Bits = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  Bits l = lo >= T(0) ? std::bit_cast<Bits>(lo) : std::numeric_limits<Bits>::max();
  Bits h = hi >= T(0) ? std::bit_cast<Bits>(hi) : 0;
  for (int64_t i = 0; i < n; ++i) {
    T v = value(i);
    v = v > T(0) ? v : T(0);
    o[i] = v;
    const Bits bits = std::bit_cast<Bits>(v);
    l = std::min(l, bits);
    h = std::max(h, bits);
  }
  lo = std::bit_cast<T>(l);
  hi = std::bit_cast<T>(h);
}

}  // namespace qforge::autograd::detail
