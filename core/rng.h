#pragma once
// Seeded random numbers: reproducible across runs, platforms and thread counts
// (tensors are always filled in one sequential stream).

#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace qforge {

/// xoshiro256** generator seeded through splitmix64, with its own uniform and
/// Box-Muller normal transforms (std:: distributions differ between library
/// versions). The whole state is exposed for checkpoints.
class Generator {
 public:
  /// The serializable state: 4 words of xoshiro state, then the cached normal
  /// (as bits) and a flag saying whether it is valid.
  using State = std::array<uint64_t, 6>;

  explicit Generator(uint64_t seed = 0) { manual_seed(seed); }
  void manual_seed(uint64_t seed);

  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform integer in [0, n), unbiased; n > 0.
  uint64_t below(uint64_t n);
  /// Standard normal.
  double normal();

  State state() const;
  void set_state(const State& s);

 private:
  std::array<uint64_t, 4> s_{};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// The process-wide generator used when no generator is passed.
Generator& default_generator();
/// Seeds the default generator.
void manual_seed(uint64_t seed);

/// In-place fills of a floating tensor (f32 or f64).
void uniform_(Tensor& t, double lo, double hi, Generator& g = default_generator());
void normal_(Tensor& t, double mean, double stddev, Generator& g = default_generator());

/// fan_in of a weight tensor: size(1) times the product of sizes from axis 2
/// (PyTorch's definition); a 1-d tensor uses size(0).
int64_t fan_in(const Tensor& w);
/// PyTorch's kaiming_uniform_(a): bound = sqrt(6 / ((1 + a^2) * fan_in)). The
/// default a = sqrt(5) is what nn.Linear and nn.Conv2d use for weights.
void kaiming_uniform_(Tensor& w, double a = 2.23606797749979, Generator& g = default_generator());
/// kaiming_normal_ with ReLU gain: std = sqrt(2 / fan_in).
void kaiming_normal_(Tensor& w, Generator& g = default_generator());

}  // namespace qforge
