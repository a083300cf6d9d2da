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

  /// Seeded as by manual_seed(seed).
  explicit Generator(uint64_t seed = 0) { manual_seed(seed); }
  /// Resets the state from `seed` (expanded by splitmix64) and drops the cached
  /// normal: equal seeds give equal streams.
  void manual_seed(uint64_t seed);

  /// The next raw 64-bit output of xoshiro256**; advances the state one step.
  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform integer in [0, n), unbiased; n > 0.
  uint64_t below(uint64_t n);
  /// Standard normal.
  double normal();

  /// A copy of the whole state; set_state() of it continues the same stream.
  State state() const;
  /// Restores a state from state(). Throws ValueError when the four xoshiro words
  /// are all zero, leaving the generator unchanged.
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

/// Fills `t` in place, element by element in flat order, with
/// lo + (hi - lo) * g.uniform(). DTypeError unless f32 or f64; ValueError when
/// lo > hi or `t` is undefined.
void uniform_(Tensor& t, double lo, double hi, Generator& g = default_generator());
/// Fills `t` in place, element by element in flat order, with
/// mean + stddev * g.normal(). DTypeError unless f32 or f64; ValueError when
/// stddev < 0 or `t` is undefined.
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
