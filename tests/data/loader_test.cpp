#include "data/loader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "core/parallel.h"
#include "data/mnist.h"
#include "tests/data/data_test_util.h"

using namespace qforge;
using namespace qforge::data;
using namespace qforge::data::testing;

namespace {

// n images of [c, h, w] whose pixels are distinct and non-zero within an
// image (needs c*h*w <= 250), and label i for sample i.
Dataset synthetic(int64_t n, int64_t c = 2, int64_t h = 8, int64_t w = 7) {
  Dataset ds;
  ds.name = "synthetic";
  ds.images = Tensor::empty({n, c, h, w}, DType::u8);
  ds.labels = Tensor::empty({n}, DType::i32);
  const int64_t chw = c * h * w;
  for (int64_t i = 0; i < n; ++i) {
    ds.labels.data<int32_t>()[i] = static_cast<int32_t>(i);
    for (int64_t k = 0; k < chw; ++k)
      ds.images.data<uint8_t>()[i * chw + k] = static_cast<uint8_t>(1 + (k + 3 * i) % 250);
  }
  return ds;
}

LoaderOptions augmenting() {
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 42;
  opt.mean = {0.4914f, 0.4822f};
  opt.std = {0.2470f, 0.2435f};
  opt.random_crop = true;
  opt.crop_padding = 3;
  opt.hflip = true;
  return opt;
}

// Every batch of `epoch` through next().
std::vector<Batch> run_epoch(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_TRUE(same_tensor(a[i].x, b[i].x)) << "batch " << i;
    EXPECT_TRUE(same_tensor(a[i].y, b[i].y)) << "batch " << i;
  }
}

std::vector<int32_t> labels_of(const std::vector<Batch>& batches) {
  std::vector<int32_t> out;
  for (const Batch& b : batches) out.insert(out.end(), b.y.data<int32_t>(), b.y.data<int32_t>() + b.y.numel());
  return out;
}

}  // namespace

TEST(DataLoader, BatchShapesAndCounts) {
  LoaderOptions opt;
  opt.batch_size = 4;
  DataLoader keep(synthetic(10), opt);
  EXPECT_EQ(keep.batches_per_epoch(), 3);
  const std::vector<Batch> batches = run_epoch(keep, 0);
  ASSERT_EQ(batches.size(), 3u);
  for (size_t i = 0; i < batches.size(); ++i) {
    const int64_t b = i < 2 ? 4 : 2;
    EXPECT_EQ(batches[i].index, static_cast<int64_t>(i));
    EXPECT_EQ(batches[i].x.dtype(), DType::f32);
    EXPECT_EQ(batches[i].x.shape(), (Shape{b, 2, 8, 7}));
    EXPECT_EQ(batches[i].y.dtype(), DType::i32);
    EXPECT_EQ(batches[i].y.shape(), (Shape{b}));
  }
  Batch extra;
  EXPECT_FALSE(keep.next(extra));

  opt.drop_last = true;
  DataLoader drop(synthetic(10), opt);
  EXPECT_EQ(drop.batches_per_epoch(), 2);
  EXPECT_EQ(run_epoch(drop, 0).size(), 2u);
  opt.batch_size = 5;
  EXPECT_EQ(DataLoader(synthetic(10), opt).batches_per_epoch(), 2);
  EXPECT_EQ(keep.dataset().size(), 10);
  EXPECT_EQ(keep.options().batch_size, 4);
}

TEST(DataLoader, EveryIndexOncePerEpoch) {
  LoaderOptions opt;
  opt.batch_size = 7;
  DataLoader loader(synthetic(50), opt);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const std::vector<int32_t> seen = labels_of(run_epoch(loader, epoch));
    ASSERT_EQ(seen.size(), 50u);
    EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()).size(), 50u);
    const std::vector<int64_t> perm = loader.permutation(epoch);
    for (size_t p = 0; p < seen.size(); ++p) EXPECT_EQ(seen[p], perm[p]);
  }
  opt.drop_last = true;
  DataLoader drop(synthetic(50), opt);
  const std::vector<int32_t> seen = labels_of(run_epoch(drop, 0));
  EXPECT_EQ(seen.size(), 49u);
  EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()).size(), 49u);
}

TEST(DataLoader, OrderIsAFunctionOfSeedAndEpoch) {
  LoaderOptions opt;
  opt.seed = 7;
  DataLoader a(synthetic(40), opt), b(synthetic(40), opt);
  EXPECT_EQ(a.permutation(0), b.permutation(0));
  EXPECT_EQ(a.permutation(5), b.permutation(5));
  EXPECT_NE(a.permutation(0), a.permutation(1));
  opt.seed = 8;
  DataLoader c(synthetic(40), opt);
  EXPECT_NE(a.permutation(0), c.permutation(0));
  opt.shuffle = false;
  DataLoader ordered(synthetic(40), opt);
  const std::vector<int64_t> perm = ordered.permutation(3);
  for (int64_t i = 0; i < 40; ++i) EXPECT_EQ(perm[i], i);
}

TEST(DataLoader, BatchesDoNotDependOnPrefetchThreadsOrCallOrder) {
  const int saved_threads = num_threads();
  LoaderOptions opt = augmenting();
  opt.prefetch = 0;
  DataLoader sync(synthetic(60), opt);
  const std::vector<Batch> reference = run_epoch(sync, 2);
  for (const int prefetch : {1, 2, 5}) {
    for (const int threads : {1, 2}) {
      set_num_threads(threads);
      opt.prefetch = prefetch;
      DataLoader loader(synthetic(60), opt);
      run_epoch(loader, 0);
      expect_same_batches(run_epoch(loader, 2), reference);
    }
  }
  set_num_threads(saved_threads);
  std::vector<Batch> backwards;
  for (int64_t i = sync.batches_per_epoch() - 1; i >= 0; --i) backwards.insert(backwards.begin(), sync.batch(2, i));
  expect_same_batches(backwards, reference);
  EXPECT_FALSE(same_tensor(sync.batch(3, 0).x, reference[0].x));
}

TEST(DataLoader, ResumesMidEpoch) {
  LoaderOptions opt = augmenting();
  DataLoader loader(synthetic(60), opt);
  const std::vector<Batch> full = run_epoch(loader, 4);
  loader.start_epoch(4, 3);
  EXPECT_EQ(loader.epoch(), 4);
  std::vector<Batch> tail;
  Batch b;
  while (loader.next(b)) tail.push_back(b);
  expect_same_batches(tail, std::vector<Batch>(full.begin() + 3, full.end()));
  loader.start_epoch(0, loader.batches_per_epoch());
  EXPECT_FALSE(loader.next(b));
}

TEST(DataLoader, NormalizesLikeToTensorThenNormalize) {
  Dataset ds;
  ds.images = Tensor::empty({1, 2, 1, 4}, DType::u8);
  const uint8_t pixels[8] = {0, 51, 128, 255, 0, 102, 200, 255};
  std::memcpy(ds.images.raw(), pixels, 8);
  ds.labels = Tensor::from_vector<int32_t>({3}, {1});
  LoaderOptions opt;
  opt.batch_size = 1;
  opt.mean = {0.5f, 0.25f};
  opt.std = {0.2f, 0.5f};
  DataLoader loader(ds, opt);
  const Batch b = loader.batch(0, 0);
  const float* x = b.x.data<float>();
  for (int k = 0; k < 8; ++k) {
    const int c = k / 4;
    const float expect = (static_cast<float>(pixels[k]) / 255.f - opt.mean[c]) / opt.std[c];
    EXPECT_EQ(x[k], expect) << "pixel " << k;
  }
  EXPECT_NEAR(x[0], -2.5, 1e-6);  // (0 - 0.5) / 0.2
  EXPECT_NEAR(x[1], -1.5, 1e-6);  // (0.2 - 0.5) / 0.2
  EXPECT_NEAR(x[3], 2.5, 1e-6);   // (1 - 0.5) / 0.2
  EXPECT_NEAR(x[4], -0.5, 1e-6);  // (0 - 0.25) / 0.5
  EXPECT_NEAR(x[5], 0.3, 1e-6);   // (0.4 - 0.25) / 0.5
  EXPECT_NEAR(x[7], 1.5, 1e-6);   // (1 - 0.25) / 0.5
  EXPECT_EQ(b.y.data<int32_t>()[0], 3);

  opt.mean.clear();
  opt.std.clear();
  const Batch raw = DataLoader(ds, opt).batch(0, 0);
  for (int k = 0; k < 8; ++k) EXPECT_EQ(raw.x.data<float>()[k], static_cast<float>(pixels[k]) / 255.f);
}

TEST(DataLoader, CropAndFlipShiftOrMirrorWithZeroFill) {
  constexpr int64_t kN = 256, kC = 2, kH = 8, kW = 7;
  constexpr int kPad = 4;
  const Dataset ds = synthetic(kN, kC, kH, kW);
  LoaderOptions opt;
  opt.batch_size = 32;
  opt.seed = 3;
  opt.random_crop = true;
  opt.crop_padding = kPad;
  opt.hflip = true;
  DataLoader loader(ds, opt);
  std::set<int> dys, dxs;
  int flips = 0;
  for (const Batch& batch : run_epoch(loader, 1)) {
    for (int64_t j = 0; j < batch.y.numel(); ++j) {
      const int64_t sample = batch.y.data<int32_t>()[j];
      const uint8_t* in = ds.images.data<uint8_t>() + sample * kC * kH * kW;
      std::vector<int> out(kC * kH * kW);
      for (size_t k = 0; k < out.size(); ++k) {
        out[k] = static_cast<int>(std::lround(batch.x.data<float>()[j * kC * kH * kW + k] * 255.f));
      }
      int matches = 0;
      for (int dy = -kPad; dy <= kPad; ++dy) {
        for (int dx = -kPad; dx <= kPad; ++dx) {
          for (const bool flip : {false, true}) {
            bool ok = true;
            for (int64_t c = 0; c < kC && ok; ++c) {
              for (int64_t y = 0; y < kH && ok; ++y) {
                for (int64_t x = 0; x < kW && ok; ++x) {
                  const int64_t sy = y + dy, sx = (flip ? kW - 1 - x : x) + dx;
                  const int expect = (sy >= 0 && sy < kH && sx >= 0 && sx < kW) ? in[(c * kH + sy) * kW + sx] : 0;
                  ok = out[(c * kH + y) * kW + x] == expect;
                }
              }
            }
            if (ok) {
              ++matches;
              dys.insert(dy);
              dxs.insert(dx);
              flips += flip;
            }
          }
        }
      }
      EXPECT_EQ(matches, 1) << "sample " << sample << " is not one shifted/flipped copy of its image";
    }
  }
  EXPECT_EQ(dys.size(), 9u);
  EXPECT_EQ(dxs.size(), 9u);
  EXPECT_GT(flips, kN * 3 / 10);
  EXPECT_LT(flips, kN * 7 / 10);
}

TEST(DataLoader, PaddingTakesTheNormalizedValueOfBlack) {
  Dataset ds = synthetic(1, 1, 2, 2);
  LoaderOptions opt;
  opt.batch_size = 1;
  opt.mean = {0.5f};
  opt.std = {0.25f};
  opt.random_crop = true;
  opt.crop_padding = 2;
  DataLoader loader(ds, opt);
  bool saw_pad = false;
  for (int64_t epoch = 0; epoch < 20; ++epoch) {
    const Batch b = loader.batch(epoch, 0);
    for (int64_t k = 0; k < 4; ++k) {
      const float v = b.x.data<float>()[k];
      if (v == (0.f - 0.5f) / 0.25f) saw_pad = true;
    }
  }
  EXPECT_TRUE(saw_pad);
}

TEST(DataLoader, StartEpochAndDestructionWithBatchesInFlight) {
  LoaderOptions opt = augmenting();
  opt.batch_size = 2;
  opt.prefetch = 6;
  const Dataset ds = synthetic(400);
  for (int round = 0; round < 20; ++round) {
    DataLoader loader(ds, opt);
    loader.start_epoch(round);
    Batch b;
    ASSERT_TRUE(loader.next(b));
    EXPECT_TRUE(same_tensor(b.x, loader.batch(round, 0).x));
    loader.start_epoch(round + 1, 5);
    ASSERT_TRUE(loader.next(b));
    EXPECT_EQ(b.index, 5);
    EXPECT_TRUE(same_tensor(b.x, loader.batch(round + 1, 5).x));
    loader.start_epoch(round + 2);
  }
}

TEST(DataLoader, OneEpochOfMnist) {
  const Dataset ds = load_mnist("data/mnist", Split::test);
  LoaderOptions opt;
  opt.batch_size = 128;
  opt.mean = {0.1307f};
  opt.std = {0.3081f};
  DataLoader loader(ds, opt);
  EXPECT_EQ(loader.batches_per_epoch(), 79);
  std::vector<int64_t> counts(10);
  Batch b;
  loader.start_epoch(0);
  int64_t batches = 0;
  while (loader.next(b)) {
    ++batches;
    for (int64_t i = 0; i < b.y.numel(); ++i) ++counts[b.y.data<int32_t>()[i]];
  }
  EXPECT_EQ(batches, 79);
  EXPECT_EQ(b.x.shape(), (Shape{10000 - 78 * 128, 1, 28, 28}));
  EXPECT_EQ(counts, (std::vector<int64_t>{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}));
}

TEST(DataLoader, RejectsBadOptionsAndDatasets) {
  const Dataset ds = synthetic(10);
  auto with = [&](auto edit) {
    LoaderOptions opt;
    edit(opt);
    return error_message<ValueError>([&] { DataLoader loader(ds, opt); });
  };
  EXPECT_NE(with([](LoaderOptions& o) { o.batch_size = 0; }).find("batch_size must be >= 1, got 0"), std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) {
              o.mean = {0.5f, 0.5f};
            }).find("mean has 2 values but std has 0"),
            std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) {
              o.mean = {0.5f};
              o.std = {0.5f};
            }).find("one value per channel (2"),
            std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) {
              o.mean = {0.5f, 0.5f};
              o.std = {0.5f, 0.f};
            }).find("std[1] must be finite and > 0"),
            std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) {
              o.mean = {0.5f, 0.5f};
              o.std = {-1.f, 0.5f};
            }).find("std[0]"),
            std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) { o.crop_padding = -1; }).find("crop_padding must be >= 0"), std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) { o.prefetch = -1; }).find("prefetch must be >= 0"), std::string::npos);
  EXPECT_NE(with([](LoaderOptions& o) {
              o.batch_size = 11;
              o.drop_last = true;
            }).find("leaves no batch"),
            std::string::npos);

  Dataset empty = synthetic(0);
  EXPECT_NE(error_message<ValueError>([&] { DataLoader loader(empty, {}); }).find("is empty"), std::string::npos);
  Dataset floats = ds;
  floats.images = ds.images.to(DType::f32);
  EXPECT_NE(error_message<DTypeError>([&] { DataLoader loader(floats, {}); }).find("images must be u8"),
            std::string::npos);
  Dataset flat = ds;
  flat.images = ds.images.reshape({10, -1});
  EXPECT_THROW(DataLoader(flat, {}), ShapeError);
  Dataset fewer = ds;
  fewer.labels = Tensor::zeros({9}, DType::i32);
  EXPECT_NE(error_message<ShapeError>([&] { DataLoader loader(fewer, {}); }).find("10 images but 9 labels"),
            std::string::npos);
  Dataset wide = ds;
  wide.labels = Tensor::zeros({10}, DType::u8);
  EXPECT_THROW(DataLoader(wide, {}), DTypeError);

  DataLoader loader(ds, {});
  EXPECT_THROW(loader.batch(0, 1), IndexError);
  EXPECT_THROW(loader.batch(-1, 0), ValueError);
  EXPECT_THROW(loader.start_epoch(-1), ValueError);
  EXPECT_THROW(loader.start_epoch(0, 2), IndexError);
}
