#include "data/loader.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <numeric>
#include <utility>

#include "core/rng.h"

namespace qforge::data {
namespace {

constexpr uint64_t kShuffleStream = 0x53485546464c45ull;
constexpr uint64_t kAugmentStream = 0x4155474d454e54ull;

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Seed of the random stream `stream` for (seed, epoch, position).
uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t position) {
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
  uint64_t h = mix64(seed + kGolden);
  h = mix64(h ^ (stream + 2 * kGolden));
  h = mix64(h ^ (epoch + 3 * kGolden));
  return mix64(h ^ (position + 4 * kGolden));
}

// One arena with a single worker slot for every loader's background batches,
// apart from the compute arena of core/parallel.cpp. Never destroyed: queued
// tasks may outlive static destruction.
tbb::task_arena& prefetch_arena() {
  static tbb::task_arena* arena = new tbb::task_arena(1, 0);
  return *arena;
}

}  // namespace

struct DataLoader::Core {
  Dataset ds;
  LoaderOptions opt;
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t batches = 0;
  std::vector<float> lut;  // [C][256]: the normalized value of each pixel value

  mutable std::mutex order_mu;
  mutable int64_t order_epoch = -1;
  mutable std::shared_ptr<const std::vector<int64_t>> order_cache;

  std::mutex mu;  // guards every Slot's state and `running`
  std::condition_variable cv;
  int running = 0;

  std::shared_ptr<const std::vector<int64_t>> order(int64_t epoch) const;
  Batch make(int64_t epoch, int64_t index) const;
  void fill_sample(const uint8_t* src, float* dst, int64_t epoch, int64_t position) const;
};

struct DataLoader::Slot {
  enum class State { pending, running, done, cancelled };
  int64_t epoch = 0;
  int64_t index = 0;
  State state = State::pending;
  Batch batch;
  std::exception_ptr error;
};

void DataLoader::run_slot(const std::shared_ptr<Core>& core, const std::shared_ptr<Slot>& slot) {
  {
    std::lock_guard<std::mutex> lock(core->mu);
    if (slot->state != Slot::State::pending) return;
    slot->state = Slot::State::running;
    ++core->running;
  }
  Batch batch;
  std::exception_ptr error;
  try {
    batch = core->make(slot->epoch, slot->index);
  } catch (...) {
    error = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(core->mu);
    slot->batch = std::move(batch);
    slot->error = error;
    slot->state = Slot::State::done;
    --core->running;
  }
  core->cv.notify_all();
}

std::shared_ptr<const std::vector<int64_t>> DataLoader::Core::order(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(order_mu);
  if (order_cache && order_epoch == epoch) return order_cache;
  auto perm = std::make_shared<std::vector<int64_t>>(n);
  std::iota(perm->begin(), perm->end(), int64_t{0});
  if (opt.shuffle) {
    Generator g(stream_seed(opt.seed, kShuffleStream, static_cast<uint64_t>(epoch), 0));
    for (int64_t i = n - 1; i > 0; --i) std::swap((*perm)[i], (*perm)[g.below(static_cast<uint64_t>(i + 1))]);
  }
  order_epoch = epoch;
  order_cache = std::move(perm);
  return order_cache;
}

void DataLoader::Core::fill_sample(const uint8_t* src, float* dst, int64_t epoch, int64_t position) const {
  const int64_t pad = opt.random_crop ? opt.crop_padding : 0;
  int64_t top = pad, left = pad;  // window offset in the padded image
  bool flip = false;
  if (opt.random_crop || opt.hflip) {
    Generator g(stream_seed(opt.seed, kAugmentStream, static_cast<uint64_t>(epoch), static_cast<uint64_t>(position)));
    if (opt.random_crop) {
      top = static_cast<int64_t>(g.below(static_cast<uint64_t>(2 * pad + 1)));
      left = static_cast<int64_t>(g.below(static_cast<uint64_t>(2 * pad + 1)));
    }
    if (opt.hflip) flip = g.uniform() < 0.5;
  }
  const int64_t dy = top - pad, dx = left - pad;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* lut_c = lut.data() + ch * 256;
    const float fill = lut_c[0];
    for (int64_t y = 0; y < h; ++y) {
      float* out = dst + (ch * h + y) * w;
      const int64_t sy = y + dy;
      if (sy < 0 || sy >= h) {
        std::fill(out, out + w, fill);
        continue;
      }
      const uint8_t* in = src + (ch * h + sy) * w;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = (flip ? w - 1 - x : x) + dx;
        out[x] = (sx >= 0 && sx < w) ? lut_c[in[sx]] : fill;
      }
    }
  }
}

Batch DataLoader::Core::make(int64_t epoch, int64_t index) const {
  QF_CHECK(epoch >= 0) << "DataLoader: epoch must be >= 0, got " << epoch;
  QF_CHECK_INDEX(index >= 0 && index < batches)
      << "DataLoader: batch index " << index << " is out of range for " << batches << " batches per epoch";
  const auto perm = order(epoch);
  const int64_t first = index * opt.batch_size;
  const int64_t b = std::min(opt.batch_size, n - first);
  const int64_t chw = c * h * w;
  Batch out;
  out.index = index;
  out.x = Tensor::empty({b, c, h, w}, DType::f32);
  out.y = Tensor::empty({b}, DType::i32);
  const uint8_t* images = ds.images.data<uint8_t>();
  const int32_t* labels = ds.labels.data<int32_t>();
  float* x = out.x.data<float>();
  int32_t* y = out.y.data<int32_t>();
  for (int64_t j = 0; j < b; ++j) {
    const int64_t sample = (*perm)[first + j];
    y[j] = labels[sample];
    fill_sample(images + sample * chw, x + j * chw, epoch, first + j);
  }
  return out;
}

DataLoader::DataLoader(Dataset ds, LoaderOptions opt) : core_(std::make_shared<Core>()) {
  check_dataset(ds, "DataLoader");
  QF_CHECK(ds.size() >= 1) << "DataLoader: dataset '" << ds.name << "' is empty";
  const int64_t c = ds.images.size(1);
  QF_CHECK(opt.batch_size >= 1) << "DataLoader: batch_size must be >= 1, got " << opt.batch_size;
  QF_CHECK(opt.mean.size() == opt.std.size())
      << "DataLoader: mean has " << opt.mean.size() << " values but std has " << opt.std.size();
  QF_CHECK(opt.mean.empty() || static_cast<int64_t>(opt.mean.size()) == c)
      << "DataLoader: mean and std need one value per channel (" << c << " for dataset '" << ds.name << "'), got "
      << opt.mean.size();
  for (size_t i = 0; i < opt.std.size(); ++i) {
    QF_CHECK(std::isfinite(opt.mean[i])) << "DataLoader: mean[" << i << "] must be finite, got " << opt.mean[i];
    QF_CHECK(std::isfinite(opt.std[i]) && opt.std[i] > 0)
        << "DataLoader: std[" << i << "] must be finite and > 0, got " << opt.std[i];
  }
  QF_CHECK(opt.crop_padding >= 0) << "DataLoader: crop_padding must be >= 0, got " << opt.crop_padding;
  QF_CHECK(opt.prefetch >= 0) << "DataLoader: prefetch must be >= 0, got " << opt.prefetch;

  Core& k = *core_;
  k.n = ds.size();
  k.c = c;
  k.h = ds.images.size(2);
  k.w = ds.images.size(3);
  k.batches = opt.drop_last ? k.n / opt.batch_size : (k.n + opt.batch_size - 1) / opt.batch_size;
  QF_CHECK(k.batches >= 1) << "DataLoader: drop_last with batch_size " << opt.batch_size << " > " << k.n
                           << " samples of dataset '" << ds.name << "' leaves no batch";
  k.lut.resize(static_cast<size_t>(c) * 256);
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int p = 0; p < 256; ++p) {
      const float x = static_cast<float>(p) / 255.f;
      k.lut[ch * 256 + p] = opt.mean.empty() ? x : (x - opt.mean[ch]) / opt.std[ch];
    }
  }
  k.ds = std::move(ds);
  k.opt = std::move(opt);
}

DataLoader::~DataLoader() {
  cancel_queue();
  std::unique_lock<std::mutex> lock(core_->mu);
  core_->cv.wait(lock, [&] { return core_->running == 0; });
}

int64_t DataLoader::batches_per_epoch() const { return core_->batches; }

const Dataset& DataLoader::dataset() const { return core_->ds; }

const LoaderOptions& DataLoader::options() const { return core_->opt; }

std::vector<int64_t> DataLoader::permutation(int64_t epoch) const {
  QF_CHECK(epoch >= 0) << "DataLoader: epoch must be >= 0, got " << epoch;
  return *core_->order(epoch);
}

Batch DataLoader::batch(int64_t epoch, int64_t index) const { return core_->make(epoch, index); }

void DataLoader::cancel_queue() {
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    for (const auto& slot : queue_) {
      if (slot->state == Slot::State::pending) slot->state = Slot::State::cancelled;
    }
  }
  queue_.clear();
}

void DataLoader::fill_queue() {
  const auto limit = static_cast<size_t>(core_->opt.prefetch);
  while (queue_.size() < limit && scheduled_ < core_->batches) {
    auto slot = std::make_shared<Slot>();
    slot->epoch = epoch_;
    slot->index = scheduled_++;
    queue_.push_back(slot);
    prefetch_arena().enqueue([core = core_, slot] { run_slot(core, slot); });
  }
}

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  QF_CHECK(epoch >= 0) << "DataLoader: epoch must be >= 0, got " << epoch;
  QF_CHECK_INDEX(first_batch >= 0 && first_batch <= core_->batches)
      << "DataLoader: first batch " << first_batch << " is out of range 0.." << core_->batches;
  cancel_queue();
  epoch_ = epoch;
  cursor_ = first_batch;
  scheduled_ = first_batch;
  fill_queue();
}

bool DataLoader::next(Batch& out) {
  if (cursor_ >= core_->batches) return false;
  if (core_->opt.prefetch == 0) {
    out = core_->make(epoch_, cursor_++);
    return true;
  }
  if (queue_.empty()) fill_queue();
  std::shared_ptr<Slot> slot = queue_.front();
  queue_.pop_front();
  fill_queue();
  run_slot(core_, slot);
  {
    std::unique_lock<std::mutex> lock(core_->mu);
    core_->cv.wait(lock, [&] { return slot->state == Slot::State::done; });
  }
  ++cursor_;
  if (slot->error) std::rethrow_exception(slot->error);
  out = std::move(slot->batch);
  return true;
}

}  // namespace qforge::data
