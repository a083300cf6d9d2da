// Deployment with the int8 runtime alone (qforge::runtime: no autograd, nn,
// trainers or yaml-cpp): loads an exported model and classifies one image.
//
//   deploy MODEL IMAGE
// IMAGE is a binary PGM (P5, 8-bit gray, for one-channel models) or raw
// bytes C x H x W in the model's input shape. The model's recorded input
// normalization turns the pixels into its input.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "quant/runtime/model.h"

using namespace qforge;

namespace {

/// The pixels of a P5 PGM or of a raw file, as u8 [1, C, H, W].
Tensor read_image(const std::string& path, const std::array<int64_t, 3>& shape) {
  std::ifstream f(path, std::ios::binary);
  QF_CHECK(f.good()) << "cannot open image '" << path << "'";
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const int64_t want = shape[0] * shape[1] * shape[2];
  const char* pixels = bytes.data();
  int64_t count = static_cast<int64_t>(bytes.size());
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == '5') {
    std::istringstream head(std::string(bytes.begin(), bytes.begin() + std::min<size_t>(bytes.size(), 64)));
    std::string magic;
    int64_t w = 0, h = 0, maxval = 0;
    head >> magic >> w >> h >> maxval;
    QF_CHECK(head && maxval == 255) << path << ": only 8-bit P5 PGM files are read";
    const int64_t start = static_cast<int64_t>(head.tellg()) + 1;  // one whitespace byte after maxval
    QF_CHECK(shape[0] == 1 && h == shape[1] && w == shape[2])
        << path << " is " << w << "x" << h << " gray; the model takes " << shape[0] << "x" << shape[1] << "x"
        << shape[2];
    pixels += start;
    count -= start;
  }
  QF_CHECK(count == want) << path << " holds " << count << " pixel bytes; the model takes " << want;
  Tensor t = Tensor::empty({1, shape[0], shape[1], shape[2]}, DType::u8);
  std::memcpy(t.raw(), pixels, static_cast<size_t>(want));
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: deploy MODEL IMAGE\n");
    return 2;
  }
  try {
    const quant::runtime::Model model = quant::runtime::load_model(argv[1]);
    const Tensor logits = model.run(model.normalize_pixels(read_image(argv[2], model.input_shape)));
    const int64_t k = logits.size(1);
    const float* z = logits.data<float>();
    const int64_t best = std::max_element(z, z + k) - z;
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += std::exp(static_cast<double>(z[i] - z[best]));
    std::printf("class %lld (p %.3f)\n", static_cast<long long>(best), 1.0 / sum);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "deploy: %s\n", e.what());
    return 2;
  }
}
