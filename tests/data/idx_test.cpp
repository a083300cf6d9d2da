#include "data/idx.h"

#include <gtest/gtest.h>

#include <numeric>

#include "tests/data/data_test_util.h"

using namespace qforge;
using namespace qforge::data;
using namespace qforge::data::testing;

namespace {

std::vector<uint8_t> iota_bytes(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Bytes that deflate poorly, so that a change in the middle of the gzip stream hits coded data.
std::vector<uint8_t> noisy_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  uint32_t x = 12345;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

}  // namespace

TEST(Idx, ReadsRawFile) {
  TempDir dir;
  const std::string path = dir.file("images-idx3-ubyte");
  write_raw(path, idx_bytes({2, 3, 4}, iota_bytes(24)));
  const Tensor t = read_idx(path);
  EXPECT_EQ(t.dtype(), DType::u8);
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(t.data<uint8_t>()[i], i);
  EXPECT_EQ(read_idx(path, 3).shape(), (Shape{2, 3, 4}));
}

TEST(Idx, ReadsGzipFileWhateverItsName) {
  TempDir dir;
  const std::vector<uint8_t> payload = noisy_bytes(5 * 7);
  write_gz(dir.file("labels.gz"), idx_bytes({5, 7}, payload));
  write_gz(dir.file("labels-no-suffix"), idx_bytes({35}, payload));
  const Tensor a = read_idx(dir.file("labels.gz"), 2);
  EXPECT_EQ(a.shape(), (Shape{5, 7}));
  EXPECT_EQ(std::vector<uint8_t>(a.data<uint8_t>(), a.data<uint8_t>() + 35), payload);
  const Tensor b = read_idx(dir.file("labels-no-suffix"));
  EXPECT_EQ(b.shape(), (Shape{35}));
  EXPECT_EQ(std::vector<uint8_t>(b.data<uint8_t>(), b.data<uint8_t>() + 35), payload);
}

TEST(Idx, ReadsFourDimsAndEmptyPayload) {
  TempDir dir;
  write_raw(dir.file("a"), idx_bytes({1, 2, 1, 3}, iota_bytes(6, 10)));
  EXPECT_EQ(read_idx(dir.file("a")).shape(), (Shape{1, 2, 1, 3}));
  write_raw(dir.file("b"), idx_bytes({0, 28}, {}));
  EXPECT_EQ(read_idx(dir.file("b")).numel(), 0);
}

TEST(Idx, MissingFileIsIOError) {
  TempDir dir;
  const std::string msg = error_message<IOError>([&] { read_idx(dir.file("t10k-images-idx3-ubyte.gz")); });
  EXPECT_NE(msg.find("t10k-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
  const std::string dir_msg = error_message<IOError>([&] { read_idx(dir.str()); });
  EXPECT_NE(dir_msg.find("not a regular file"), std::string::npos) << dir_msg;
}

TEST(Idx, BadMagicIsFormatError) {
  TempDir dir;
  std::vector<uint8_t> bytes = idx_bytes({2}, {1, 2});
  bytes[0] = 0x1f;
  write_raw(dir.file("bad.idx"), bytes);
  const std::string msg = error_message<FormatError>([&] { read_idx(dir.file("bad.idx"), 1); });
  EXPECT_NE(msg.find("bad.idx: bad magic 0x1f000801, expected 0x00000801 (unsigned byte, 1 dim)"), std::string::npos)
      << msg;
}

TEST(Idx, OtherElementTypeIsFormatError) {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_bytes({1, 1, 1}, {0}, 0x09));
  const std::string msg = error_message<FormatError>([&] { read_idx(dir.file("train-images-idx3-ubyte.gz"), 3); });
  EXPECT_NE(msg.find("train-images-idx3-ubyte.gz: bad magic 0x00000903, expected 0x00000803 (unsigned byte, 3 dims)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("signed byte"), std::string::npos) << msg;
  write_raw(dir.file("floats"), idx_bytes({1}, {0, 0, 0, 0}, 0x0d));
  const std::string float_msg = error_message<FormatError>([&] { read_idx(dir.file("floats")); });
  EXPECT_NE(float_msg.find("float32"), std::string::npos) << float_msg;
}

TEST(Idx, WrongDimCountIsFormatError) {
  TempDir dir;
  write_raw(dir.file("labels"), idx_bytes({4}, {1, 2, 3, 4}));
  const std::string msg = error_message<FormatError>([&] { read_idx(dir.file("labels"), 3); });
  EXPECT_NE(msg.find("expected 0x00000803"), std::string::npos) << msg;
  std::vector<uint8_t> five = idx_bytes({1, 1, 1, 1}, {7});
  five[3] = 5;
  five.insert(five.begin() + 20, {0, 0, 0, 1});
  write_raw(dir.file("five"), five);
  EXPECT_THROW(read_idx(dir.file("five")), FormatError);
  std::vector<uint8_t> zero = {0, 0, 8, 0};
  write_raw(dir.file("zero"), zero);
  EXPECT_THROW(read_idx(dir.file("zero")), FormatError);
}

TEST(Idx, TruncatedPayloadIsFormatError) {
  TempDir dir;
  std::vector<uint8_t> bytes = idx_bytes({3, 4, 5}, iota_bytes(60));
  bytes.resize(bytes.size() - 10);
  for (const bool gz : {false, true}) {
    const std::string path = dir.file(gz ? "short.gz" : "short");
    gz ? write_gz(path, bytes) : write_raw(path, bytes);
    const std::string msg = error_message<FormatError>([&] { read_idx(path); });
    EXPECT_NE(msg.find(path + ": truncated: header says 3x4x5 = 60 bytes, file has 50"), std::string::npos) << msg;
  }
}

TEST(Idx, TruncatedHeaderIsFormatError) {
  TempDir dir;
  write_raw(dir.file("empty"), {});
  const std::string msg = error_message<FormatError>([&] { read_idx(dir.file("empty")); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  std::vector<uint8_t> bytes = idx_bytes({3, 4, 5}, {});
  bytes.resize(9);
  write_raw(dir.file("half-header"), bytes);
  const std::string half = error_message<FormatError>([&] { read_idx(dir.file("half-header")); });
  EXPECT_NE(half.find("needs 16 bytes, file has 9"), std::string::npos) << half;
}

TEST(Idx, CutGzipStreamIsFormatError) {
  TempDir dir;
  const std::string path = dir.file("cut.gz");
  write_gz(path, idx_bytes({100, 100}, noisy_bytes(10000)));
  std::vector<uint8_t> gz = read_raw(path);
  ASSERT_GT(gz.size(), 1000u);
  std::vector<uint8_t> half(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
  write_raw(path, half);
  const std::string msg = error_message<FormatError>([&] { read_idx(path); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gzip stream ends early"), std::string::npos) << msg;
  // All payload bytes present, but the gzip trailer (CRC and length) is cut off.
  std::vector<uint8_t> no_trailer(gz.begin(), gz.end() - 4);
  write_raw(path, no_trailer);
  const std::string trailer_msg = error_message<FormatError>([&] { read_idx(path); });
  EXPECT_NE(trailer_msg.find("truncated gzip stream"), std::string::npos) << trailer_msg;
}

TEST(Idx, CorruptGzipStreamIsFormatError) {
  TempDir dir;
  const std::string path = dir.file("corrupt.gz");
  write_gz(path, idx_bytes({100, 100}, noisy_bytes(10000)));
  std::vector<uint8_t> gz = read_raw(path);
  for (size_t i = gz.size() / 2; i < gz.size() / 2 + 16; ++i) gz[i] ^= 0x5a;
  write_raw(path, gz);
  const std::string msg = error_message<FormatError>([&] { read_idx(path); });
  EXPECT_NE(msg.find("corrupt.gz"), std::string::npos) << msg;
}

TEST(Idx, TrailingBytesAreFormatError) {
  TempDir dir;
  std::vector<uint8_t> bytes = idx_bytes({6}, iota_bytes(6));
  bytes.insert(bytes.end(), {9, 9, 9});
  for (const bool gz : {false, true}) {
    const std::string path = dir.file(gz ? "long.gz" : "long");
    gz ? write_gz(path, bytes) : write_raw(path, bytes);
    const std::string msg = error_message<FormatError>([&] { read_idx(path); });
    EXPECT_NE(msg.find(path + ": trailing bytes: header says 6 = 6 bytes, file has 9"), std::string::npos) << msg;
  }
}
