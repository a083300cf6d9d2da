#pragma once
// qforge::Tensor: a dense, contiguous, row-major n-d array with shared storage.

#include <Eigen/Core>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace qforge {

/// Sizes of a tensor, outermost first.
using Shape = std::vector<int64_t>;

/// "[2, 3, 4]".
std::string shape_str(const Shape& s);
/// Product of the sizes (1 for a 0-d shape).
int64_t shape_numel(const Shape& s);

/// A 64-byte aligned buffer. Large buffers are recycled by a size-keyed cache
/// so that a training step does not mmap and page-fault its activations anew.
class Storage {
 public:
  explicit Storage(size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Bytes currently parked in the allocation cache (for tests and diagnostics).
size_t allocator_cached_bytes();
/// Returns every cached block to the system.
void allocator_release_cache();

/// A contiguous row-major tensor. Copies share storage (like a shared_ptr);
/// reshape() returns a view of the same storage; clone() deep-copies.
class Tensor {
 public:
  /// An undefined tensor (defined() is false).
  Tensor() = default;

  /// Uninitialized tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  /// A 0-d tensor holding one value.
  static Tensor scalar(double value, DType dtype = DType::f32);
  /// Copies `values` (numel must match) into a new tensor of dtype_of<T>().
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  /// 0, 1, ..., n-1 as f32 (or another dtype).
  static Tensor arange(int64_t n, DType dtype = DType::f32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  /// Size along `axis`; negative axes count from the end.
  int64_t size(int axis) const;
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  std::string shape_str() const { return qforge::shape_str(shape_); }
  /// "f32[2, 3]".
  std::string desc() const;

  /// Typed pointer to the first element; throws DTypeError on a mismatch.
  template <class T>
  T* data() {
    check_dtype(dtype_of<T>());
    return reinterpret_cast<T*>(raw());
  }
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return reinterpret_cast<const T*>(raw());
  }
  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }

  /// A view with a new shape (one size may be -1). Shares storage.
  Tensor reshape(const Shape& shape) const;
  /// A deep copy.
  Tensor clone() const;
  /// A converted copy, or *this (sharing storage) when the dtype already
  /// matches.
  Tensor to(DType dtype) const;
  /// Copies `src` (same numel and dtype) into this tensor's storage.
  void copy_from(const Tensor& src);
  void fill_(double value);
  void zero_();
  /// True when both tensors view the same storage.
  bool shares_storage(const Tensor& other) const { return storage_ == other.storage_; }
  /// True when no other tensor shares this storage (safe to write in place).
  bool is_unique() const { return storage_ && storage_.use_count() == 1; }

  /// Element i of the flattened tensor, converted to double (slow; for tests).
  double item(int64_t i = 0) const;
  /// Values as doubles (slow; for tests and messages).
  std::vector<double> to_vector() const;

  /// Eigen views of the flattened data.
  template <class T>
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Unaligned> vec() {
    return {data<T>(), numel_};
  }
  template <class T>
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Unaligned> vec() const {
    return {data<T>(), numel_};
  }
  /// Row-major matrix view of a 2-D tensor.
  template <class T>
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> mat() {
    QF_CHECK_SHAPE(ndim() == 2) << "mat(): expected a 2-D tensor, got " << desc();
    return {data<T>(), shape_[0], shape_[1]};
  }
  template <class T>
  Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> mat() const {
    QF_CHECK_SHAPE(ndim() == 2) << "mat(): expected a 2-D tensor, got " << desc();
    return {data<T>(), shape_[0], shape_[1]};
  }

 private:
  void check_dtype(DType want) const;

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
};

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  Tensor t = empty(shape, dtype_of<T>());
  QF_CHECK_SHAPE(static_cast<int64_t>(values.size()) == t.numel())
      << "from_vector: " << values.size() << " values do not fill shape " << qforge::shape_str(shape);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

/// Normalizes a possibly negative axis against `ndim`; throws IndexError.
int normalize_axis(int axis, int ndim, const char* what);

}  // namespace qforge
