#pragma once
// DataLoader: shuffled, augmented, normalized f32 batches from a Dataset,
// prepared ahead on TBB workers.

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"

namespace qforge::data {

/// How a DataLoader builds its batches.
struct LoaderOptions {
  /// Samples per batch, >= 1.
  int64_t batch_size = 64;
  /// Visit the samples in a per-epoch random order (else in dataset order).
  bool shuffle = true;
  /// Drop the last batch when it would be smaller than batch_size.
  bool drop_last = false;
  /// With the epoch, fixes the order and every augmentation draw.
  uint64_t seed = 0;
  /// Per-channel normalization, both empty (none) or both of size C with
  /// std > 0. Pixels are first scaled to [0, 1] by p / 255, then
  /// x = (p / 255 - mean[c]) / std[c], in float, as torchvision's ToTensor
  /// followed by Normalize.
  std::vector<float> mean, std;
  /// Pad each image by crop_padding pixels of value 0 on every side, then crop
  /// an H x W window at a random offset (torchvision's RandomCrop(padding)).
  bool random_crop = false;
  /// Padding of random_crop in pixels, >= 0 (ValueError otherwise); unused without random_crop.
  int crop_padding = 4;
  /// Mirror each image left-right with probability 1/2 (after the crop).
  bool hflip = false;
  /// Batches prepared ahead in the background; 0 = all work in next().
  int prefetch = 2;
};

/// One batch. `x` is f32 [B, C, H, W] (augmented and normalized), `y` is
/// i32 [B]; both are new tensors owned by the receiver. B is batch_size except
/// for a short last batch when drop_last is false.
struct Batch {
  /// f32 [B, C, H, W], augmented and normalized.
  Tensor x;
  /// i32 [B] labels.
  Tensor y;
  /// The batch's index within its epoch.
  int64_t index = 0;
};

/// Iterates over a Dataset in batches. The order of an epoch is a pure
/// function of (seed, epoch), and the augmentation of a sample a pure function
/// of (seed, epoch, position in the epoch), so a batch does not depend on the
/// thread count, the prefetch depth or the order in which batches are asked
/// for: resuming at (epoch, batch) reproduces a run bit for bit.
///
/// next() and start_epoch() are for one consumer thread; batch() and the
/// accessors may be called from any thread. The loader shares the dataset's
/// tensors and never writes them; do not modify them while it is in use.
class DataLoader {
 public:
  /// Validates `ds` (see check_dataset; N >= 1) and `opt` (batch_size >= 1,
  /// mean/std both empty or of size C with finite mean and std > 0,
  /// crop_padding >= 0, prefetch >= 0, at least one batch per epoch) and
  /// throws ValueError, ShapeError or DTypeError naming the bad value. The
  /// loader starts at epoch 0, batch 0.
  DataLoader(Dataset ds, LoaderOptions opt);
  /// Cancels the batches not yet started and waits for those in progress.
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Batches in one epoch: N / batch_size rounded down with drop_last, else up.
  int64_t batches_per_epoch() const;
  /// Restarts iteration at batch `first_batch` (0..batches_per_epoch()) of
  /// `epoch` (>= 0): discards the batches prepared so far and starts preparing
  /// the first `prefetch` batches in the background.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  /// The epoch that next() iterates over.
  int64_t epoch() const { return epoch_; }
  /// Stores the next batch of the current epoch in `out` and returns true, or
  /// returns false at the end of the epoch. Equal to batch(epoch(), out.index).
  bool next(Batch& out);
  /// Builds batch `index` (0..batches_per_epoch()-1) of `epoch` (>= 0)
  /// synchronously, without touching the iteration state.
  Batch batch(int64_t epoch, int64_t index) const;
  /// The sample order of `epoch`: a permutation of 0..N-1 (the identity when
  /// shuffle is off). Position p of the epoch reads sample permutation[p].
  std::vector<int64_t> permutation(int64_t epoch) const;

  /// The dataset, sharing storage with the one passed to the constructor.
  const Dataset& dataset() const;
  /// The validated options.
  const LoaderOptions& options() const;

 private:
  struct Core;
  struct Slot;
  // Builds the slot's batch unless it was claimed by another thread or cancelled.
  static void run_slot(const std::shared_ptr<Core>& core, const std::shared_ptr<Slot>& slot);
  void fill_queue();
  void cancel_queue();

  std::shared_ptr<Core> core_;
  std::deque<std::shared_ptr<Slot>> queue_;  // prefetched batches, next one first
  int64_t epoch_ = 0;
  int64_t cursor_ = 0;     // index of the batch next() returns
  int64_t scheduled_ = 0;  // batches of this epoch handed to the queue so far
};

}  // namespace qforge::data
