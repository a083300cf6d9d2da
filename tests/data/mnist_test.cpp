#include "data/mnist.h"

#include <gtest/gtest.h>

#include <array>

#include "tests/data/data_test_util.h"

using namespace qforge;
using namespace qforge::data;
using namespace qforge::data::testing;

namespace {

// The tests run from the repository root.
const char* const kMnistDir = "data/mnist";

std::array<int64_t, 10> label_counts(const Dataset& ds) {
  std::array<int64_t, 10> counts{};
  const int32_t* y = ds.labels.data<int32_t>();
  for (int64_t i = 0; i < ds.size(); ++i) ++counts.at(static_cast<size_t>(y[i]));
  return counts;
}

// Writes a small MNIST split named `prefix` (train or t10k) into `dir`.
void write_split(const TempDir& dir, const std::string& prefix, uint32_t n_images, uint32_t n_labels,
                 uint32_t side = 28, uint8_t bad_label = 0, bool gz = false) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n_images) * side * side);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 31);
  std::vector<uint8_t> labels(n_labels);
  for (uint32_t i = 0; i < n_labels; ++i) labels[i] = static_cast<uint8_t>(i % 10);
  if (bad_label && n_labels > 1) labels[1] = bad_label;
  const std::string suffix = gz ? ".gz" : "";
  const auto write = gz ? write_gz : write_raw;
  write(dir.file(prefix + "-images-idx3-ubyte" + suffix), idx_bytes({n_images, side, side}, pixels));
  write(dir.file(prefix + "-labels-idx1-ubyte" + suffix), idx_bytes({n_labels}, labels));
}

}  // namespace

TEST(Mnist, TestSplitMatchesTheReadme) {
  const Dataset ds = load_mnist(kMnistDir, Split::test);
  EXPECT_EQ(ds.name, "mnist-test");
  EXPECT_EQ(ds.size(), 10000);
  EXPECT_EQ(ds.images.dtype(), DType::u8);
  EXPECT_EQ(ds.images.shape(), (Shape{10000, 1, 28, 28}));
  EXPECT_EQ(ds.labels.dtype(), DType::i32);
  EXPECT_EQ(ds.labels.shape(), (Shape{10000}));
  EXPECT_EQ(label_counts(ds), (std::array<int64_t, 10>{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}));
  EXPECT_EQ(ds.labels.data<int32_t>()[0], 7);
  check_dataset(ds, "test");
}

TEST(Mnist, TrainSplitMatchesTheReadme) {
  const Dataset ds = load_mnist(kMnistDir, Split::train);
  EXPECT_EQ(ds.name, "mnist-train");
  EXPECT_EQ(ds.images.shape(), (Shape{60000, 1, 28, 28}));
  EXPECT_EQ(ds.labels.shape(), (Shape{60000}));
  EXPECT_EQ(label_counts(ds), (std::array<int64_t, 10>{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}));
  EXPECT_EQ(ds.labels.data<int32_t>()[0], 5);
}

TEST(Mnist, AcceptsRawAndGzipNames) {
  TempDir raw, gz;
  write_split(raw, "t10k", 3, 3);
  write_split(gz, "train", 4, 4, 28, 0, /*gz=*/true);
  const Dataset a = load_mnist(raw.str(), Split::test);
  EXPECT_EQ(a.images.shape(), (Shape{3, 1, 28, 28}));
  EXPECT_EQ(a.images.data<uint8_t>()[1], 31);
  EXPECT_EQ(a.labels.data<int32_t>()[2], 2);
  const Dataset b = load_mnist(gz.str(), Split::train);
  EXPECT_EQ(b.images.shape(), (Shape{4, 1, 28, 28}));
}

TEST(Mnist, MissingFileNamesFileAndDir) {
  TempDir dir;
  write_split(dir, "train", 2, 2);
  std::filesystem::remove(dir.file("train-labels-idx1-ubyte"));
  const std::string msg = error_message<IOError>([&] { load_mnist(dir.str(), Split::train); });
  EXPECT_NE(msg.find("train-labels-idx1-ubyte"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.str()), std::string::npos) << msg;
  const std::string test_msg = error_message<IOError>([&] { load_mnist(dir.str(), Split::test); });
  EXPECT_NE(test_msg.find("t10k-images-idx3-ubyte"), std::string::npos) << test_msg;
  EXPECT_THROW(load_mnist(dir.file("nowhere"), Split::train), IOError);
}

TEST(Mnist, CountMismatchIsFormatError) {
  TempDir dir;
  write_split(dir, "train", 3, 2);
  const std::string msg = error_message<FormatError>([&] { load_mnist(dir.str(), Split::train); });
  EXPECT_NE(msg.find("3 images"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 labels"), std::string::npos) << msg;
}

TEST(Mnist, WrongImageSizeIsFormatError) {
  TempDir dir;
  write_split(dir, "t10k", 2, 2, 27);
  const std::string msg = error_message<FormatError>([&] { load_mnist(dir.str(), Split::test); });
  EXPECT_NE(msg.find("28x28, got 27x27"), std::string::npos) << msg;
}

TEST(Mnist, LabelOutOfRangeIsFormatError) {
  TempDir dir;
  write_split(dir, "t10k", 2, 2, 28, /*bad_label=*/10);
  const std::string msg = error_message<FormatError>([&] { load_mnist(dir.str(), Split::test); });
  EXPECT_NE(msg.find("t10k-labels-idx1-ubyte: label 10 at index 1"), std::string::npos) << msg;
}
