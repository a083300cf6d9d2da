#include "data/mnist.h"

#include <filesystem>

#include "data/idx.h"

namespace qforge::data {
namespace {

constexpr int64_t kSide = 28;
constexpr int kClasses = 10;

// The path of `stem` or `stem`.gz in `dir`, preferring the gzipped file.
std::string find_idx(const std::filesystem::path& dir, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem}) {
    const std::filesystem::path p = dir / name;
    std::error_code ec;
    if (std::filesystem::exists(p, ec)) return p.string();
  }
  QF_THROW(IOError) << "load_mnist: missing " << stem << ".gz (or " << stem << ") in directory '" << dir.string()
                    << "'";
  return {};
}

}  // namespace

Dataset load_mnist(const std::string& dir, Split split) {
  std::error_code ec;
  QF_CHECK_IO(std::filesystem::is_directory(dir, ec)) << "load_mnist: '" << dir << "' is not a directory";
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string images_path = find_idx(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx(dir, prefix + "-labels-idx1-ubyte");

  const Tensor images = read_idx(images_path, 3);
  QF_CHECK_FORMAT(images.size(1) == kSide && images.size(2) == kSide)
      << images_path << ": MNIST images must be 28x28, got " << images.size(1) << "x" << images.size(2);
  const Tensor raw_labels = read_idx(labels_path, 1);
  const int64_t n = images.size(0);
  QF_CHECK_FORMAT(raw_labels.size(0) == n) << "load_mnist: " << images_path << " holds " << n << " images but "
                                           << labels_path << " holds " << raw_labels.size(0) << " labels";

  Dataset ds;
  ds.name = std::string("mnist-") + split_name(split);
  ds.images = images.reshape({n, 1, kSide, kSide});
  ds.labels = Tensor::empty({n}, DType::i32);
  const uint8_t* src = raw_labels.data<uint8_t>();
  int32_t* dst = ds.labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    QF_CHECK_FORMAT(src[i] < kClasses) << labels_path << ": label " << int{src[i]} << " at index " << i
                                       << " is outside 0.." << kClasses - 1;
    dst[i] = src[i];
  }
  return ds;
}

std::string default_mnist_dir(const std::string& source_dir) {
  for (const std::string& d : {std::string("data/mnist"), source_dir + "/data/mnist"})
    if (std::filesystem::exists(d + "/t10k-labels-idx1-ubyte.gz") || std::filesystem::exists(d + "/t10k-labels-idx1-ubyte"))
      return d;
  return "data/mnist";
}

}  // namespace qforge::data
