#include "core/archive.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <thread>
#include <vector>

using namespace qforge;
namespace fs = std::filesystem;

namespace {

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "qforge_archive_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<std::string> dir_entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// A tensor of element type T whose elements have exactly the bit patterns in `bits`.
template <class T, class Bits>
Tensor from_bits(const std::vector<Bits>& bits, const Shape& shape) {
  static_assert(sizeof(T) == sizeof(Bits));
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  EXPECT_EQ(static_cast<size_t>(t.numel()), bits.size());
  std::memcpy(t.raw(), bits.data(), t.nbytes());
  return t;
}

void expect_same_tensor(const Tensor& got, const Tensor& want, const std::string& name) {
  ASSERT_TRUE(got.defined()) << name;
  EXPECT_EQ(got.dtype(), want.dtype()) << name;
  EXPECT_EQ(got.shape(), want.shape()) << name;
  ASSERT_EQ(got.nbytes(), want.nbytes()) << name;
  if (want.nbytes() > 0) {
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << name;
  }
}

void expect_same_archive(const Archive& got, const Archive& want) {
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (const auto& [name, t] : want.tensors) expect_same_tensor(got.tensor(name), t, name);
  EXPECT_EQ(got.ints, want.ints);
  ASSERT_EQ(got.floats.size(), want.floats.size());
  for (const auto& [name, v] : want.floats) {
    EXPECT_EQ(std::bit_cast<uint64_t>(got.get_float(name)), std::bit_cast<uint64_t>(v)) << name;
  }
  EXPECT_EQ(got.strings, want.strings);
}

/// Replaces the first occurrence of `from` in `bytes` by `to` (same length); false when absent.
bool patch(std::string& bytes, const std::string& from, const std::string& to) {
  const size_t at = bytes.find(from);
  if (at == std::string::npos) return false;
  bytes.replace(at, to.size(), to);
  return true;
}

template <class E, class Fn>
std::string expect_throw(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "no exception";
  return {};
}

Archive sample_archive() {
  Archive a;
  a.tensors["model/conv1.weight"] = Tensor::arange(24).reshape({2, 3, 2, 2});
  a.tensors["model/fc.bias"] = Tensor::full({5}, -1.5, DType::f64);
  a.ints["epoch"] = 7;
  a.floats["schedule/lr"] = 0.05;
  a.strings["recipe"] = "lenet5_qat";
  return a;
}

TEST_F(ArchiveTest, RoundTripsEveryDtypeBitExact) {
  Archive a;
  a.tensors["f32"] = from_bits<float>(std::vector<uint32_t>{0x7fc00001u, 0xffa00005u, 0x80000000u, 0x00000001u,
                                                            0x7f800000u, 0xff800000u, 0x3f800000u, 0x007fffffu},
                                      {2, 4});
  a.tensors["f64"] =
      from_bits<double>(std::vector<uint64_t>{0x7ff8000000000123ull, 0xfff4000000000001ull, 0x8000000000000000ull,
                                              0x1ull, 0x7ff0000000000000ull, 0x3fb999999999999aull},
                        {3, 1, 2});
  std::vector<int8_t> i8;
  std::vector<uint8_t> u8;
  for (int v = -128; v < 128; ++v) i8.push_back(static_cast<int8_t>(v));
  for (int v = 0; v < 256; ++v) u8.push_back(static_cast<uint8_t>(v));
  a.tensors["i8"] = Tensor::from_vector(i8, {16, 16});
  a.tensors["u8"] = Tensor::from_vector(u8, {256});
  a.tensors["i32"] = Tensor::from_vector(
      std::vector<int32_t>{std::numeric_limits<int32_t>::min(), -1, 0, 1, std::numeric_limits<int32_t>::max(), 42},
      {2, 3});
  save_archive(path("dtypes.h5"), a);
  const Archive b = load_archive(path("dtypes.h5"));
  EXPECT_EQ(b.source, path("dtypes.h5"));
  expect_same_archive(b, a);
}

TEST_F(ArchiveTest, RoundTripsZeroDimAndZeroSizeTensors) {
  Archive a;
  a.tensors["scalar_f64"] = Tensor::scalar(-0.0, DType::f64);
  a.tensors["scalar_i8"] = Tensor::scalar(-7, DType::i8);
  a.tensors["empty_1d"] = Tensor::empty({0}, DType::u8);
  a.tensors["empty_3d"] = Tensor::empty({3, 0, 2}, DType::i32);
  a.tensors["empty_f32"] = Tensor::empty({0, 5}, DType::f32);
  save_archive(path("shapes.h5"), a);
  const Archive b = load_archive(path("shapes.h5"));
  expect_same_archive(b, a);
  EXPECT_EQ(b.tensor("scalar_f64").ndim(), 0);
  EXPECT_EQ(b.tensor("empty_3d").shape(), (Shape{3, 0, 2}));
}

TEST_F(ArchiveTest, RoundTripsNestedNames) {
  Archive a;
  for (const char* name : {"model/conv1.weight", "model/conv1.bias", "model/block.0/bn/running_mean",
                           "optimizer/state/0/exp_avg", "top"}) {
    a.tensors[name] = Tensor::full({2}, 1.0);
  }
  a.ints["rng/default/0"] = 1;
  a.ints["rng/default/1"] = 2;
  a.floats["optimizer/param_groups/0/lr"] = 0.1;
  a.strings["meta/model/name"] = "resnet8";
  save_archive(path("nested.h5"), a);
  expect_same_archive(load_archive(path("nested.h5")), a);
}

TEST_F(ArchiveTest, RoundTripsScalarsExactly) {
  Archive a;
  a.ints["min"] = std::numeric_limits<int64_t>::min();
  a.ints["max"] = std::numeric_limits<int64_t>::max();
  a.ints["minus_one"] = -1;
  a.ints["zero"] = 0;
  a.ints["rng_word"] = std::bit_cast<int64_t>(uint64_t{0xdeadbeefcafebabeull});
  a.floats["denorm"] = std::numeric_limits<double>::denorm_min();
  a.floats["neg_denorm"] = -std::numeric_limits<double>::denorm_min();
  a.floats["inf"] = std::numeric_limits<double>::infinity();
  a.floats["neg_inf"] = -std::numeric_limits<double>::infinity();
  a.floats["neg_zero"] = -0.0;
  a.floats["max"] = std::numeric_limits<double>::max();
  a.floats["nan_payload"] = std::bit_cast<double>(uint64_t{0x7ff80000000abcdeull});
  a.strings["empty"] = "";
  a.strings["ascii"] = "lenet5 qat, seed=0";
  a.strings["utf8"] = "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x80";
  a.strings["long"] = std::string(10000, 'x');
  save_archive(path("scalars.h5"), a);
  const Archive b = load_archive(path("scalars.h5"));
  expect_same_archive(b, a);
  EXPECT_EQ(std::bit_cast<uint64_t>(b.get_int("rng_word")), 0xdeadbeefcafebabeull);
}

TEST_F(ArchiveTest, OverwritesAndLeavesNoTempFile) {
  const std::string p = path("ckpt.h5");
  save_archive(p, sample_archive());
  Archive second;
  second.tensors["other"] = Tensor::full({3}, 2.0);
  second.ints["epoch"] = 8;
  save_archive(p, second);
  expect_same_archive(load_archive(p), second);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"ckpt.h5"});
}

TEST_F(ArchiveTest, MissingFileIsIOError) {
  const std::string p = path("missing.h5");
  const std::string msg = expect_throw<IOError>([&] { load_archive(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST_F(ArchiveTest, NonHdf5FileIsFormatError) {
  const std::string p = path("garbage.h5");
  std::string junk;
  for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>((i * 37 + 11) & 0xff));
  write_bytes(p, junk);
  const std::string msg = expect_throw<FormatError>([&] { load_archive(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST_F(ArchiveTest, TruncatedFileIsFormatError) {
  Archive a = sample_archive();
  a.tensors["big"] = Tensor::arange(1 << 14);
  const std::string good = path("good.h5");
  save_archive(good, a);
  const std::string bytes = read_bytes(good);
  for (size_t keep : {bytes.size() / 2, bytes.size() / 4, bytes.size() - 1, size_t{100}}) {
    const std::string p = path("truncated.h5");
    write_bytes(p, bytes.substr(0, keep));
    const std::string msg = expect_throw<FormatError>([&] { load_archive(p); });
    EXPECT_NE(msg.find(p), std::string::npos) << "keep=" << keep << ": " << msg;
  }
}

TEST_F(ArchiveTest, ForeignHdf5FileIsFormatError) {
  const std::string good = path("good.h5");
  save_archive(good, sample_archive());
  std::string bytes = read_bytes(good);
  ASSERT_TRUE(patch(bytes, "qforge_archive_version", "xforge_archive_version"));
  const std::string p = path("foreign.h5");
  write_bytes(p, bytes);
  const std::string msg = expect_throw<FormatError>([&] { load_archive(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a qforge archive"), std::string::npos) << msg;
}

TEST_F(ArchiveTest, UnsupportedDatasetTypeIsFormatErrorNamingIt) {
  Archive a;
  a.tensors["model/idx"] = Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, {3});
  const std::string good = path("good.h5");
  save_archive(good, a);
  std::string bytes = read_bytes(good);
  // The datatype message of a little-endian signed 32-bit integer; clearing the sign bit makes it u32.
  const std::string i32_type("\x10\x08\x00\x00\x04\x00\x00\x00\x00\x00\x20\x00", 12);
  const std::string u32_type("\x10\x00\x00\x00\x04\x00\x00\x00\x00\x00\x20\x00", 12);
  ASSERT_TRUE(patch(bytes, i32_type, u32_type));
  const std::string p = path("u32.h5");
  write_bytes(p, bytes);
  const std::string msg = expect_throw<FormatError>([&] { load_archive(p); });
  EXPECT_NE(msg.find("tensors/model/idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST_F(ArchiveTest, ADatasetDeclaringFarMoreThanItStoresIsFormatError) {
  // 12345 bytes stored; the patched dataspace declares 12345 * 2^24 (about
  // 200 GB). The loader must refuse before allocating, naming the dataset.
  Archive a;
  a.tensors["big"] = Tensor::zeros({12345}, DType::u8);
  const std::string good = path("good.h5");
  save_archive(good, a);
  std::string bytes = read_bytes(good);
  const std::string dim("\x39\x30\x00\x00\x00\x00\x00\x00", 8), huge("\x00\x00\x00\x39\x30\x00\x00\x00", 8);
  int patched = 0;
  while (patch(bytes, dim, huge)) ++patched;  // the size and the maximum size
  ASSERT_GE(patched, 1);
  const std::string p = path("huge.h5");
  write_bytes(p, bytes);
  const std::string msg = expect_throw<FormatError>([&] { load_archive(p); });
  EXPECT_NE(msg.find("big"), std::string::npos) << msg;
  EXPECT_NE(msg.find("declares"), std::string::npos) << msg;
}

TEST_F(ArchiveTest, GettersNameTheMissingKeyAndFile) {
  const std::string p = path("ckpt.h5");
  save_archive(p, sample_archive());
  const Archive a = load_archive(p);
  EXPECT_EQ(a.get_int("epoch"), 7);
  EXPECT_EQ(a.get_float("schedule/lr"), 0.05);
  EXPECT_EQ(a.get_string("recipe"), "lenet5_qat");
  EXPECT_EQ(a.tensor("model/fc.bias").dtype(), DType::f64);
  for (const std::string& msg : {expect_throw<FormatError>([&] { a.tensor("model/conv9.weight"); }),
                                 expect_throw<FormatError>([&] { a.get_int("model/conv9.weight"); }),
                                 expect_throw<FormatError>([&] { a.get_float("model/conv9.weight"); }),
                                 expect_throw<FormatError>([&] { a.get_string("model/conv9.weight"); })}) {
    EXPECT_NE(msg.find("'model/conv9.weight'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
}

TEST_F(ArchiveTest, FailedSaveThrowsIOErrorAndKeepsTarget) {
  const std::string missing_dir = path("no/such/dir/ckpt.h5");
  const std::string msg = expect_throw<IOError>([&] { save_archive(missing_dir, sample_archive()); });
  EXPECT_NE(msg.find(missing_dir), std::string::npos) << msg;

  const std::string p = path("ckpt.h5");
  save_archive(p, sample_archive());
  const std::string before = read_bytes(p);
  Archive bad = sample_archive();
  bad.tensors["zz_too_many_dims"] = Tensor::empty(Shape(33, 1));
  const std::string msg2 = expect_throw<IOError>([&] { save_archive(p, bad); });
  EXPECT_NE(msg2.find(p), std::string::npos) << msg2;
  EXPECT_EQ(read_bytes(p), before);

  fs::create_directory(path("a_dir"));
  write_bytes(path("a_dir/keep"), "x");
  const std::string msg3 = expect_throw<IOError>([&] { save_archive(path("a_dir"), sample_archive()); });
  EXPECT_NE(msg3.find(path("a_dir")), std::string::npos) << msg3;
  EXPECT_EQ(dir_entries(), (std::vector<std::string>{"a_dir", "ckpt.h5"}));
}

TEST_F(ArchiveTest, InvalidNamesAreValueErrorsBeforeWriting) {
  const std::string p = path("ckpt.h5");
  for (const std::string& name : {std::string(""), std::string("/a"), std::string("a/"), std::string("a//b"),
                                  std::string("a/./b"), std::string("a\0b", 3)}) {
    Archive a;
    a.ints[name] = 1;
    const std::string msg = expect_throw<ValueError>([&] { save_archive(p, a); });
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
  Archive prefix;
  prefix.tensors["model/fc"] = Tensor::full({1}, 1.0);
  prefix.tensors["model/fc/weight"] = Tensor::full({1}, 1.0);
  EXPECT_THROW(save_archive(p, prefix), ValueError);
  Archive undefined;
  undefined.tensors["w"] = Tensor();
  EXPECT_THROW(save_archive(p, undefined), ValueError);
  Archive nul;
  nul.strings["s"] = std::string("a\0b", 3);
  EXPECT_THROW(save_archive(p, nul), ValueError);
  EXPECT_TRUE(dir_entries().empty());
}

TEST_F(ArchiveTest, ConcurrentSavesAndLoads) {
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      Archive a = sample_archive();
      a.ints["thread"] = i;
      const std::string p = path("t" + std::to_string(i) + ".h5");
      for (int round = 0; round < 5; ++round) {
        save_archive(p, a);
        ok[i] += load_archive(p).get_int("thread") == i;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, (std::vector<int>{5, 5, 5, 5}));
}

}  // namespace
