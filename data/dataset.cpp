#include "data/dataset.h"

namespace qforge::data {

const char* split_name(Split split) { return split == Split::train ? "train" : "test"; }

void check_dataset(const Dataset& ds, const std::string& what) {
  const std::string who = what + ": dataset '" + ds.name + "'";
  QF_CHECK_SHAPE(ds.images.defined() && ds.labels.defined()) << who << " has undefined images or labels";
  QF_CHECK_DTYPE(ds.images.dtype() == DType::u8) << who << ": images must be u8, got " << ds.images.desc();
  QF_CHECK_DTYPE(ds.labels.dtype() == DType::i32) << who << ": labels must be i32, got " << ds.labels.desc();
  QF_CHECK_SHAPE(ds.images.ndim() == 4) << who << ": images must be 4-D [N, C, H, W], got " << ds.images.desc();
  QF_CHECK_SHAPE(ds.labels.ndim() == 1) << who << ": labels must be 1-D [N], got " << ds.labels.desc();
  QF_CHECK_SHAPE(ds.images.size(0) == ds.labels.size(0))
      << who << ": " << ds.images.size(0) << " images but " << ds.labels.size(0) << " labels";
  QF_CHECK_SHAPE(ds.images.size(1) > 0 && ds.images.size(2) > 0 && ds.images.size(3) > 0)
      << who << ": images need non-zero C, H, W, got " << ds.images.desc();
}

}  // namespace qforge::data
