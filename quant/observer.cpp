#include "quant/observer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>

#include "core/parallel.h"

namespace qforge::quant {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// 16-byte SIMD vectors through the GCC/Clang vector extension: SSE2 on x86-64,
// NEON on Arm, with no ISA flags. Loads and stores go through memcpy (no
// alignment assumed).
template <class T>
struct Simd {
  typedef T V __attribute__((vector_size(16)));
  static constexpr int kWidth = 16 / sizeof(T);
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static V splat(T x) {
    V v = {};
    for (int k = 0; k < kWidth; ++k) v[k] = x;
    return v;
  }
  static V vmin(V a, V b) { return a < b ? a : b; }
  static V vmax(V a, V b) { return a > b ? a : b; }
};

// Min and max of x[0, n) folded into lo/hi, in one pass with four independent
// vector accumulators each. Returns false when x holds inf or NaN: x - x is 0
// for finite x and NaN otherwise, so the `bad` sums stay 0 only for finite
// data (the comparisons alone would skip a NaN).
template <class T>
bool minmax_block(const T* x, int64_t n, T& lo, T& hi) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int kAcc = 4, kStep = kAcc * S::kWidth;
  V l[kAcc], h[kAcc], bad[kAcc];
  for (int a = 0; a < kAcc; ++a) {
    l[a] = S::splat(lo);
    h[a] = S::splat(hi);
    bad[a] = S::splat(0);
  }
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    for (int a = 0; a < kAcc; ++a) {
      const V v = S::load(x + i + a * S::kWidth);
      l[a] = S::vmin(v, l[a]);
      h[a] = S::vmax(v, h[a]);
      bad[a] += v - v;
    }
  }
  T b = 0;
  for (; i < n; ++i) {
    const T v = x[i];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    b += v - v;
  }
  for (int a = 0; a < kAcc; ++a) {
    for (int k = 0; k < S::kWidth; ++k) {
      lo = l[a][k] < lo ? l[a][k] : lo;
      hi = h[a][k] > hi ? h[a][k] : hi;
      b += bad[a][k];
    }
  }
  return b == 0;
}

// Per-channel min/max of x viewed as [outer, channels, inner] (row-major).
// Blocks of `inner` values are contiguous and go through minmax_block. With
// inner == 1 (channels last) each row of channels is contiguous instead and
// updates the per-channel arrays vector-wise; other short blocks run scalar.
template <class T>
bool minmax_channels(const T* x, int64_t outer, int64_t channels, int64_t inner, std::vector<double>& mins,
                     std::vector<double>& maxs) {
  using S = Simd<T>;
  using V = typename S::V;
  std::vector<T> lo(channels, std::numeric_limits<T>::infinity());
  std::vector<T> hi(channels, -std::numeric_limits<T>::infinity());
  bool finite = true;
  if (inner >= 16) {
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t c = 0; c < channels; ++c) {
        finite &= minmax_block(x + (o * channels + c) * inner, inner, lo[c], hi[c]);
      }
    }
  } else if (inner == 1) {
    V bad = S::splat(0);
    T bad_tail = 0;
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * channels;
      int64_t c = 0;
      for (; c + S::kWidth <= channels; c += S::kWidth) {
        const V v = S::load(row + c);
        S::store(lo.data() + c, S::vmin(v, S::load(lo.data() + c)));
        S::store(hi.data() + c, S::vmax(v, S::load(hi.data() + c)));
        bad += v - v;
      }
      for (; c < channels; ++c) {
        const T v = row[c];
        lo[c] = v < lo[c] ? v : lo[c];
        hi[c] = v > hi[c] ? v : hi[c];
        bad_tail += v - v;
      }
    }
    for (int k = 0; k < S::kWidth; ++k) bad_tail += bad[k];
    finite = bad_tail == 0;
  } else {
    T bad = 0;
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t c = 0; c < channels; ++c) {
        const T* block = x + (o * channels + c) * inner;
        for (int64_t j = 0; j < inner; ++j) {
          const T v = block[j];
          lo[c] = v < lo[c] ? v : lo[c];
          hi[c] = v > hi[c] ? v : hi[c];
          bad += v - v;
        }
      }
    }
    finite = bad == 0;
  }
  mins.assign(lo.begin(), lo.end());
  maxs.assign(hi.begin(), hi.end());
  return finite;
}

// Adds the bin index of every x[i] to counts (bins over [lo, lo + bins / inv_w]).
// Four interleaved 32-bit sub-histograms break the store-to-load chains of
// runs of equal indices; they are flushed into the f64 counts every chunk.
template <class T>
void histogram_add(const T* x, int64_t n, double lo, double inv_w, int bins, std::vector<double>& counts) {
  constexpr int kCopies = 4;
  constexpr int64_t kChunk = int64_t{1} << 30;  // per copy at most 2^28 < 2^32
  std::vector<uint32_t> local(static_cast<size_t>(kCopies) * bins);
  const double top = bins - 1;
  auto index = [&](T v) {
    double t = (static_cast<double>(v) - lo) * inv_w;
    t = t > 0 ? t : 0;  // also maps NaN (0 * inf) to bin 0
    t = t < top ? t : top;
    return static_cast<int>(t);
  };
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = std::min(n, start + kChunk);
    std::fill(local.begin(), local.end(), 0u);
    int64_t i = start;
    for (; i + kCopies <= end; i += kCopies) {
      for (int k = 0; k < kCopies; ++k) ++local[static_cast<size_t>(k) * bins + index(x[i + k])];
    }
    for (; i < end; ++i) ++local[index(x[i])];
    for (int k = 0; k < kCopies; ++k) {
      for (int b = 0; b < bins; ++b) counts[b] += local[static_cast<size_t>(k) * bins + b];
    }
  }
}

Tensor f64_tensor(const std::vector<double>& v) { return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}); }

// Checks that s holds exactly `keys`, each a 1-D floating tensor, and returns
// their values in the order of `keys`.
std::vector<std::vector<double>> read_state(const std::map<std::string, Tensor>& s,
                                            const std::vector<std::string>& keys, const std::string& who) {
  std::ostringstream want;
  for (size_t i = 0; i < keys.size(); ++i) want << (i ? ", " : "") << '"' << keys[i] << '"';
  for (const auto& kv : s) {
    QF_CHECK(std::find(keys.begin(), keys.end(), kv.first) != keys.end())
        << who << " observer: load_state got unexpected key \"" << kv.first << "\" (expected " << want.str() << ")";
  }
  std::vector<std::vector<double>> out;
  for (const std::string& k : keys) {
    auto it = s.find(k);
    QF_CHECK(it != s.end()) << who << " observer: load_state is missing \"" << k << "\" (expected " << want.str()
                            << ")";
    const Tensor& t = it->second;
    QF_CHECK(t.defined() && is_floating(t.dtype()) && t.ndim() == 1)
        << who << " observer: load_state needs \"" << k << "\" as a 1-D f32/f64 tensor, got "
        << (t.defined() ? t.desc() : std::string("an undefined tensor"));
    out.push_back(t.to_vector());
  }
  return out;
}

bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double d) { return std::isfinite(d); });
}

QuantSpec with_per_channel(QuantSpec spec) {
  spec.per_channel = true;
  return spec;
}

// The per-tensor quantizer qparams_from_range() gives for [lo, hi].
QParams range_qparams(double lo, double hi, const QuantSpec& spec) {
  return qparams_from_range({static_cast<float>(lo)}, {static_cast<float>(hi)}, spec);
}

// Prefix moments of a histogram whose counts are uniform inside each bin:
// mass(x), first(x), second(x) are the integrals of 1, t, t^2 dF(t) over
// [lo, x].
class HistogramMoments {
 public:
  HistogramMoments(const std::vector<double>& counts, double lo, double hi)
      : counts_(counts), bins_(static_cast<int>(counts.size())), lo_(lo), hi_(hi), w_((hi - lo) / bins_) {
    inv_w_ = w_ > 0 ? 1 / w_ : 0;
    p0_.assign(bins_ + 1, 0.0);
    p1_.assign(bins_ + 1, 0.0);
    p2_.assign(bins_ + 1, 0.0);
    for (int i = 0; i < bins_; ++i) {
      const double c = counts[i], mid = lo + (i + 0.5) * w_;
      p0_[i + 1] = p0_[i] + c;
      p1_[i + 1] = p1_[i] + c * mid;
      p2_[i + 1] = p2_[i] + c * (mid * mid + w_ * w_ / 12);
    }
  }

  struct M {
    double m0, m1, m2;
  };

  M at(double x) const {
    if (!(x > lo_)) return {0, 0, 0};
    if (x >= hi_ || w_ <= 0) return {p0_[bins_], p1_[bins_], p2_[bins_]};
    const int i = std::min(static_cast<int>((x - lo_) * inv_w_), bins_ - 1);
    const double e = lo_ + i * w_;
    const double f = std::clamp((x - e) * inv_w_, 0.0, 1.0);
    const double c = counts_[i] * f, d = x - e, mid = (x + e) / 2;
    return {p0_[i] + c, p1_[i] + c * mid, p2_[i] + c * (mid * mid + d * d / 12)};
  }

  // Expected summed squared error of quantizing with p (per tensor).
  double error(const QParams& p) const {
    const double s = p.scale[0], z = p.zero_point[0];
    const int32_t qmin = p.qmin, qmax = p.qmax;
    if (w_ <= 0) {  // a point mass at lo_
      const double r =
          (quantize_value(static_cast<float>(lo_), 1.0f / p.scale[0], p.zero_point[0], qmin, qmax) - z) * s;
      return p0_[bins_] * (lo_ - r) * (lo_ - r);
    }
    // Cells whose span can meet [lo_, hi_], widened by one for rounding.
    auto clamp_q = [&](double q) { return static_cast<int32_t>(std::clamp<double>(q, qmin, qmax)); };
    const int32_t q0 = clamp_q(std::floor(lo_ / s + z - 0.5) - 1);
    const int32_t q1 = clamp_q(std::ceil(hi_ / s + z + 0.5) + 1);
    double total = 0;
    M prev = at(lo_);
    for (int32_t q = q0; q <= q1; ++q) {
      const double upper = q == q1 ? hi_ : std::clamp((q - z + 0.5) * s, lo_, hi_);
      const M cur = at(upper);
      const double r = (q - z) * s;
      const double e = (cur.m2 - prev.m2) - 2 * r * (cur.m1 - prev.m1) + r * r * (cur.m0 - prev.m0);
      total += std::max(e, 0.0);
      prev = cur;
    }
    return total;
  }

  double bin_width() const { return w_; }

 private:
  const std::vector<double>& counts_;
  int bins_;
  double lo_, hi_, w_, inv_w_;
  std::vector<double> p0_, p1_, p2_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Observer

Observer::Observer(QuantSpec spec) : spec_(spec) { spec_.validate(); }

Observer::~Observer() = default;

void Observer::check_has_data() const {
  QF_CHECK(has_data_) << name() << " observer has observed nothing; call observe() before qparams()";
}

// ---------------------------------------------------------------------------
// Min/max family

RangeObserver::RangeObserver(QuantSpec spec, bool per_channel, double averaging_constant, std::string name)
    : Observer(spec), per_channel_(per_channel), averaging_(averaging_constant), name_(std::move(name)) {
  QF_CHECK(spec.per_channel == per_channel)
      << name_ << " observer is " << (per_channel ? "per channel" : "per tensor") << " but the spec ("
      << spec.describe() << ") says per_channel = " << (spec.per_channel ? "true" : "false")
      << (per_channel ? "" : "; use a per-channel observer for per-channel quantization");
  QF_CHECK(averaging_constant <= 1) << name_ << " observer: averaging constant must be in (0, 1], got "
                                    << averaging_constant;
}

void RangeObserver::observe(const Tensor& x) {
  if (!enabled()) return;
  QF_CHECK(x.defined()) << name_ << " observer: observe() got an undefined tensor";
  std::vector<double> bmin, bmax;
  bool finite = true;
  if (per_channel_) {
    const int axis = spec().axis;
    QF_CHECK_SHAPE(axis < x.ndim()) << name_ << " observer: channel axis " << axis << " does not exist in " << x.desc();
    const int64_t channels = x.size(axis);
    QF_CHECK_SHAPE(mins_.empty() || static_cast<int64_t>(mins_.size()) == channels)
        << name_ << " observer: input " << x.desc() << " has " << channels << " channels along axis " << axis
        << ", but its first input fixed the channel count at " << mins_.size();
    if (x.numel() == 0) return;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= x.size(d);
    for (int d = axis + 1; d < x.ndim(); ++d) inner *= x.size(d);
    finite = dispatch_floating(x.dtype(), "observe", [&](auto tag) {
      using T = decltype(tag);
      return minmax_channels<T>(x.data<T>(), outer, channels, inner, bmin, bmax);
    });
  } else {
    if (x.numel() == 0) return;
    finite = dispatch_floating(x.dtype(), "observe", [&](auto tag) {
      using T = decltype(tag);
      // Fixed chunks reduced in order: the same answer at any thread count
      // (min and max are exact anyway).
      constexpr int64_t kChunk = 1 << 16;
      const int64_t n = x.numel(), chunks = (n + kChunk - 1) / kChunk;
      std::vector<T> los(chunks, std::numeric_limits<T>::infinity()), his(chunks, -std::numeric_limits<T>::infinity());
      std::vector<char> oks(chunks, 1);
      const T* px = x.data<T>();
      parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t b = c * kChunk;
          oks[c] = minmax_block<T>(px + b, std::min(kChunk, n - b), los[c], his[c]);
        }
      });
      T lo = std::numeric_limits<T>::infinity(), hi = -std::numeric_limits<T>::infinity();
      bool ok = true;
      for (int64_t c = 0; c < chunks; ++c) {
        lo = los[c] < lo ? los[c] : lo;
        hi = his[c] > hi ? his[c] : hi;
        ok = ok && oks[c];
      }
      bmin.assign(1, lo);
      bmax.assign(1, hi);
      return ok;
    });
  }
  QF_CHECK(finite) << name_ << " observer: input " << x.desc()
                   << " holds inf/NaN; refusing to record it (the range would be poisoned)";
  record(std::move(bmin), std::move(bmax));
}

void RangeObserver::observe_range(double lo, double hi) {
  if (!enabled()) return;
  QF_CHECK(!per_channel_) << name_ << " observer: observe_range() is per tensor; this observer is per channel";
  QF_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi)
      << name_ << " observer: batch range [" << lo << ", " << hi
      << "] holds inf/NaN or is empty; refusing to record it (the range would be poisoned)";
  record({lo}, {hi});
}

void RangeObserver::record(std::vector<double> bmin, std::vector<double> bmax) {
  if (mins_.empty() || averaging_ <= 0) {
    if (mins_.empty()) {
      mins_ = std::move(bmin);
      maxs_ = std::move(bmax);
    } else {
      for (size_t c = 0; c < mins_.size(); ++c) {
        mins_[c] = std::min(mins_[c], bmin[c]);
        maxs_[c] = std::max(maxs_[c], bmax[c]);
      }
    }
  } else {
    for (size_t c = 0; c < mins_.size(); ++c) {
      mins_[c] += averaging_ * (bmin[c] - mins_[c]);
      maxs_[c] += averaging_ * (bmax[c] - maxs_[c]);
    }
  }
  set_has_data(true);
}

QParams RangeObserver::qparams() const {
  check_has_data();
  std::vector<float> lo(mins_.begin(), mins_.end()), hi(maxs_.begin(), maxs_.end());
  return qparams_from_range(lo, hi, spec());
}

void RangeObserver::reset() {
  mins_.clear();
  maxs_.clear();
  set_has_data(false);
}

std::map<std::string, Tensor> RangeObserver::state() const {
  return {{"min_val", f64_tensor(mins_)}, {"max_val", f64_tensor(maxs_)}};
}

void RangeObserver::load_state(const std::map<std::string, Tensor>& s) {
  auto v = read_state(s, {"min_val", "max_val"}, name_);
  std::vector<double>&lo = v[0], &hi = v[1];
  QF_CHECK(lo.size() == hi.size()) << name_ << " observer: load_state got " << lo.size() << " minima and " << hi.size()
                                   << " maxima";
  QF_CHECK(per_channel_ || lo.size() <= 1)
      << name_ << " observer: load_state got " << lo.size() << " channels for a per-tensor observer";
  QF_CHECK(all_finite(lo) && all_finite(hi)) << name_ << " observer: load_state got a non-finite min or max";
  for (size_t c = 0; c < lo.size(); ++c) {
    QF_CHECK(lo[c] <= hi[c]) << name_ << " observer: load_state got min " << lo[c] << " > max " << hi[c]
                             << " for channel " << c;
  }
  mins_ = std::move(lo);
  maxs_ = std::move(hi);
  set_has_data(!mins_.empty());
}

MinMaxObserver::MinMaxObserver(QuantSpec spec) : RangeObserver(spec, false, 0.0, "minmax") {}

MovingAverageMinMaxObserver::MovingAverageMinMaxObserver(QuantSpec spec, double averaging_constant)
    : RangeObserver(spec, false, averaging_constant, "moving_average") {
  QF_CHECK(averaging_constant > 0) << "moving_average observer: averaging constant must be in (0, 1], got "
                                   << averaging_constant;
}

PerChannelMinMaxObserver::PerChannelMinMaxObserver(QuantSpec spec)
    : RangeObserver(with_per_channel(spec), true, 0.0, "per_channel_minmax") {}

MovingAveragePerChannelMinMaxObserver::MovingAveragePerChannelMinMaxObserver(QuantSpec spec, double averaging_constant)
    : RangeObserver(with_per_channel(spec), true, averaging_constant, "moving_average_per_channel") {
  QF_CHECK(averaging_constant > 0) << "moving_average_per_channel observer: averaging constant must be in (0, 1], got "
                                   << averaging_constant;
}

// ---------------------------------------------------------------------------
// Histogram family

HistogramObserver::HistogramObserver(QuantSpec spec, int bins) : Observer(spec), bins_(bins) {
  QF_CHECK(!spec.per_channel) << "histogram and percentile observers are per tensor but the spec (" << spec.describe()
                              << ") says per_channel = true";
  QF_CHECK(bins >= 2 && bins <= (1 << 20)) << "histogram observer: bins must be in [2, 2^20], got " << bins;
  counts_.assign(bins_, 0.0);
}

double HistogramObserver::total_count() const {
  double t = 0;
  for (double c : counts_) t += c;
  return t;
}

void HistogramObserver::grow(double bmin, double bmax) {
  if (bmin >= lo_ && bmax <= hi_) return;
  const double nlo = std::min(lo_, bmin), nhi = std::max(hi_, bmax);
  std::vector<double> moved(bins_, 0.0);
  if (hi_ == lo_) {
    // The old histogram is a point mass at lo_: it goes to that point's new bin.
    const double t = (lo_ - nlo) / (nhi - nlo) * bins_;
    const int j = static_cast<int>(std::clamp(t, 0.0, bins_ - 1.0));
    moved[j] = total_count();
    lo_ = nlo;
    hi_ = nhi;
  } else {
    // New edges on the old grid: lo' = lo - a*w (a may be negative when the
    // lowest bins are empty) and width k*bins*w, so old bin i lies inside new
    // bin floor((i + a) / k). Only the occupied old bins need to be covered.
    const double w = (hi_ - lo_) / bins_;
    int first = 0, last = bins_ - 1;
    while (first < last && counts_[first] == 0) ++first;
    while (last > first && counts_[last] == 0) --last;
    const double need_lo = std::min({bmin, data_min_, lo_ + first * w});
    const double need_hi = std::max({bmax, data_max_, lo_ + (last + 1) * w});
    const double a = std::ceil((lo_ - need_lo) / w);
    const double new_lo = std::min(lo_ - a * w, need_lo);
    const double k = std::max(1.0, std::ceil((need_hi - new_lo) / (bins_ * w)));
    const double new_hi = std::max(new_lo + k * bins_ * w, need_hi);
    const double top = bins_ - 1;
    for (int i = first; i <= last; ++i) {
      if (counts_[i] == 0) continue;
      double j = std::floor((i + a) / k);
      j = j > 0 ? j : 0;  // NaN-safe clamp
      j = j < top ? j : top;
      moved[static_cast<int>(j)] += counts_[i];
    }
    lo_ = new_lo;
    hi_ = new_hi;
  }
  counts_ = std::move(moved);
}

void HistogramObserver::observe(const Tensor& x) {
  if (!enabled()) return;
  QF_CHECK(x.defined()) << name() << " observer: observe() got an undefined tensor";
  if (x.numel() == 0) return;
  dispatch_floating(x.dtype(), "observe", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    T lo = std::numeric_limits<T>::infinity(), hi = -std::numeric_limits<T>::infinity();
    QF_CHECK(minmax_block<T>(p, x.numel(), lo, hi))
        << name() << " observer: input " << x.desc()
        << " holds inf/NaN; refusing to record it (the range would be poisoned)";
    if (!has_data()) {
      lo_ = data_min_ = lo;
      hi_ = data_max_ = hi;
      std::fill(counts_.begin(), counts_.end(), 0.0);
    } else {
      grow(lo, hi);
      data_min_ = std::min<double>(data_min_, lo);
      data_max_ = std::max<double>(data_max_, hi);
    }
    const double inv_w = hi_ > lo_ ? bins_ / (hi_ - lo_) : 0.0;
    histogram_add<T>(p, x.numel(), lo_, inv_w, bins_, counts_);
  });
  set_has_data(true);
}

double HistogramObserver::expected_error(double lo, double hi) const {
  check_has_data();
  const HistogramMoments m(counts_, lo_, hi_);
  return m.error(range_qparams(lo, hi, spec()));
}

std::pair<double, double> HistogramObserver::clip_range() const {
  check_has_data();
  if (data_min_ == data_max_ || hi_ == lo_) return {data_min_, data_max_};
  const HistogramMoments m(counts_, lo_, hi_);
  const double w = m.bin_width();
  auto error_of = [&](double lo, double hi) { return lo <= hi ? m.error(range_qparams(lo, hi, spec())) : kInf; };
  double best_lo = data_min_, best_hi = data_max_;
  double best = error_of(best_lo, best_hi);

  if (spec().scheme == QScheme::symmetric) {
    // Only amax = max(-lo, hi) matters: scan it down in steps of one bin
    // width, to the smallest |x| when the data does not straddle 0 (clipping
    // every value is never better).
    const double amax = std::max(-data_min_, data_max_);
    const double amin = data_min_ > 0 ? data_min_ : data_max_ < 0 ? -data_max_ : 0.0;
    for (double a = amax - w; a > amin; a -= w) {
      const double lo = std::max(-a, data_min_), hi = std::min(a, data_max_);
      const double e = error_of(lo, hi);
      if (e < best) {
        best = e;
        best_lo = lo;
        best_hi = hi;
      }
    }
    return {best_lo, best_hi};
  }

  // Affine: the quantizer is (scale, zero point). Scan the window width
  // levels * scale in steps of one bin width, from the full range down to the
  // smallest |x| (when the data does not straddle 0); place each window by its
  // zero point, [L, U] = [(qmin - z) * scale, (qmax - z) * scale]. With at most
  // 16 levels every zero point is tried (the error is jagged in z there); with
  // more, a local descent on z starting from the previous width's best.
  const int32_t qmin = spec().qmin(), qmax = spec().qmax();
  const int levels = qmax - qmin;
  const bool all_zero_points = levels <= 15;
  int32_t zp = range_qparams(data_min_, data_max_, spec()).zero_point[0];
  auto eval = [&](double width, int32_t z) {
    const double scale = width / levels;
    const double lo = (qmin - z) * scale, hi = (qmax - z) * scale;
    const double e = error_of(lo, hi);
    if (e < best) {
      best = e;
      best_lo = lo;
      best_hi = hi;
    }
    return e;
  };
  const double full = std::max(data_max_, 0.0) - std::min(data_min_, 0.0);
  const double amin = data_min_ > 0 ? data_min_ : data_max_ < 0 ? -data_max_ : 0.0;
  for (double width = full - w; width > amin; width -= w) {
    if (all_zero_points) {
      for (int32_t z = qmin; z <= qmax; ++z) eval(width, z);
      continue;
    }
    double e = eval(width, zp);
    for (int32_t step : {-1, 1}) {
      while (zp + step >= qmin && zp + step <= qmax) {
        const double next = eval(width, zp + step);
        if (!(next < e)) break;
        e = next;
        zp += step;
      }
    }
  }
  return {best_lo, best_hi};
}

QParams HistogramObserver::qparams() const {
  const auto [lo, hi] = clip_range();
  return range_qparams(lo, hi, spec());
}

void HistogramObserver::reset() {
  std::fill(counts_.begin(), counts_.end(), 0.0);
  lo_ = hi_ = data_min_ = data_max_ = 0;
  set_has_data(false);
}

std::map<std::string, Tensor> HistogramObserver::state() const {
  std::vector<double> hr, dr;
  if (has_data()) {
    hr = {lo_, hi_};
    dr = {data_min_, data_max_};
  }
  return {{"histogram", f64_tensor(counts_)}, {"hist_range", f64_tensor(hr)}, {"data_range", f64_tensor(dr)}};
}

void HistogramObserver::load_state(const std::map<std::string, Tensor>& s) {
  auto v = read_state(s, {"histogram", "hist_range", "data_range"}, name());
  const std::vector<double>&h = v[0], &hr = v[1], &dr = v[2];
  QF_CHECK(static_cast<int64_t>(h.size()) == bins_)
      << name() << " observer: load_state got a histogram of " << h.size() << " bins, the observer has " << bins_;
  QF_CHECK(hr.size() == dr.size() && (hr.empty() || hr.size() == 2))
      << name() << " observer: load_state needs \"hist_range\" and \"data_range\" both of size 2 (or both 0), got "
      << hr.size() << " and " << dr.size();
  QF_CHECK(all_finite(h) && std::all_of(h.begin(), h.end(), [](double c) { return c >= 0; }))
      << name() << " observer: load_state got negative or non-finite histogram counts";
  const bool data = !hr.empty();
  double total = 0;
  for (double c : h) total += c;
  if (data) {
    QF_CHECK(all_finite(hr) && all_finite(dr) && hr[0] <= dr[0] && dr[0] <= dr[1] && dr[1] <= hr[1])
        << name() << " observer: load_state needs hist_lo <= data_min <= data_max <= hist_hi, got hist_range [" << hr[0]
        << ", " << hr[1] << "] and data_range [" << dr[0] << ", " << dr[1] << "]";
    QF_CHECK(total > 0) << name() << " observer: load_state got ranges but an empty histogram";
  } else {
    QF_CHECK(total == 0) << name() << " observer: load_state got counts but no ranges";
  }
  counts_ = h;
  lo_ = data ? hr[0] : 0;
  hi_ = data ? hr[1] : 0;
  data_min_ = data ? dr[0] : 0;
  data_max_ = data ? dr[1] : 0;
  set_has_data(data);
}

PercentileObserver::PercentileObserver(QuantSpec spec, double percentile, int bins)
    : HistogramObserver(spec, bins), percentile_(percentile) {
  QF_CHECK(percentile > 50 && percentile <= 100)
      << "percentile observer: percentile must be in (50, 100], got " << percentile;
}

std::pair<double, double> PercentileObserver::clip_range() const {
  check_has_data();
  const double dmin = data_min(), dmax = data_max();
  if (percentile_ == 100 || dmin == dmax || hist_hi() == hist_lo()) return {dmin, dmax};
  const std::vector<double>& h = counts();
  const double total = total_count();
  const double w = (hist_hi() - hist_lo()) / bins();
  // The value below which `target` of the counts lie, interpolating inside the bin.
  auto value_at = [&](double target) {
    double cum = 0;
    for (int i = 0; i < bins(); ++i) {
      if (h[i] > 0 && cum + h[i] >= target) {
        const double f = std::clamp((target - cum) / h[i], 0.0, 1.0);
        return hist_lo() + (i + f) * w;
      }
      cum += h[i];
    }
    return hist_hi();
  };
  const double lo = std::clamp(value_at(total * (100 - percentile_) / 100), dmin, dmax);
  const double hi = std::clamp(value_at(total * percentile_ / 100), dmin, dmax);
  return {lo, std::max(lo, hi)};
}

// ---------------------------------------------------------------------------

std::unique_ptr<Observer> make_observer(const std::string& kind, const QuantSpec& spec) {
  static const char* kKinds =
      "\"minmax\", \"moving_average\", \"per_channel_minmax\", \"moving_average_per_channel\", \"histogram\", "
      "\"percentile\"";
  const bool per_channel_kind = kind == "per_channel_minmax" || kind == "moving_average_per_channel";
  const bool per_tensor_kind =
      kind == "minmax" || kind == "moving_average" || kind == "histogram" || kind == "percentile";
  QF_CHECK(per_channel_kind || per_tensor_kind)
      << "make_observer: unknown observer kind \"" << kind << "\"; known kinds: " << kKinds;
  QF_CHECK(!per_channel_kind || spec.per_channel)
      << "make_observer: \"" << kind << "\" is a per-channel observer but the spec (" << spec.describe()
      << ") is per tensor; set spec.per_channel = true or use a per-tensor kind";
  QF_CHECK(!per_tensor_kind || !spec.per_channel)
      << "make_observer: \"" << kind << "\" is a per-tensor observer but the spec (" << spec.describe()
      << ") is per channel; use \"per_channel_minmax\" or \"moving_average_per_channel\"";
  if (kind == "minmax") return std::make_unique<MinMaxObserver>(spec);
  if (kind == "moving_average") return std::make_unique<MovingAverageMinMaxObserver>(spec);
  if (kind == "per_channel_minmax") return std::make_unique<PerChannelMinMaxObserver>(spec);
  if (kind == "moving_average_per_channel") return std::make_unique<MovingAveragePerChannelMinMaxObserver>(spec);
  if (kind == "histogram") return std::make_unique<HistogramObserver>(spec);
  return std::make_unique<PercentileObserver>(spec);
}

}  // namespace qforge::quant
