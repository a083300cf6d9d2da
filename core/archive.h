#pragma once
// HDF5 archives of named tensors and scalars: the storage under training
// checkpoints and exported int8 models (in core, so that the int8 runtime can
// read them without the trainers).

#include <cstdint>
#include <map>
#include <string>

#include "core/tensor.h"

namespace qforge {

/// A named collection of tensors and scalars stored as one HDF5 file. Names are
/// '/'-separated paths ("model/conv1.weight") whose parts are non-empty and not
/// "."; within one map no name may be a path prefix of another ("a" and "a/b").
/// Tensors are f32, f64, i8, u8 or i32 of any shape, including 0-d and zero-size.
/// Strings are UTF-8 without NUL bytes. Callers store uint64 values as int64.
struct Archive {
  /// Tensors by name: handles sharing storage with the tensors put in (save
  /// writes their current bits; load gives each its own new storage).
  std::map<std::string, Tensor> tensors;
  /// 64-bit integers by name (an unsigned 64-bit dataset loads as its int64 bit
  /// pattern).
  std::map<std::string, int64_t> ints;
  /// Doubles by name.
  std::map<std::string, double> floats;
  /// UTF-8 strings by name (no NUL bytes).
  std::map<std::string, std::string> strings;
  /// The path the archive was loaded from (empty when built in memory); used in messages.
  std::string source;

  /// The named entry; throws FormatError naming the key and `source` when it is absent.
  const Tensor& tensor(const std::string& name) const;
  /// The named int; throws FormatError naming the key and `source` when it is absent.
  int64_t get_int(const std::string& name) const;
  /// The named float; throws FormatError naming the key and `source` when it is absent.
  double get_float(const std::string& name) const;
  /// The named string; throws FormatError naming the key and `source` when it is
  /// absent. The reference is valid while the entry stays in the archive.
  const std::string& get_string(const std::string& name) const;
};

/// Writes `a` to `path` atomically: to "<path>.tmp.<pid>" in the same directory,
/// then fsync, rename over `path`, and fsync of the directory. On failure the temp
/// file is removed, any old file at `path` is untouched, and IOError naming `path`
/// is thrown. Invalid names, undefined tensors or strings holding NUL throw
/// ValueError before anything is written. Thread-safe (HDF5 calls are serialized).
void save_archive(const std::string& path, const Archive& a);

/// Reads an archive written by save_archive(), with `source` set to `path`. A
/// missing or unreadable file throws IOError naming it; a file that is not HDF5,
/// is truncated or corrupt, or is not a qforge archive throws FormatError naming
/// it; a dataset of an unsupported type or shape throws FormatError naming the
/// dataset. Tensors come back with their saved shape, dtype and bits. Thread-safe.
Archive load_archive(const std::string& path);

}  // namespace qforge
