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
  /// Allocates `bytes` rounded up to a multiple of 64 (at least 64), 64-byte
  /// aligned and uninitialized; blocks of 64 KiB or more may be reused from the
  /// cache. Throws Error when out of memory.
  explicit Storage(size_t bytes);
  /// Parks a block of 64 KiB or more in the cache while the cache stays within
  /// its bound (QFORGE_ALLOC_CACHE_MB, default 2048), else frees it.
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  /// The block, owned by this Storage and valid until it is destroyed.
  void* data() const { return ptr_; }
  /// The allocated size: the requested bytes rounded up as above.
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
  /// A new tensor of zeros. Sizes must be >= 0 (ShapeError).
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  /// A new tensor of ones. Sizes must be >= 0 (ShapeError).
  static Tensor ones(const Shape& shape, DType dtype = DType::f32);
  /// A new tensor with every element `value`, converted by static_cast (integer
  /// dtypes truncate toward zero; `value` must be representable). Sizes must be
  /// >= 0 (ShapeError).
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

  /// Typed pointer to the first element; throws ValueError for an undefined
  /// tensor and DTypeError on a mismatch. Valid while any tensor shares the storage.
  template <class T>
  T* data() {
    check_dtype(dtype_of<T>());
    return reinterpret_cast<T*>(raw());
  }
  /// Read-only data<T>(), with the same checks and lifetime.
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return reinterpret_cast<const T*>(raw());
  }
  /// Untyped pointer to the first element, without a dtype check. The tensor must
  /// be defined (not checked). Valid while any tensor shares the storage.
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
  /// Sets every element to `value` (converted as in full()) in place: every
  /// tensor sharing the storage sees it. Throws ValueError when undefined.
  void fill_(double value);
  /// Sets every byte to 0 in place (shared storage sees it); ValueError when undefined.
  void zero_();
  /// True when both tensors view the same storage.
  bool shares_storage(const Tensor& other) const { return storage_ == other.storage_; }
  /// True when no other tensor shares this storage (safe to write in place).
  bool is_unique() const { return storage_ && storage_.use_count() == 1; }

  /// Element i of the flattened tensor, converted to double (slow; for tests).
  double item(int64_t i = 0) const;
  /// Values as doubles (slow; for tests and messages).
  std::vector<double> to_vector() const;

  /// Eigen view of the flattened data: aliases the storage (no copy) and checks
  /// as data<T>() does.
  template <class T>
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Unaligned> vec() {
    return {data<T>(), numel_};
  }
  /// Read-only vec<T>().
  template <class T>
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Unaligned> vec() const {
    return {data<T>(), numel_};
  }
  /// Row-major matrix view of a 2-D tensor, aliasing the storage; ShapeError
  /// unless 2-D, otherwise checks as data<T>() does.
  template <class T>
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> mat() {
    QF_CHECK_SHAPE(ndim() == 2) << "mat(): expected a 2-D tensor, got " << desc();
    return {data<T>(), shape_[0], shape_[1]};
  }
  /// Read-only mat<T>(), with the same checks.
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
