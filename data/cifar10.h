#pragma once
// CIFAR-10 from the binary version's .bin files.

#include <string>
#include <vector>

#include "data/dataset.h"

namespace qforge::data {

/// Loads one split of CIFAR-10 from `dir` (the contents of
/// cifar-10-batches-bin/): train reads data_batch_1.bin .. data_batch_5.bin in
/// that order, test reads test_batch.bin. Each file is a sequence of 3073-byte
/// records (label, then 32x32 red, green and blue planes). Returns images
/// u8 [N, 3, 32, 32] and labels i32 [N] in 0..9, named "cifar10-train" or
/// "cifar10-test". Throws IOError when a file is missing (naming it and `dir`)
/// or unreadable, and FormatError when a file is empty, its size is not a
/// multiple of 3073, or it holds a label outside 0..9.
Dataset load_cifar10(const std::string& dir, Split split);

/// Reads the ten class names, in label order, from `dir`/batches.meta.txt,
/// skipping empty lines and trailing whitespace. Throws IOError when the file
/// cannot be read and FormatError when it does not hold exactly ten names.
std::vector<std::string> load_cifar10_class_names(const std::string& dir);

}  // namespace qforge::data
