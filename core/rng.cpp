#include "core/rng.h"

#include <cmath>
#include <cstring>

namespace qforge {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::manual_seed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& w : s_) w = splitmix64(x);
  has_spare_ = false;
  spare_ = 0.0;
}

uint64_t Generator::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

uint64_t Generator::below(uint64_t n) {
  QF_CHECK(n > 0) << "Generator::below(0)";
  // Lemire's rejection on the top bits keeps the result unbiased.
  const uint64_t limit = (0 - n) % n;
  while (true) {
    uint64_t r = next_u64();
    if (r >= limit) return r % n;
  }
}

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1;
  do {
    u1 = uniform();
  } while (u1 <= 0.0);
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double th = 2.0 * M_PI * u2;
  spare_ = r * std::sin(th);
  has_spare_ = true;
  return r * std::cos(th);
}

Generator::State Generator::state() const {
  State st{};
  for (int i = 0; i < 4; ++i) st[i] = s_[i];
  std::memcpy(&st[4], &spare_, sizeof(double));
  st[5] = has_spare_ ? 1 : 0;
  return st;
}

void Generator::set_state(const State& st) {
  // Checked before anything changes: a bad state leaves the generator as it was.
  QF_CHECK((st[0] | st[1] | st[2] | st[3]) != 0) << "invalid generator state: all-zero xoshiro words";
  for (int i = 0; i < 4; ++i) s_[i] = st[i];
  std::memcpy(&spare_, &st[4], sizeof(double));
  has_spare_ = st[5] != 0;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

void uniform_(Tensor& t, double lo, double hi, Generator& g) {
  QF_CHECK(lo <= hi) << "uniform_: lo " << lo << " > hi " << hi;
  dispatch_floating(t.dtype(), "uniform_", [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(lo + (hi - lo) * g.uniform());
  });
}

void normal_(Tensor& t, double mean, double stddev, Generator& g) {
  QF_CHECK(stddev >= 0) << "normal_: negative stddev " << stddev;
  dispatch_floating(t.dtype(), "normal_", [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(mean + stddev * g.normal());
  });
}

int64_t fan_in(const Tensor& w) {
  QF_CHECK_SHAPE(w.ndim() >= 1) << "fan_in of a 0-d tensor";
  if (w.ndim() == 1) return w.size(0);
  int64_t f = w.size(1);
  for (int i = 2; i < w.ndim(); ++i) f *= w.size(i);
  return f;
}

void kaiming_uniform_(Tensor& w, double a, Generator& g) {
  const int64_t f = fan_in(w);
  QF_CHECK(f > 0) << "kaiming_uniform_: zero fan_in for " << w.desc();
  const double bound = std::sqrt(6.0 / ((1.0 + a * a) * static_cast<double>(f)));
  uniform_(w, -bound, bound, g);
}

void kaiming_normal_(Tensor& w, Generator& g) {
  const int64_t f = fan_in(w);
  QF_CHECK(f > 0) << "kaiming_normal_: zero fan_in for " << w.desc();
  normal_(w, 0.0, std::sqrt(2.0 / static_cast<double>(f)), g);
}

}  // namespace qforge
