// Fits a two-layer network to a synthetic 3-class spiral with qforge's
// autograd and plain SGD, then prints the training accuracy.
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>

#include "autograd/ops.h"
#include "core/parallel.h"

using namespace qforge;
using namespace qforge::autograd;

int main(int argc, char** argv) {
  cxxopts::Options options("fit_two_layer", "Fit a two-layer MLP to a synthetic spiral with qforge autograd");
  options.add_options()("steps", "SGD steps", cxxopts::value<int>()->default_value("1500"))(
      "hidden", "hidden units", cxxopts::value<int>()->default_value("64"))(
      "lr", "learning rate", cxxopts::value<double>()->default_value("0.5"))(
      "seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "threads", "worker threads", cxxopts::value<int>()->default_value("0"))("h,help", "show help");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fit_two_layer: %s\n", e.what());
    return 2;
  }
  if (args.count("help")) {
    std::puts(options.help().c_str());
    return 0;
  }
  try {
    const int steps = args["steps"].as<int>(), hidden = args["hidden"].as<int>();
    const double lr = args["lr"].as<double>();
    QF_CHECK(steps >= 1 && hidden >= 1 && lr > 0) << "steps, hidden and lr must be positive";
    if (args["threads"].as<int>() > 0) set_num_threads(args["threads"].as<int>());
    Generator gen(args["seed"].as<uint64_t>());

    // 3 interleaved spiral arms of 200 points each, with noise.
    const int per = 200, classes = 3, n = per * classes;
    Tensor x = Tensor::empty({n, 2});
    Tensor y = Tensor::empty({n}, DType::i32);
    for (int c = 0; c < classes; ++c)
      for (int i = 0; i < per; ++i) {
        const double r = static_cast<double>(i) / per;
        const double t = c * 4.0 + 4.0 * r + 0.2 * gen.normal();
        x.data<float>()[(c * per + i) * 2] = static_cast<float>(r * std::sin(t));
        x.data<float>()[(c * per + i) * 2 + 1] = static_cast<float>(r * std::cos(t));
        y.data<int32_t>()[c * per + i] = c;
      }

    Variable w1(Tensor::empty({hidden, 2}), true), b1(Tensor::zeros({hidden}), true);
    Variable w2(Tensor::empty({classes, hidden}), true), b2(Tensor::zeros({classes}), true);
    kaiming_uniform_(w1.value(), std::sqrt(5.0), gen);
    kaiming_uniform_(w2.value(), std::sqrt(5.0), gen);
    std::vector<Variable> params = {w1, b1, w2, b2};
    Variable input(x);

    auto forward = [&] { return linear(relu(linear(input, w1, b1)), w2, b2); };
    std::printf("fitting a 2-%d-%d MLP to a %d-point spiral, %d SGD steps, lr %.3g\n", hidden, classes, n, steps,
                lr);
    for (int step = 1; step <= steps; ++step) {
      Variable loss = cross_entropy(forward(), y);
      for (auto& p : params) p.zero_grad();
      loss.backward();
      for (auto& p : params) p.value().vec<float>() -= static_cast<float>(lr) * p.grad().vec<float>();
      if (step == 1 || step % (steps / 5 > 0 ? steps / 5 : 1) == 0)
        std::printf("step %5d  loss %.4f\n", step, loss.value().item());
    }
    NoGradGuard ng;
    Tensor logits = forward().value();
    int correct = 0;
    for (int i = 0; i < n; ++i) {
      int best = 0;
      for (int c = 1; c < classes; ++c)
        if (logits.data<float>()[i * classes + c] > logits.data<float>()[i * classes + best]) best = c;
      correct += best == y.data<int32_t>()[i];
    }
    std::printf("training accuracy: %.1f%% (%d of %d)\n", 100.0 * correct / n, correct, n);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "fit_two_layer: %s\n", e.what());
    return 2;
  }
}
