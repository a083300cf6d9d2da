#pragma once
// MNIST handwritten digits from the original IDX files.

#include <string>

#include "data/dataset.h"

namespace qforge::data {

/// Loads one split of MNIST from `dir`, which holds the original IDX files
/// (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
/// t10k-labels-idx1-ubyte), each either gzipped with a ".gz" suffix or raw
/// without it; the ".gz" name is tried first. Returns images u8 [N, 1, 28, 28]
/// and labels i32 [N] in 0..9 (N = 60000 for train, 10000 for test in the
/// real files), named "mnist-train" or "mnist-test". Throws IOError when a
/// file is missing (the message names the file and `dir`) or unreadable, and
/// FormatError when the files are malformed, are not 28x28, disagree on N, or
/// hold a label outside 0..9.
Dataset load_mnist(const std::string& dir, Split split);

/// The MNIST directory to use by default: "data/mnist" when it holds the test
/// labels (gzipped or raw), else `source_dir` + "/data/mnist" when that does,
/// else "data/mnist" (so that the error names it).
std::string default_mnist_dir(const std::string& source_dir);

}  // namespace qforge::data
