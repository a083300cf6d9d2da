#pragma once
// Typed errors and the always-on QF_CHECK family.
//
//   QF_CHECK(x.ndim() == 2) << "linear: input must be 2-D, got " << x.shape_str();
//
// throws qforge::ValueError whose message is the streamed text followed by
// the failed condition, file and line. QF_CHECK_SHAPE / _DTYPE / _INDEX / _IO /
// _FORMAT throw the matching subclass. QF_DCHECK is for internal invariants
// and is compiled out of release (NDEBUG) builds.

#include <sstream>
#include <stdexcept>
#include <string>

namespace qforge {

/// Base of every error qforge throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// A value is out of range or otherwise invalid.
class ValueError : public Error { using Error::Error; };
/// Tensor shapes do not fit the operation.
class ShapeError : public Error { using Error::Error; };
/// A tensor has the wrong dtype.
class DTypeError : public Error { using Error::Error; };
/// An index or axis is out of bounds.
class IndexError : public Error { using Error::Error; };
/// A file cannot be opened, read or written.
class IOError : public Error { using Error::Error; };
/// A file or input is malformed (bad magic, size, version...).
class FormatError : public Error { using Error::Error; };
/// Internal invariant broken: a bug in qforge.
class InternalError : public Error { using Error::Error; };

namespace detail {

/// Collects the message of a failed check and throws E when destroyed, at the
/// end of the full expression `QF_CHECK(c) << ...;`.
template <class E>
class CheckFailure {
 public:
  /// `cond` is the failed condition's text, or nullptr for QF_THROW.
  CheckFailure(const char* file, int line, const char* cond) : file_(file), line_(line), cond_(cond) {}
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  ~CheckFailure() noexcept(false) {
    std::string msg = os_.str();
    if (msg.empty()) msg = "check failed";
    std::ostringstream where;
    where << " [";
    if (cond_) where << "check `" << cond_ << "` at ";
    where << file_ << ":" << line_ << "]";
    throw E(msg + where.str());
  }

  template <class T>
  CheckFailure& operator<<(const T& v) {
    os_ << v;
    return *this;
  }

 private:
  std::ostringstream os_;
  const char* file_;
  int line_;
  const char* cond_;
};

}  // namespace detail
}  // namespace qforge

/// QF_CHECK_T(Type, cond) << "message": throws Type (with the message, the
/// condition's text, file and line) when cond is false; the message is only
/// built on failure. QF_CHECK throws ValueError, QF_CHECK_SHAPE ShapeError,
/// QF_CHECK_DTYPE DTypeError, QF_CHECK_INDEX IndexError, QF_CHECK_IO IOError
/// and QF_CHECK_FORMAT FormatError.
// A `for` (not an `if`/`else`) keeps the macro one statement with no else
// that an unbraced outer `if` could capture. The body throws, so it runs once.
#define QF_CHECK_T(ExcType, cond)                                            \
  for (bool qf_check_ok_ = static_cast<bool>(cond); !qf_check_ok_; qf_check_ok_ = true) \
  ::qforge::detail::CheckFailure<ExcType>(__FILE__, __LINE__, #cond)

#define QF_CHECK(cond) QF_CHECK_T(::qforge::ValueError, cond)
#define QF_CHECK_SHAPE(cond) QF_CHECK_T(::qforge::ShapeError, cond)
#define QF_CHECK_DTYPE(cond) QF_CHECK_T(::qforge::DTypeError, cond)
#define QF_CHECK_INDEX(cond) QF_CHECK_T(::qforge::IndexError, cond)
#define QF_CHECK_IO(cond) QF_CHECK_T(::qforge::IOError, cond)
#define QF_CHECK_FORMAT(cond) QF_CHECK_T(::qforge::FormatError, cond)

/// Unconditional failure with a typed error: QF_THROW(IOError) << "...";
#define QF_THROW(ExcType) ::qforge::detail::CheckFailure<::qforge::ExcType>(__FILE__, __LINE__, nullptr)

/// QF_DCHECK(cond) << "...": an internal invariant, checked (InternalError)
/// in debug builds only; in release builds cond is not evaluated.
#ifdef NDEBUG
#define QF_DCHECK(cond) \
  for (bool qf_check_ok_ = true; !qf_check_ok_; qf_check_ok_ = true) \
  ::qforge::detail::CheckFailure<::qforge::InternalError>(__FILE__, __LINE__, #cond)
#else
#define QF_DCHECK(cond) QF_CHECK_T(::qforge::InternalError, cond)
#endif
