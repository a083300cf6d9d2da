#include "core/archive.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace qforge {
namespace {

// File layout: one group per map ("/tensors", "/ints", "/floats", "/strings"),
// each entry a dataset at its own '/'-path inside it, plus a format version
// attribute on the root group.
constexpr int64_t kFormatVersion = 1;
constexpr const char* kVersionAttr = "qforge_archive_version";
constexpr const char* kTensorsGroup = "tensors";
constexpr const char* kIntsGroup = "ints";
constexpr const char* kFloatsGroup = "floats";
constexpr const char* kStringsGroup = "strings";

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

/// Owns an HDF5 identifier and releases it with the matching close function.
class H5Handle {
 public:
  using CloseFn = herr_t (*)(hid_t);
  H5Handle(hid_t id, CloseFn close) : id_(id), close_(close) {}
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  H5Handle& operator=(H5Handle&&) = delete;
  ~H5Handle() { close(); }
  hid_t get() const { return id_; }
  /// Releases the identifier now; false when HDF5 reports a failure.
  bool close() {
    if (id_ < 0) return true;
    const herr_t rc = close_(std::exchange(id_, H5I_INVALID_HID));
    return rc >= 0;
  }

 private:
  hid_t id_;
  CloseFn close_;
};

/// Holds the HDF5 lock and silences HDF5's own error printing for the calling
/// thread, restoring the previous handler on exit.
class Hdf5Session {
 public:
  Hdf5Session() : lock_(hdf5_mutex()) {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~Hdf5Session() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  Hdf5Session(const Hdf5Session&) = delete;
  Hdf5Session& operator=(const Hdf5Session&) = delete;

 private:
  std::lock_guard<std::mutex> lock_;
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

/// " (HDF5: <most specific message>)" for the current error stack, which it clears.
std::string hdf5_detail() {
  std::string desc;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) static_cast<std::string*>(out)->assign(e->desc);
        return 0;
      },
      &desc);
  H5Eclear2(H5E_DEFAULT);
  return desc.empty() ? std::string() : " (HDF5: " + desc + ")";
}

std::string errno_text(int err) { return std::generic_category().message(err); }

/// Turns failed HDF5 calls into an E whose message names the operation and file.
template <class E>
struct Checker {
  const char* op;
  const std::string& path;

  void check(bool ok, const std::string& what) const {
    if (!ok)
      detail::CheckFailure<E>(__FILE__, __LINE__, nullptr) << op << " '" << path << "': " << what << hdf5_detail();
  }
  void call(herr_t rc, const std::string& what) const { check(rc >= 0, what); }
  H5Handle own(hid_t id, H5Handle::CloseFn close, const std::string& what) const {
    check(id >= 0, what);
    return {id, close};
  }
};
using SaveChecker = Checker<IOError>;
using LoadChecker = Checker<FormatError>;

hid_t native_type(DType d) {
  switch (d) {
    case DType::f32:
      return H5T_NATIVE_FLOAT;
    case DType::f64:
      return H5T_NATIVE_DOUBLE;
    case DType::i8:
      return H5T_NATIVE_INT8;
    case DType::u8:
      return H5T_NATIVE_UINT8;
    case DType::i32:
      return H5T_NATIVE_INT32;
  }
  return H5I_INVALID_HID;
}

std::optional<DType> dtype_of_h5(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (size == 4) return DType::f32;
    if (size == 8) return DType::f64;
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 1) return is_signed ? DType::i8 : DType::u8;
    if (size == 4 && is_signed) return DType::i32;
  }
  return std::nullopt;
}

std::string type_desc(hid_t type) {
  const size_t size = H5Tget_size(type);
  std::ostringstream os;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      os << (H5Tget_sign(type) == H5T_SGN_2 ? "signed" : "unsigned") << " integer";
      break;
    case H5T_FLOAT:
      os << "float";
      break;
    case H5T_STRING:
      os << "string";
      break;
    case H5T_COMPOUND:
      os << "compound";
      break;
    case H5T_ENUM:
      os << "enum";
      break;
    case H5T_ARRAY:
      os << "array";
      break;
    case H5T_VLEN:
      os << "variable-length sequence";
      break;
    default:
      os << "HDF5 type class " << static_cast<int>(H5Tget_class(type));
      break;
  }
  os << " of " << size << " bytes";
  return os.str();
}

void check_name(const std::string& name, const char* kind, const std::string& path) {
  bool ok = !name.empty() && name.find('\0') == std::string::npos;
  for (size_t start = 0; ok;) {
    const size_t end = name.find('/', start);
    const std::string_view part(name.data() + start, (end == std::string::npos ? name.size() : end) - start);
    ok = !part.empty() && part != ".";
    if (end == std::string::npos) break;
    start = end + 1;
  }
  QF_CHECK(ok) << "save_archive '" << path << "': invalid " << kind << " name '" << name
               << "': names are '/'-separated paths of non-empty parts other than '.', without NUL bytes";
}

template <class V>
void check_names(const std::map<std::string, V>& m, const char* kind, const std::string& path) {
  for (const auto& [name, value] : m) {
    check_name(name, kind, path);
    const std::string dir = name + "/";
    const auto next = m.lower_bound(dir);
    QF_CHECK(next == m.end() || next->first.compare(0, dir.size(), dir) != 0)
        << "save_archive '" << path << "': " << kind << " name '" << name << "' is a path prefix of " << kind
        << " name '" << next->first << "'";
  }
}

void check_archive(const Archive& a, const std::string& path) {
  check_names(a.tensors, "tensor", path);
  check_names(a.ints, "int", path);
  check_names(a.floats, "float", path);
  check_names(a.strings, "string", path);
  for (const auto& [name, t] : a.tensors) {
    QF_CHECK(t.defined()) << "save_archive '" << path << "': tensor '" << name << "' is undefined";
  }
  for (const auto& [name, s] : a.strings) {
    QF_CHECK(s.find('\0') == std::string::npos)
        << "save_archive '" << path << "': string '" << name << "' contains a NUL byte";
  }
}

H5Handle scalar_space(const SaveChecker& c) {
  return c.own(H5Screate(H5S_SCALAR), H5Sclose, "cannot create a dataspace");
}

/// Creates `name` (with intermediate groups) in `group` and writes `buf` into it.
void write_dataset(hid_t group, const std::string& group_name, const std::string& name, hid_t type, hid_t space,
                   const void* buf, hid_t lcpl, const SaveChecker& c) {
  const std::string full = group_name + "/" + name;
  H5Handle d = c.own(H5Dcreate2(group, name.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Dclose,
                     "cannot create dataset '" + full + "'");
  if (buf) c.call(H5Dwrite(d.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), "cannot write dataset '" + full + "'");
  c.check(d.close(), "cannot close dataset '" + full + "'");
}

void write_contents(hid_t file, const Archive& a, const SaveChecker& c) {
  {
    H5Handle space = scalar_space(c);
    H5Handle attr = c.own(H5Acreate2(file, kVersionAttr, H5T_NATIVE_INT64, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                          H5Aclose, "cannot create the version attribute");
    c.call(H5Awrite(attr.get(), H5T_NATIVE_INT64, &kFormatVersion), "cannot write the version attribute");
  }
  H5Handle lcpl = c.own(H5Pcreate(H5P_LINK_CREATE), H5Pclose, "cannot create a property list");
  c.call(H5Pset_create_intermediate_group(lcpl.get(), 1), "cannot set a property list");
  auto make_group = [&](const char* name) {
    return c.own(H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                 std::string("cannot create group '") + name + "'");
  };

  H5Handle tensors = make_group(kTensorsGroup);
  for (const auto& [name, t] : a.tensors) {
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    H5Handle space = t.ndim() == 0
                         ? scalar_space(c)
                         : c.own(H5Screate_simple(t.ndim(), dims.data(), nullptr), H5Sclose,
                                 "cannot create a dataspace of shape " + t.shape_str() + " for tensor '" + name + "'");
    write_dataset(tensors.get(), kTensorsGroup, name, native_type(t.dtype()), space.get(),
                  t.numel() > 0 ? t.raw() : nullptr, lcpl.get(), c);
  }

  H5Handle space = scalar_space(c);
  H5Handle ints = make_group(kIntsGroup);
  for (const auto& [name, v] : a.ints) {
    write_dataset(ints.get(), kIntsGroup, name, H5T_NATIVE_INT64, space.get(), &v, lcpl.get(), c);
  }
  H5Handle floats = make_group(kFloatsGroup);
  for (const auto& [name, v] : a.floats) {
    write_dataset(floats.get(), kFloatsGroup, name, H5T_NATIVE_DOUBLE, space.get(), &v, lcpl.get(), c);
  }
  H5Handle strings = make_group(kStringsGroup);
  H5Handle str_type = c.own(H5Tcopy(H5T_C_S1), H5Tclose, "cannot create a string type");
  c.call(H5Tset_size(str_type.get(), H5T_VARIABLE), "cannot create a string type");
  c.call(H5Tset_cset(str_type.get(), H5T_CSET_UTF8), "cannot create a string type");
  for (const auto& [name, s] : a.strings) {
    const char* p = s.c_str();
    write_dataset(strings.get(), kStringsGroup, name, str_type.get(), space.get(), &p, lcpl.get(), c);
  }
}

void write_file(const std::string& tmp, const Archive& a, const SaveChecker& c) {
  H5Handle fapl = c.own(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "cannot create a property list");
  c.call(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "cannot set a property list");
  H5Handle file = c.own(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose,
                        "cannot create temporary file '" + tmp + "'");
  write_contents(file.get(), a, c);
  c.call(H5Fflush(file.get(), H5F_SCOPE_LOCAL), "cannot flush temporary file '" + tmp + "'");
  c.check(file.close(), "cannot close temporary file '" + tmp + "'");
}

/// A POSIX file descriptor closed on scope exit.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void fsync_file(const std::string& tmp, const std::string& path) {
  Fd f{::open(tmp.c_str(), O_RDONLY | O_CLOEXEC)};
  QF_CHECK_IO(f.fd >= 0) << "save_archive '" << path << "': cannot open '" << tmp
                         << "' to sync it: " << errno_text(errno);
  QF_CHECK_IO(::fsync(f.fd) == 0) << "save_archive '" << path << "': cannot sync '" << tmp
                                  << "': " << errno_text(errno);
}

/// Syncs the directory holding `path` so that the rename is durable. File systems
/// that cannot sync directories (EINVAL) are accepted.
void fsync_parent_dir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  QF_CHECK_IO(d.fd >= 0) << "save_archive '" << path << "': the file was written but its directory '" << dir
                         << "' cannot be opened to sync it: " << errno_text(errno);
  QF_CHECK_IO(::fsync(d.fd) == 0 || errno == EINVAL)
      << "save_archive '" << path << "': the file was written but its directory '" << dir
      << "' cannot be synced: " << errno_text(errno);
}

void check_readable(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  QF_CHECK_IO(f.fd >= 0) << "load_archive '" << path << "': cannot open: " << errno_text(errno);
  struct stat st {};
  QF_CHECK_IO(::fstat(f.fd, &st) == 0) << "load_archive '" << path << "': cannot stat: " << errno_text(errno);
  QF_CHECK_IO(S_ISREG(st.st_mode)) << "load_archive '" << path << "': not a regular file";
}

herr_t collect_link(hid_t, const char* name, const H5L_info_t* info, void* out) {
  try {
    static_cast<std::vector<std::pair<std::string, H5L_type_t>>*>(out)->emplace_back(name, info->type);
    return 0;
  } catch (...) {
    return -1;
  }
}

/// Calls fn(name, dataset, "group/name") for every dataset under `group_name`,
/// where name is its '/'-path relative to the group. A missing group is empty.
template <class Fn>
void for_each_dataset(hid_t file, const char* group_name, const LoadChecker& c, Fn&& fn) {
  const std::string gname = group_name;
  const htri_t exists = H5Lexists(file, group_name, H5P_DEFAULT);
  c.check(exists >= 0, "cannot look up group '" + gname + "'");
  if (exists == 0) return;
  H5Handle group = c.own(H5Gopen2(file, group_name, H5P_DEFAULT), H5Gclose, "cannot open group '" + gname + "'");
  std::vector<std::pair<std::string, H5L_type_t>> links;
  c.call(H5Lvisit(group.get(), H5_INDEX_NAME, H5_ITER_INC, collect_link, &links), "cannot list group '" + gname + "'");
  for (const auto& [name, type] : links) {
    const std::string full = gname + "/" + name;
    c.check(type == H5L_TYPE_HARD, "'" + full + "' is a soft or external link");
    H5Handle obj = c.own(H5Oopen(group.get(), name.c_str(), H5P_DEFAULT), H5Oclose, "cannot open '" + full + "'");
    const H5I_type_t kind = H5Iget_type(obj.get());
    if (kind == H5I_GROUP) continue;
    c.check(kind == H5I_DATASET, "'" + full + "' is neither a group nor a dataset");
    fn(name, obj.get(), full);
  }
}

Shape read_shape(hid_t dset, const std::string& full, const LoadChecker& c) {
  H5Handle space = c.own(H5Dget_space(dset), H5Sclose, "cannot read the dataspace of dataset '" + full + "'");
  const H5S_class_t cls = H5Sget_simple_extent_type(space.get());
  if (cls == H5S_SCALAR) return {};
  c.check(cls == H5S_SIMPLE, "dataset '" + full + "' has no dataspace (null or unknown)");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  c.check(rank >= 0, "cannot read the rank of dataset '" + full + "'");
  std::vector<hsize_t> dims(rank);
  c.check(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) == rank,
          "cannot read the dims of dataset '" + full + "'");
  Shape shape;
  for (hsize_t d : dims) {
    c.check(d <= static_cast<hsize_t>(INT64_MAX), "dataset '" + full + "' has a dimension too large");
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

H5Handle dataset_type(hid_t dset, const std::string& full, const LoadChecker& c) {
  return c.own(H5Dget_type(dset), H5Tclose, "cannot read the type of dataset '" + full + "'");
}

Tensor read_tensor(hid_t dset, const std::string& full, const LoadChecker& c) {
  H5Handle type = dataset_type(dset, full, c);
  const std::optional<DType> dtype = dtype_of_h5(type.get());
  c.check(dtype.has_value(), "dataset '" + full + "' has unsupported type " + type_desc(type.get()) +
                                 " (expected f32, f64, i8, u8 or i32)");
  const Shape shape = read_shape(dset, full, c);
  // A corrupt or hostile file can declare a huge dataset that stores almost
  // nothing (HDF5 would read fill values): refuse sizes far beyond what the
  // file holds (x1024 leaves room for compression) before allocating.
  uint64_t bytes = dtype_size(*dtype);
  for (int64_t d : shape)
    c.check(!__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes),
            "dataset '" + full + "' declares a size that overflows");
  const uint64_t stored = H5Dget_storage_size(dset);
  c.check(bytes <= std::max<uint64_t>(uint64_t{64} << 20, stored * 1024),
          "dataset '" + full + "' declares " + std::to_string(bytes) + " bytes but the file stores only " +
              std::to_string(stored));
  Tensor t = Tensor::empty(shape, *dtype);
  if (t.numel() > 0) {
    c.call(H5Dread(dset, native_type(*dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()),
           "cannot read dataset '" + full + "'");
  }
  return t;
}

void check_single_value(hid_t dset, const std::string& full, const LoadChecker& c) {
  c.check(shape_numel(read_shape(dset, full, c)) == 1, "dataset '" + full + "' does not hold exactly one value");
}

int64_t read_int(hid_t dset, const std::string& full, const LoadChecker& c) {
  H5Handle type = dataset_type(dset, full, c);
  c.check(H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) <= 8,
          "dataset '" + full + "' has unsupported type " + type_desc(type.get()) + " (expected an integer)");
  check_single_value(dset, full, c);
  if (H5Tget_size(type.get()) == 8 && H5Tget_sign(type.get()) == H5T_SGN_NONE) {
    uint64_t u = 0;
    c.call(H5Dread(dset, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &u), "cannot read dataset '" + full + "'");
    return std::bit_cast<int64_t>(u);
  }
  int64_t v = 0;
  c.call(H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), "cannot read dataset '" + full + "'");
  return v;
}

double read_float(hid_t dset, const std::string& full, const LoadChecker& c) {
  H5Handle type = dataset_type(dset, full, c);
  c.check(H5Tget_class(type.get()) == H5T_FLOAT,
          "dataset '" + full + "' has unsupported type " + type_desc(type.get()) + " (expected a float)");
  check_single_value(dset, full, c);
  double v = 0;
  c.call(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), "cannot read dataset '" + full + "'");
  return v;
}

std::string read_string(hid_t dset, const std::string& full, const LoadChecker& c) {
  H5Handle type = dataset_type(dset, full, c);
  c.check(H5Tget_class(type.get()) == H5T_STRING,
          "dataset '" + full + "' has unsupported type " + type_desc(type.get()) + " (expected a string)");
  check_single_value(dset, full, c);
  const std::string what = "cannot read dataset '" + full + "'";
  H5Handle mem = c.own(H5Tcopy(type.get()), H5Tclose, what);
  const htri_t variable = H5Tis_variable_str(type.get());
  c.check(variable >= 0, what);
  if (variable > 0) {
    char* raw = nullptr;
    c.call(H5Dread(dset, mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &raw), what);
    std::unique_ptr<char, herr_t (*)(void*)> owned(raw, H5free_memory);
    return raw ? std::string(raw) : std::string();
  }
  std::string s(H5Tget_size(type.get()), '\0');
  c.call(H5Dread(dset, mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, s.data()), what);
  if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) {
    s.erase(s.find_last_not_of(' ') + 1);
  } else {
    s.erase(std::min(s.find('\0'), s.size()));
  }
  return s;
}

void check_version(hid_t file, const LoadChecker& c) {
  const htri_t has = H5Aexists(file, kVersionAttr);
  c.check(has >= 0, "cannot read the root group");
  c.check(has > 0, std::string("not a qforge archive (no '") + kVersionAttr + "' attribute)");
  H5Handle attr = c.own(H5Aopen(file, kVersionAttr, H5P_DEFAULT), H5Aclose, "cannot open the version attribute");
  H5Handle type = c.own(H5Aget_type(attr.get()), H5Tclose, "cannot read the version attribute");
  c.check(H5Tget_class(type.get()) == H5T_INTEGER, "the version attribute is not an integer");
  int64_t version = 0;
  c.call(H5Aread(attr.get(), H5T_NATIVE_INT64, &version), "cannot read the version attribute");
  c.check(version >= 1 && version <= kFormatVersion, "unsupported archive version " + std::to_string(version) +
                                                         " (this build reads up to " + std::to_string(kFormatVersion) +
                                                         ")");
}

}  // namespace

void save_archive(const std::string& path, const Archive& a) {
  check_archive(a, path);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const SaveChecker c{"save_archive", path};
  {
    Hdf5Session session;
    try {
      write_file(tmp, a, c);
      fsync_file(tmp, path);
      QF_CHECK_IO(std::rename(tmp.c_str(), path.c_str()) == 0)
          << "save_archive '" << path << "': cannot rename '" << tmp << "' over it: " << errno_text(errno);
    } catch (...) {
      std::remove(tmp.c_str());
      throw;
    }
  }
  fsync_parent_dir(path);
}

Archive load_archive(const std::string& path) {
  check_readable(path);
  const LoadChecker c{"load_archive", path};
  Hdf5Session session;
  H5Handle fapl = c.own(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "cannot create a property list");
  c.call(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "cannot set a property list");
  H5Handle file =
      c.own(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose, "not an HDF5 file, or truncated or corrupt");
  check_version(file.get(), c);
  Archive a;
  a.source = path;
  for_each_dataset(file.get(), kTensorsGroup, c, [&](const std::string& name, hid_t d, const std::string& full) {
    a.tensors.emplace(name, read_tensor(d, full, c));
  });
  for_each_dataset(file.get(), kIntsGroup, c, [&](const std::string& name, hid_t d, const std::string& full) {
    a.ints.emplace(name, read_int(d, full, c));
  });
  for_each_dataset(file.get(), kFloatsGroup, c, [&](const std::string& name, hid_t d, const std::string& full) {
    a.floats.emplace(name, read_float(d, full, c));
  });
  for_each_dataset(file.get(), kStringsGroup, c, [&](const std::string& name, hid_t d, const std::string& full) {
    a.strings.emplace(name, read_string(d, full, c));
  });
  return a;
}

}  // namespace qforge
