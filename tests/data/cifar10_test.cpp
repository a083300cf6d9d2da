#include "data/cifar10.h"

#include <gtest/gtest.h>

#include <array>

#include "tests/data/data_test_util.h"

using namespace qforge;
using namespace qforge::data;
using namespace qforge::data::testing;

namespace {

// The shared copy of the dataset, relative to the repository root (the tests' working directory).
const char* const kCifarDir = "../shared/data/cifar10";

constexpr size_t kRecord = 3073;

// `n` records whose label is (first + i) % 10 and whose pixel k is (first + i + k) % 256.
std::vector<uint8_t> records(int n, int first) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * kRecord);
  for (int i = 0; i < n; ++i) {
    uint8_t* rec = out.data() + static_cast<size_t>(i) * kRecord;
    rec[0] = static_cast<uint8_t>((first + i) % 10);
    for (size_t k = 0; k < kRecord - 1; ++k) rec[1 + k] = static_cast<uint8_t>((first + i + k) % 256);
  }
  return out;
}

// Training files of 1, 2, ..., 5 records and a test file of 3.
void write_synthetic(const TempDir& dir) {
  int first = 0;
  for (int b = 1; b <= 5; ++b) {
    write_raw(dir.file("data_batch_" + std::to_string(b) + ".bin"), records(b, first));
    first += b;
  }
  write_raw(dir.file("test_batch.bin"), records(3, 100));
}

std::array<int64_t, 10> label_counts(const Dataset& ds) {
  std::array<int64_t, 10> counts{};
  for (int64_t i = 0; i < ds.size(); ++i) ++counts.at(static_cast<size_t>(ds.labels.data<int32_t>()[i]));
  return counts;
}

}  // namespace

TEST(Cifar10, ReadsSyntheticSplits) {
  TempDir dir;
  write_synthetic(dir);
  const Dataset train = load_cifar10(dir.str(), Split::train);
  EXPECT_EQ(train.name, "cifar10-train");
  EXPECT_EQ(train.images.shape(), (Shape{15, 3, 32, 32}));
  EXPECT_EQ(train.labels.shape(), (Shape{15}));
  check_dataset(train, "test");
  for (int64_t i = 0; i < 15; ++i) {
    EXPECT_EQ(train.labels.data<int32_t>()[i], i % 10);
    const uint8_t* img = train.images.data<uint8_t>() + i * 3072;
    for (int64_t k : {int64_t{0}, int64_t{31}, int64_t{1024}, int64_t{2047}, int64_t{3071}}) {
      EXPECT_EQ(img[k], (i + k) % 256) << "sample " << i << " byte " << k;
    }
  }
  const Dataset test = load_cifar10(dir.str(), Split::test);
  EXPECT_EQ(test.images.shape(), (Shape{3, 3, 32, 32}));
  EXPECT_EQ(test.labels.data<int32_t>()[0], 0);
  EXPECT_EQ(test.images.data<uint8_t>()[5], 105);
}

TEST(Cifar10, WrongSizeIsFormatError) {
  TempDir dir;
  write_synthetic(dir);
  std::vector<uint8_t> bytes = records(2, 0);
  bytes.resize(bytes.size() - 1);
  write_raw(dir.file("test_batch.bin"), bytes);
  const std::string msg = error_message<FormatError>([&] { load_cifar10(dir.str(), Split::test); });
  EXPECT_NE(msg.find("test_batch.bin: size 6145 bytes"), std::string::npos) << msg;
  write_raw(dir.file("data_batch_4.bin"), {});
  const std::string empty = error_message<FormatError>([&] { load_cifar10(dir.str(), Split::train); });
  EXPECT_NE(empty.find("data_batch_4.bin: size 0 bytes"), std::string::npos) << empty;
}

TEST(Cifar10, BadLabelIsFormatError) {
  TempDir dir;
  write_synthetic(dir);
  std::vector<uint8_t> bytes = records(3, 0);
  bytes[2 * kRecord] = 10;
  write_raw(dir.file("data_batch_2.bin"), bytes);
  const std::string msg = error_message<FormatError>([&] { load_cifar10(dir.str(), Split::train); });
  EXPECT_NE(msg.find("data_batch_2.bin: record 2 has label 10"), std::string::npos) << msg;
}

TEST(Cifar10, MissingFileNamesFileAndDir) {
  TempDir dir;
  write_synthetic(dir);
  std::filesystem::remove(dir.file("data_batch_3.bin"));
  const std::string msg = error_message<IOError>([&] { load_cifar10(dir.str(), Split::train); });
  EXPECT_NE(msg.find("data_batch_3.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.str()), std::string::npos) << msg;
  EXPECT_NO_THROW(load_cifar10(dir.str(), Split::test));
  EXPECT_THROW(load_cifar10(dir.file("nowhere"), Split::test), IOError);
}

TEST(Cifar10, ClassNamesSkipEmptyLines) {
  TempDir dir;
  const std::string text = "airplane\nautomobile\nbird\ncat\r\ndeer\ndog\n\nfrog\nhorse\nship\ntruck\n\n\n";
  write_raw(dir.file("batches.meta.txt"), std::vector<uint8_t>(text.begin(), text.end()));
  const std::vector<std::string> names = load_cifar10_class_names(dir.str());
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "airplane");
  EXPECT_EQ(names[3], "cat");
  EXPECT_EQ(names[9], "truck");
  const std::string short_text = "airplane\nautomobile\n";
  write_raw(dir.file("batches.meta.txt"), std::vector<uint8_t>(short_text.begin(), short_text.end()));
  EXPECT_THROW(load_cifar10_class_names(dir.str()), FormatError);
  EXPECT_THROW(load_cifar10_class_names(dir.file("nowhere")), IOError);
}

TEST(Cifar10, RealFilesWhenPresent) {
  if (!std::filesystem::is_directory(kCifarDir)) GTEST_SKIP() << kCifarDir << " not found";
  const Dataset test = load_cifar10(kCifarDir, Split::test);
  EXPECT_EQ(test.images.shape(), (Shape{10000, 3, 32, 32}));
  EXPECT_EQ(label_counts(test), (std::array<int64_t, 10>{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000}));
  const Dataset train = load_cifar10(kCifarDir, Split::train);
  EXPECT_EQ(train.images.shape(), (Shape{50000, 3, 32, 32}));
  EXPECT_EQ(label_counts(train), (std::array<int64_t, 10>{5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000}));
  std::array<int64_t, 10> first_batch{};
  for (int64_t i = 0; i < 10000; ++i) ++first_batch.at(static_cast<size_t>(train.labels.data<int32_t>()[i]));
  EXPECT_EQ(first_batch, (std::array<int64_t, 10>{1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981}));
  const std::vector<std::string> names = load_cifar10_class_names(kCifarDir);
  EXPECT_EQ(names.front(), "airplane");
  EXPECT_EQ(names.back(), "truck");
}
