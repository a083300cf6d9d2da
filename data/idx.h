#pragma once
// Reader for IDX files (the format of the MNIST distribution).

#include <string>

#include "core/tensor.h"

namespace qforge::data {

/// Reads the IDX file at `path`, gzip-compressed or raw (detected from the
/// content, not the name). Only element type 0x08 (unsigned byte) is accepted,
/// with 1 to 4 big-endian dimensions; when `expected_ndim` is non-zero the file
/// must have exactly that many. The payload must hold exactly prod(dims) bytes.
/// Returns a new u8 tensor (owned by the caller) whose shape is the file's dims.
/// Throws IOError when the file cannot be opened or read, FormatError when its
/// content is malformed (bad magic, other element type, truncated, trailing
/// bytes, corrupt gzip stream); every message starts with `path`.
Tensor read_idx(const std::string& path, int expected_ndim = 0);

}  // namespace qforge::data
