#pragma once
// Tensor-level (non-differentiable) helpers shared by the op families. Every
// function returns a new tensor; inputs must share a floating dtype.

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

}  // namespace qforge::autograd::detail
