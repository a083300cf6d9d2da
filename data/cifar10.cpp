#include "data/cifar10.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

namespace qforge::data {
namespace {

constexpr int64_t kChannels = 3;
constexpr int64_t kSide = 32;
constexpr int64_t kPixels = kChannels * kSide * kSide;
constexpr int64_t kRecord = 1 + kPixels;
constexpr int kClasses = 10;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Bytes in `path`, checked to be a non-empty whole number of records.
int64_t checked_size(const std::filesystem::path& path, const std::string& dir) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  QF_CHECK_IO(std::filesystem::exists(status))
      << "load_cifar10: missing " << path.filename().string() << " in directory '" << dir << "'";
  QF_CHECK_IO(std::filesystem::is_regular_file(status)) << path.string() << ": not a regular file";
  const auto bytes = std::filesystem::file_size(path, ec);
  QF_CHECK_IO(!ec) << path.string() << ": cannot read its size: " << ec.message();
  const int64_t size = static_cast<int64_t>(bytes);
  QF_CHECK_FORMAT(size > 0 && size % kRecord == 0)
      << path.string() << ": size " << size << " bytes is not a non-zero multiple of the " << kRecord
      << "-byte CIFAR-10 record (" << size / kRecord << " records + " << size % kRecord << " bytes)";
  return size;
}

// Reads the records of `path` into images [first, first + count) and labels.
void read_records(const std::filesystem::path& path, int64_t count, uint8_t* images, int32_t* labels) {
  errno = 0;
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  QF_CHECK_IO(f != nullptr) << path.string() << ": cannot open: " << std::strerror(errno);
  std::vector<uint8_t> buf(static_cast<size_t>(count * kRecord));
  const size_t got = std::fread(buf.data(), 1, buf.size(), f.get());
  QF_CHECK_IO(got == buf.size()) << path.string() << ": read " << got << " of " << buf.size() << " bytes"
                                 << (std::ferror(f.get()) ? std::string(": ") + std::strerror(errno) : "");
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* rec = buf.data() + i * kRecord;
    QF_CHECK_FORMAT(rec[0] < kClasses) << path.string() << ": record " << i << " has label " << int{rec[0]}
                                       << ", expected 0.." << kClasses - 1;
    labels[i] = rec[0];
    std::memcpy(images + i * kPixels, rec + 1, kPixels);
  }
}

}  // namespace

Dataset load_cifar10(const std::string& dir, Split split) {
  std::error_code ec;
  QF_CHECK_IO(std::filesystem::is_directory(dir, ec)) << "load_cifar10: '" << dir << "' is not a directory";
  std::vector<std::filesystem::path> files;
  if (split == Split::train) {
    for (int i = 1; i <= 5; ++i)
      files.push_back(std::filesystem::path(dir) / ("data_batch_" + std::to_string(i) + ".bin"));
  } else {
    files.push_back(std::filesystem::path(dir) / "test_batch.bin");
  }
  std::vector<int64_t> counts;
  int64_t n = 0;
  for (const auto& f : files) {
    counts.push_back(checked_size(f, dir) / kRecord);
    n += counts.back();
  }

  Dataset ds;
  ds.name = std::string("cifar10-") + split_name(split);
  ds.images = Tensor::empty({n, kChannels, kSide, kSide}, DType::u8);
  ds.labels = Tensor::empty({n}, DType::i32);
  int64_t first = 0;
  for (size_t k = 0; k < files.size(); ++k) {
    read_records(files[k], counts[k], ds.images.data<uint8_t>() + first * kPixels, ds.labels.data<int32_t>() + first);
    first += counts[k];
  }
  return ds;
}

std::vector<std::string> load_cifar10_class_names(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "batches.meta.txt";
  std::ifstream in(path);
  QF_CHECK_IO(in.is_open()) << "load_cifar10_class_names: cannot open " << path.string();
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    const size_t end = line.find_last_not_of(" \t\r\n");
    if (end == std::string::npos) continue;
    names.push_back(line.substr(0, end + 1));
  }
  QF_CHECK_IO(!in.bad()) << path.string() << ": read error";
  QF_CHECK_FORMAT(names.size() == kClasses)
      << path.string() << ": expected " << kClasses << " class names, found " << names.size();
  return names;
}

}  // namespace qforge::data
