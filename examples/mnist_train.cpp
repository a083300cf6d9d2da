// Trains mnist_cnn (../shared/bench/README.md) in FP32 on MNIST with Adam and
// a cosine learning-rate decay, evaluating on the 10,000 test images after
// every epoch. Checkpoints and metrics go to --out; --resume continues an
// interrupted run from its last checkpoint.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>

#include "core/parallel.h"
#include "data/mnist.h"
#include "nn/zoo.h"
#include "trainers/trainer.h"

using namespace qforge;

int main(int argc, char** argv) {
  cxxopts::Options options("mnist_train", "Train mnist_cnn in FP32 on MNIST");
  options.add_options()("epochs", "epochs", cxxopts::value<int64_t>()->default_value("2"))(
      "batch-size", "batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "lr", "peak learning rate (Adam, cosine decay)", cxxopts::value<double>()->default_value("0.002"))(
      "threads", "worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "data-dir", "directory with the MNIST IDX files", cxxopts::value<std::string>()->default_value(data::default_mnist_dir(QFORGE_SOURCE_DIR)))(
      "out", "output directory for checkpoints and metrics.jsonl",
      cxxopts::value<std::string>()->default_value("out/mnist_fp32"))(
      "seed", "seed for weights and data order", cxxopts::value<uint64_t>()->default_value("0"))(
      "resume", "continue from the newest checkpoint in --out")(
      "max-steps", "stop each epoch after this many steps (0 = full epochs)",
      cxxopts::value<int64_t>()->default_value("0"))("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_train: %s (see --help)\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  try {
    const int64_t epochs = args["epochs"].as<int64_t>(), batch = args["batch-size"].as<int64_t>();
    const double lr = args["lr"].as<double>();
    const int threads = args["threads"].as<int>();
    QF_CHECK(epochs >= 1) << "--epochs must be >= 1, got " << epochs;
    QF_CHECK(batch >= 1) << "--batch-size must be >= 1, got " << batch;
    QF_CHECK(lr > 0) << "--lr must be > 0, got " << lr;
    QF_CHECK(threads >= 0) << "--threads must be >= 0, got " << threads;
    if (threads > 0) set_num_threads(threads);
    const uint64_t seed = args["seed"].as<uint64_t>();
    const std::string dir = args["data-dir"].as<std::string>();

    data::LoaderOptions lo;
    lo.batch_size = batch;
    lo.seed = seed;
    lo.mean = {0.1307f};
    lo.std = {0.3081f};
    auto train = std::make_shared<data::DataLoader>(data::load_mnist(dir, data::Split::train), lo);
    lo.shuffle = false;
    lo.batch_size = std::max<int64_t>(batch, 256);
    auto test = std::make_shared<data::DataLoader>(data::load_mnist(dir, data::Split::test), lo);

    Generator init(seed);
    manual_seed(seed + 1);
    auto model = nn::make_model("mnist_cnn", {}, init);
    auto opt = std::make_shared<nn::Adam>(model->parameters(), nn::AdamOptions{.lr = lr});
    const int64_t max_steps = args["max-steps"].as<int64_t>();
    const int64_t per_epoch = max_steps > 0 ? std::min(max_steps, train->batches_per_epoch()) : train->batches_per_epoch();
    auto sched = std::make_shared<nn::CosineLr>(lr, epochs * per_epoch);

    trainers::TrainerOptions to;
    to.epochs = epochs;
    to.out_dir = args["out"].as<std::string>();
    to.resume = args.count("resume") > 0;
    to.max_steps_per_epoch = max_steps;
    std::printf("mnist_train: mnist_cnn (%lld parameters), %lld epochs of %lld steps, batch %lld, %s, %d threads\n",
                static_cast<long long>(model->num_parameters()), static_cast<long long>(epochs),
                static_cast<long long>(per_epoch), static_cast<long long>(batch), sched->describe().c_str(),
                num_threads());
    trainers::Trainer trainer(model, opt, sched, train, test, to);
    auto results = trainer.fit();
    const auto final_eval = results.empty() ? trainer.evaluate(*test) : results.back().test;
    std::printf("final test accuracy: %.2f%% (%lld/%lld)\n", final_eval.accuracy,
                static_cast<long long>(final_eval.correct), static_cast<long long>(final_eval.count));
    std::printf("checkpoints and metrics in %s\n", to.out_dir.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnist_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
