#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

namespace qforge {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
  }
  return "?";
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

int normalize_axis(int axis, int ndim, const char* what) {
  QF_CHECK_INDEX(axis >= -ndim && axis < ndim)
      << what << ": axis " << axis << " is out of range for a " << ndim << "-d tensor";
  return axis < 0 ? axis + ndim : axis;
}

// ---------------------------------------------------------------------------
// Allocation cache. Blocks of at least kCacheMinBytes are parked on free and
// handed out again for a request of the same rounded size. The cache is
// bounded; QFORGE_ALLOC_CACHE_MB overrides the bound (0 disables it).
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kCacheMinBytes = 64 * 1024;

struct AllocCache {
  std::mutex mu;
  std::multimap<size_t, void*> blocks;
  size_t cached = 0;
  size_t limit = 0;

  AllocCache() {
    limit = size_t{2048} << 20;
    if (const char* e = std::getenv("QFORGE_ALLOC_CACHE_MB")) limit = static_cast<size_t>(std::atoll(e)) << 20;
  }
  ~AllocCache() { release(); }

  void release() {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& kv : blocks) std::free(kv.second);
    blocks.clear();
    cached = 0;
  }
};

AllocCache& cache() {
  static AllocCache* c = new AllocCache();  // never destroyed: tensors may outlive statics
  return *c;
}

size_t round_bytes(size_t bytes) { return (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign; }

}  // namespace

Storage::Storage(size_t bytes) : bytes_(round_bytes(bytes)) {
  if (bytes_ >= kCacheMinBytes) {
    AllocCache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.blocks.find(bytes_);
    if (it != c.blocks.end()) {
      ptr_ = it->second;
      c.blocks.erase(it);
      c.cached -= bytes_;
      return;
    }
  }
  ptr_ = std::aligned_alloc(kAlign, bytes_);
  if (!ptr_) QF_THROW(Error) << "out of memory allocating " << bytes_ << " bytes";
}

Storage::~Storage() {
  if (!ptr_) return;
  if (bytes_ >= kCacheMinBytes) {
    AllocCache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.cached + bytes_ <= c.limit) {
      c.blocks.emplace(bytes_, ptr_);
      c.cached += bytes_;
      return;
    }
  }
  std::free(ptr_);
}

size_t allocator_cached_bytes() {
  AllocCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.cached;
}

void allocator_release_cache() { cache().release(); }

// ---------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape)
    QF_CHECK_SHAPE(d >= 0) << "tensor sizes must be non-negative, got " << qforge::shape_str(shape);
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(t.numel_) * dtype_size(dtype));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.zero_();
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, dtype);
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(i);
  });
  return t;
}

int64_t Tensor::size(int axis) const { return shape_[normalize_axis(axis, ndim(), "size")]; }

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype_)) + shape_str();
}

void Tensor::check_dtype(DType want) const {
  QF_CHECK(defined()) << "access to an undefined tensor";
  QF_CHECK_DTYPE(dtype_ == want) << "tensor is " << desc() << ", accessed as " << dtype_name(want);
}

Tensor Tensor::reshape(const Shape& shape) const {
  QF_CHECK(defined()) << "reshape of an undefined tensor";
  Shape out = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      QF_CHECK_SHAPE(infer < 0) << "reshape " << desc() << " to " << qforge::shape_str(shape)
                                << ": only one size may be -1";
      infer = static_cast<int>(i);
    } else {
      QF_CHECK_SHAPE(out[i] >= 0) << "reshape to " << qforge::shape_str(shape) << ": negative size";
      known *= out[i];
    }
  }
  if (infer >= 0) {
    QF_CHECK_SHAPE(known != 0 && numel_ % known == 0)
        << "cannot reshape " << desc() << " to " << qforge::shape_str(shape);
    out[infer] = numel_ / known;
  }
  QF_CHECK_SHAPE(shape_numel(out) == numel_) << "cannot reshape " << desc() << " (" << numel_
                                             << " elements) to " << qforge::shape_str(shape);
  Tensor t = *this;
  t.shape_ = out;
  return t;
}

Tensor Tensor::clone() const {
  QF_CHECK(defined()) << "clone of an undefined tensor";
  Tensor t = empty(shape_, dtype_);
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  QF_CHECK(defined()) << "to() of an undefined tensor";
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype);
  dispatch_all(dtype_, [&](auto stag) {
    using S = decltype(stag);
    dispatch_all(dtype, [&](auto dtag) {
      using D = decltype(dtag);
      const S* s = data<S>();
      D* d = t.data<D>();
      for (int64_t i = 0; i < numel_; ++i) d[i] = static_cast<D>(s[i]);
    });
  });
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  QF_CHECK_SHAPE(src.numel() == numel_) << "copy_from: " << src.desc() << " into " << desc();
  QF_CHECK_DTYPE(src.dtype() == dtype_) << "copy_from: " << src.desc() << " into " << desc();
  if (src.raw() != raw()) std::memmove(raw(), src.raw(), nbytes());
}

void Tensor::fill_(double value) {
  dispatch_all(dtype_, [&](auto tag) {
    using T = decltype(tag);
    std::fill_n(data<T>(), numel_, static_cast<T>(value));
  });
}

void Tensor::zero_() {
  QF_CHECK(defined()) << "zero_ of an undefined tensor";
  std::memset(raw(), 0, nbytes());
}

double Tensor::item(int64_t i) const {
  QF_CHECK_INDEX(i >= 0 && i < numel_) << "item(" << i << ") out of range for " << desc();
  return dispatch_all(dtype_, [&](auto tag) -> double {
    using T = decltype(tag);
    return static_cast<double>(data<T>()[i]);
  });
}

std::vector<double> Tensor::to_vector() const {
  std::vector<double> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[i] = item(i);
  return v;
}

}  // namespace qforge
