#pragma once
// Element types of qforge tensors.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "core/error.h"

namespace qforge {

/// f32 for training, f64 for gradient checks, i8/u8/i32 for the int8 runtime.
enum class DType : uint8_t { f32 = 0, f64 = 1, i8 = 2, u8 = 3, i32 = 4 };

/// Bytes per element.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i8: return 1;
    case DType::u8: return 1;
    case DType::i32: return 4;
  }
  return 0;
}

/// Short lowercase name ("f32", "i8", ...).
const char* dtype_name(DType t);

/// True for f32 and f64.
constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f64; }

/// The DType of a C++ element type.
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, int8_t>) return DType::i8;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::u8;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::i32;
  else static_assert(sizeof(T) == 0, "unsupported element type");
}

/// Calls fn(T{}) with T = float or double according to `t`; throws DTypeError
/// for the integer dtypes. `what` names the operation in the message.
template <class Fn>
decltype(auto) dispatch_floating(DType t, const char* what, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    default: break;
  }
  QF_THROW(DTypeError) << what << ": expected a floating dtype (f32 or f64), got " << dtype_name(t);
  return fn(float{});  // unreachable
}

/// Calls fn(T{}) for any dtype.
template <class Fn>
decltype(auto) dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::i8: return fn(int8_t{});
    case DType::u8: return fn(uint8_t{});
    case DType::i32: return fn(int32_t{});
  }
  return fn(float{});
}

}  // namespace qforge
