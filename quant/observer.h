#pragma once
// Observers: collect statistics of a tensor stream (activations or weights)
// and turn them into quantization parameters through qparams_from_range().
//
//   MinMaxObserver obs(spec);
//   for (...) obs.observe(activation);
//   QParams p = obs.qparams();
//
// Every observer accepts f32 and f64 tensors (DTypeError otherwise), ignores
// zero-size tensors, and rejects inf/NaN with a ValueError instead of letting
// one bad batch poison the range. set_enabled(false) freezes an observer: its
// observe() becomes a no-op. state()/load_state() carry the statistics (not
// the enabled flag, which a QAT schedule sets) through checkpoints as f64
// tensors.

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "quant/qparams.h"

namespace qforge::quant {

/// Base of all observers. Owns the QuantSpec (validated at construction),
/// the enabled flag and whether anything has been observed yet. Not copyable.
class Observer {
 public:
  /// Takes the spec it will produce qparams for; ValueError when the spec is
  /// invalid (QuantSpec::validate).
  explicit Observer(QuantSpec spec);
  virtual ~Observer();
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  /// Records statistics of x (f32 or f64; per-channel observers need
  /// spec().axis < x.ndim()). No-op when disabled or when x is empty. Throws
  /// ValueError naming the observer when x holds inf or NaN (nothing is
  /// recorded then).
  virtual void observe(const Tensor& x) = 0;
  /// QParams for what was observed, via qparams_from_range(). Throws
  /// ValueError ("... has observed nothing") before the first observe().
  virtual QParams qparams() const = 0;
  /// Forgets all statistics (the enabled flag is kept).
  virtual void reset() = 0;

  /// Turns recording on or off (off freezes the statistics; qparams() still works).
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  /// True once a non-empty tensor was observed (since construction or reset).
  bool has_data() const { return has_data_; }
  /// The validated spec the qparams are computed for.
  const QuantSpec& spec() const { return spec_; }
  /// Short kind name: "minmax", "moving_average", "per_channel_minmax",
  /// "moving_average_per_channel", "histogram" or "percentile".
  virtual std::string name() const = 0;

  /// Statistics for checkpoints: name -> f64 tensor (copies, never views of
  /// internal buffers). load_state() restores them exactly, so qparams() after
  /// a round trip is bit-identical; it throws ValueError on missing or extra
  /// keys, wrong sizes, non-floating dtypes or invalid values, and leaves the
  /// observer unchanged then.
  virtual std::map<std::string, Tensor> state() const = 0;
  /// Restores statistics from state() (the contract above).
  virtual void load_state(const std::map<std::string, Tensor>& s) = 0;

 protected:
  void set_has_data(bool v) { has_data_ = v; }
  /// Throws the "<name> observer has observed nothing" ValueError unless has_data().
  void check_has_data() const;

 private:
  QuantSpec spec_;
  bool enabled_ = true;
  bool has_data_ = false;
};

/// Shared engine of the four min/max observers: one [min, max] per tensor or
/// per channel (along spec().axis), either a running min/max or an
/// exponential moving average of the batch min/max. State keys: "min_val"
/// and "max_val", f64 [C] (C = 1 per tensor; [0] before any data).
class RangeObserver : public Observer {
 public:
  /// averaging_constant <= 0 means a running min/max; otherwise it must be in
  /// (0, 1]. Throws ValueError when spec.per_channel != per_channel.
  RangeObserver(QuantSpec spec, bool per_channel, double averaging_constant, std::string name);

  void observe(const Tensor& x) override;
  /// Per tensor only (ValueError otherwise): records a batch whose minimum
  /// and maximum are lo and hi, as observe() on that batch would (an op that
  /// found the range in its own pass). A no-op when disabled; ValueError for
  /// inf/NaN bounds, as observe() for such a batch.
  void observe_range(double lo, double hi);
  QParams qparams() const override;
  void reset() override;
  std::string name() const override { return name_; }
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& s) override;

  /// Current per-channel (or single) minima and maxima; empty before data.
  const std::vector<double>& min_vals() const { return mins_; }
  const std::vector<double>& max_vals() const { return maxs_; }
  /// 0 for a running min/max, else the moving-average constant c.
  double averaging_constant() const { return averaging_; }

 private:
  // Folds one batch's per-channel minima and maxima into the state.
  void record(std::vector<double> bmin, std::vector<double> bmax);

  bool per_channel_;
  double averaging_;
  std::string name_;
  std::vector<double> mins_, maxs_;
};

/// Running min and max over everything observed, per tensor (PyTorch's
/// MinMaxObserver). spec.per_channel must be false.
class MinMaxObserver : public RangeObserver {
 public:
  explicit MinMaxObserver(QuantSpec spec);
};

/// Per-tensor moving average of the batch min/max: the first batch sets
/// min/max, each later one does min += c * (batch_min - min), and the same
/// for max (PyTorch's MovingAverageMinMaxObserver). c in (0, 1].
class MovingAverageMinMaxObserver : public RangeObserver {
 public:
  explicit MovingAverageMinMaxObserver(QuantSpec spec, double averaging_constant = 0.01);
};

/// Running min/max per channel along spec.axis (spec.per_channel is forced
/// to true). The first observe() fixes the channel count; a tensor with a
/// different size along the axis throws ShapeError, one with ndim <= axis too.
class PerChannelMinMaxObserver : public RangeObserver {
 public:
  explicit PerChannelMinMaxObserver(QuantSpec spec);
};

/// Per-channel moving average of the batch min/max (rules of
/// MovingAverageMinMaxObserver, channels of PerChannelMinMaxObserver).
class MovingAveragePerChannelMinMaxObserver : public RangeObserver {
 public:
  explicit MovingAveragePerChannelMinMaxObserver(QuantSpec spec, double averaging_constant = 0.01);
};

/// Per-tensor histogram observer that picks the clipping range minimizing the
/// expected quantization error.
///
/// Histogram. `bins` equal bins over [lo, hi]; the first batch sets
/// [lo, hi] = [min, max] of that batch. When a batch falls outside, the range
/// grows to lo' = lo - a*w, hi' = lo' + k*bins*w (w the old bin width; a and
/// k >= 1 the smallest integers that cover the batch and the occupied old
/// bins), so every old bin lies inside new bin floor((i + a) / k) and the old
/// counts move there exactly: totals are preserved and nothing is smeared.
/// The range stays within about twice the data's span. Binning the batch is
/// then one pass. The exact min and max seen are kept as well.
///
/// Range search (qparams()). Counts are taken as uniform inside each bin. For
/// a candidate range [L, U], the quantizer is exactly what
/// qparams_from_range(L, U) gives (scale s, zero point z, [qmin, qmax]), and
/// its expected squared error is integrated exactly over that density: every
/// quantization cell [(q - z - 1/2)s, (q - z + 1/2)s] (the end cells open, so
/// clipping error is included) contributes the integral of (x - (q - z)s)^2,
/// read in O(1) from prefix sums of the bins' zeroth, first and second
/// moments (expected_error()). The data's [min, max] is the first candidate;
/// a candidate replaces the best only when its error is strictly smaller.
///  - symmetric: only amax = max(-L, U) matters, so every amax from the
///    data's max |x| down in steps of one bin width is evaluated (down to the
///    smallest |x| when the data does not straddle 0), with [L, U] = [-amax,
///    amax] clipped to the data: the global optimum at bin resolution.
///  - affine: the quantizer is (scale, zero point z). The window width
///    levels * scale is scanned in steps of one bin width from the full range
///    down (to the smallest |x| when the data does not straddle 0), and each
///    window is placed by its zero point, [L, U] = [(qmin - z) * scale,
///    (qmax - z) * scale]: with at most 16 levels every z is tried, with more
///    a local descent on z starts from the previous width's best. This is
///    PyTorch's _non_linear_param_search (shrink the range from both ends,
///    keep the side that costs less) made exhaustive over widths and not
///    stopped at the first increase; it is parametrized by (scale, z) rather
///    than by bin edges because zero-point rounding makes the error jagged in
///    (L, U) at low bit widths, which traps greedy bin walks. The returned
///    [L, U] is then the window, not clipped to the data.
/// Cost: O(bins) candidates of O(levels) each; about 2 ms (symmetric) and
/// 15 ms (affine) at 2048 bins and 8 bits.
///
/// State keys: "histogram" f64 [bins], "hist_range" and "data_range" f64 [2]
/// ([0] before any data).
class HistogramObserver : public Observer {
 public:
  /// bins in [2, 1 << 20]. spec.per_channel must be false.
  explicit HistogramObserver(QuantSpec spec, int bins = 2048);

  void observe(const Tensor& x) override;
  QParams qparams() const override;
  void reset() override;
  std::string name() const override { return "histogram"; }
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& s) override;

  /// The [L, U] handed to qparams_from_range() by qparams() (same errors).
  virtual std::pair<double, double> clip_range() const;
  /// Expected squared error (summed over all counted values) of quantizing
  /// the histogram's density with the quantizer that qparams_from_range(L, U)
  /// gives. The measure the range search minimizes.
  double expected_error(double lo, double hi) const;

  int bins() const { return bins_; }
  const std::vector<double>& counts() const { return counts_; }
  /// Edges of the histogram ([lo, hi], may exceed the data after growth).
  double hist_lo() const { return lo_; }
  double hist_hi() const { return hi_; }
  /// Exact min and max of everything observed.
  double data_min() const { return data_min_; }
  double data_max() const { return data_max_; }
  /// Sum of the counts.
  double total_count() const;

 private:
  // Makes [lo_, hi_] cover [bmin, bmax], moving the old counts.
  void grow(double bmin, double bmax);

  int bins_;
  std::vector<double> counts_;
  double lo_ = 0, hi_ = 0;
  double data_min_ = 0, data_max_ = 0;
};

/// Per-tensor percentile observer on the growing histogram of
/// HistogramObserver: [L, U] = [value at the (100 - p)th percentile, value at
/// the pth percentile], located by linear interpolation inside the bin where
/// the cumulative count crosses it and clipped to the data's [min, max]
/// (p = 100 gives exactly [min, max]). p in (50, 100].
class PercentileObserver : public HistogramObserver {
 public:
  explicit PercentileObserver(QuantSpec spec, double percentile = 99.99, int bins = 2048);

  std::string name() const override { return "percentile"; }
  std::pair<double, double> clip_range() const override;
  double percentile() const { return percentile_; }

 private:
  double percentile_;
};

/// Builds an observer with default parameters by kind: "minmax",
/// "moving_average", "per_channel_minmax", "moving_average_per_channel",
/// "histogram" or "percentile". Per-channel kinds need spec.per_channel,
/// the others need !spec.per_channel; ValueError otherwise, and for an
/// unknown kind (the message lists the known ones).
std::unique_ptr<Observer> make_observer(const std::string& kind, const QuantSpec& spec);

}  // namespace qforge::quant
