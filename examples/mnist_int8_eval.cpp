// Loads an exported int8 model (mnist_qat writes out/mnist_qat/mnist_cnn_int8.h5)
// and evaluates it on the 10,000 MNIST test images with the int8 runtime
// alone: no autograd, nn or trainers are linked.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>

#include "core/parallel.h"
#include "data/loader.h"
#include "data/mnist.h"
#include "quant/kernels/kernels.h"
#include "quant/runtime/model.h"

using namespace qforge;

int main(int argc, char** argv) {
  cxxopts::Options options("mnist_int8_eval", "Evaluate an exported int8 model on the MNIST test set");
  options.add_options()("model", "int8 model file", cxxopts::value<std::string>()->default_value("out/mnist_qat/mnist_cnn_int8.h5"))(
      "data-dir", "directory with the MNIST IDX files",
      cxxopts::value<std::string>()->default_value(data::default_mnist_dir(QFORGE_SOURCE_DIR)))(
      "batch-size", "batch size", cxxopts::value<int64_t>()->default_value("256"))(
      "threads", "worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_int8_eval: %s (see --help)\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  try {
    const int threads = args["threads"].as<int>();
    QF_CHECK(threads >= 0) << "--threads must be >= 0";
    if (threads > 0) set_num_threads(threads);
    const std::string path = args["model"].as<std::string>();
    QF_CHECK_IO(std::filesystem::exists(path)) << "no model file '" << path << "' (run mnist_qat first)";
    const quant::runtime::Model model = quant::runtime::load_model(path);
    data::LoaderOptions lo;
    lo.batch_size = args["batch-size"].as<int64_t>();
    lo.shuffle = false;
    lo.mean = {0.1307f};
    lo.std = {0.3081f};
    data::DataLoader test(data::load_mnist(args["data-dir"].as<std::string>(), data::Split::test), lo);
    int64_t correct = 0, count = 0;
    data::Batch b;
    test.start_epoch(0);
    const auto t0 = std::chrono::steady_clock::now();
    while (test.next(b)) {
      const Tensor logits = model.run(b.x);
      const int64_t n = logits.size(0), k = logits.size(1);
      for (int64_t i = 0; i < n; ++i) {
        const float* row = logits.data<float>() + i * k;
        correct += (std::max_element(row, row + k) - row) == b.y.data<int32_t>()[i];
      }
      count += n;
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %zu ops, input [%lld, %lld, %lld], %s kernels, %d threads\n", path.c_str(), model.ops.size(),
                static_cast<long long>(model.input_shape[0]), static_cast<long long>(model.input_shape[1]),
                static_cast<long long>(model.input_shape[2]),
                quant::kernels::isa_name(quant::kernels::kernels().isa), num_threads());
    std::printf("int8 test accuracy: %.2f%% (%lld/%lld), %.0f images/s\n", 100.0 * correct / count,
                static_cast<long long>(correct), static_cast<long long>(count), count / sec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_int8_eval: %s\n", e.what());
    return 1;
  }
  return 0;
}
