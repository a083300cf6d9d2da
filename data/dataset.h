#pragma once
// An in-memory labelled image dataset.

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace qforge::data {

/// Which part of a dataset to load.
enum class Split { train, test };

/// "train" or "test".
const char* split_name(Split split);

/// Images and labels held in memory. `images` is u8 [N, C, H, W] (raw pixels,
/// 0..255), `labels` is i32 [N]. Copies share the tensors' storage.
struct Dataset {
  /// u8 [N, C, H, W] raw pixels.
  Tensor images;
  /// i32 [N] class indices.
  Tensor labels;
  /// For messages and logs, e.g. "mnist-train".
  std::string name;

  /// N, the number of samples (0 when the dataset is empty or undefined).
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

/// Checks the Dataset contract: images u8 4-D with non-zero C, H, W; labels
/// i32 1-D with the same N as images. Throws DTypeError or ShapeError with a
/// message that starts with `what` and names the dataset.
void check_dataset(const Dataset& ds, const std::string& what);

}  // namespace qforge::data
