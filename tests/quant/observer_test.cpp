#include "quant/observer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/rng.h"

using namespace qforge;
using namespace qforge::quant;

namespace {

QuantSpec make_spec(int bits, bool is_signed, QScheme scheme, bool per_channel = false, int axis = 0) {
  QuantSpec s;
  s.bits = bits;
  s.is_signed = is_signed;
  s.scheme = scheme;
  s.per_channel = per_channel;
  s.axis = axis;
  return s;
}

// Checks the QParams contract for channel c: finite scale > 0, zero point in
// range, and real 0 quantizing to a value that dequantizes to exactly 0.
void expect_valid(const QParams& p, size_t c = 0) {
  const float s = p.scale[c];
  const int32_t z = p.zero_point[c];
  EXPECT_TRUE(std::isfinite(s) && s > 0) << s;
  EXPECT_GE(z, p.qmin);
  EXPECT_LE(z, p.qmax);
  const int32_t q = quantize_value(0.0f, 1.0f / s, z, p.qmin, p.qmax);
  EXPECT_EQ(dequantize_value(q, s, z), 0.0f);
}

// Mean squared error of fake-quantizing x with per-tensor p.
double quant_mse(const Tensor& x, const QParams& p) {
  const float* d = x.data<float>();
  const float s = p.scale[0], inv = 1.0f / s;
  double e = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float r = dequantize_value(quantize_value(d[i], inv, p.zero_point[0], p.qmin, p.qmax), s, p.zero_point[0]);
    e += (static_cast<double>(d[i]) - r) * (static_cast<double>(d[i]) - r);
  }
  return e / x.numel();
}

Tensor randn(const Shape& shape, uint64_t seed, double stddev = 1.0) {
  Generator g(seed);
  Tensor t = Tensor::empty(shape);
  normal_(t, 0.0, stddev, g);
  return t;
}

Tensor rand_uniform(const Shape& shape, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  Tensor t = Tensor::empty(shape);
  uniform_(t, lo, hi, g);
  return t;
}

}  // namespace

// ----------------------------------------------------------- qparams_from_range

TEST(QParamsFromRange, SymmetricZeroPoints) {
  for (int bits = 2; bits <= 8; ++bits) {
    QParams s = qparams_from_range({-1.5f}, {3.0f}, make_spec(bits, true, QScheme::symmetric));
    EXPECT_EQ(s.zero_point[0], 0);
    EXPECT_FLOAT_EQ(s.scale[0], 3.0f / ((std::pow(2.0f, bits) - 1) / 2));
    QParams u = qparams_from_range({-1.5f}, {3.0f}, make_spec(bits, false, QScheme::symmetric));
    EXPECT_EQ(u.zero_point[0], 1 << (bits - 1));
    EXPECT_EQ(u.qmin, 0);
    EXPECT_EQ(u.qmax, (1 << bits) - 1);
  }
}

TEST(QParamsFromRange, AffineZeroPointStaysInRange) {
  for (bool sgn : {true, false}) {
    const QuantSpec spec = make_spec(8, sgn, QScheme::affine);
    QParams pos = qparams_from_range({1.0f}, {5.0f}, spec);  // widened to [0, 5]
    EXPECT_EQ(pos.zero_point[0], pos.qmin);
    QParams neg = qparams_from_range({-5.0f}, {-1.0f}, spec);  // widened to [-5, 0]
    EXPECT_EQ(neg.zero_point[0], neg.qmax);
    expect_valid(pos);
    expect_valid(neg);
  }
}

TEST(QParamsFromRange, ReduceRangeHalvesTheRange) {
  QuantSpec spec = make_spec(8, true, QScheme::symmetric);
  const QParams full = qparams_from_range({-1.0f}, {1.0f}, spec);
  spec.reduce_range = true;
  const QParams half = qparams_from_range({-1.0f}, {1.0f}, spec);
  EXPECT_EQ(half.qmin, -64);
  EXPECT_EQ(half.qmax, 63);
  EXPECT_EQ(full.qmax - full.qmin + 1, 2 * (half.qmax - half.qmin + 1));
  EXPECT_NEAR(half.scale[0] / full.scale[0], 255.0 / 127.0, 1e-5);
}

TEST(QParamsFromRange, RejectsBadBitsAndRanges) {
  EXPECT_THROW(qparams_from_range({0.0f}, {1.0f}, make_spec(1, true, QScheme::affine)), ValueError);
  EXPECT_THROW(qparams_from_range({0.0f}, {1.0f}, make_spec(9, true, QScheme::affine)), ValueError);
  EXPECT_THROW(qparams_from_range({2.0f}, {1.0f}, make_spec(8, true, QScheme::affine)), ValueError);
}

// --------------------------------------------------------------- min/max family

TEST(MinMaxObserver, ValuesAndQParamsForAllFormats) {
  const Tensor x = Tensor::from_vector(std::vector<float>{0.5f, -2.0f, 3.25f, 1.0f, -0.75f}, {5});
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool sgn : {true, false}) {
      for (QScheme scheme : {QScheme::symmetric, QScheme::affine}) {
        MinMaxObserver obs(make_spec(bits, sgn, scheme));
        obs.observe(x);
        ASSERT_EQ(obs.min_vals().size(), 1u);
        EXPECT_EQ(obs.min_vals()[0], -2.0);
        EXPECT_EQ(obs.max_vals()[0], 3.25);
        const QParams p = obs.qparams();
        EXPECT_EQ(p.axis, -1);
        expect_valid(p);
        const QParams want = qparams_from_range({-2.0f}, {3.25f}, obs.spec());
        EXPECT_EQ(p.scale, want.scale);
        EXPECT_EQ(p.zero_point, want.zero_point);
        if (scheme == QScheme::symmetric) {
          EXPECT_EQ(p.zero_point[0], sgn ? 0 : 1 << (bits - 1));
        }
      }
    }
  }
}

TEST(MinMaxObserver, RunningRangeOverBatchesAndF64) {
  MinMaxObserver obs(QuantSpec{});
  obs.observe(Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}));
  obs.observe(Tensor::from_vector(std::vector<double>{-4.5, 0.0}, {2}));
  obs.observe(Tensor::zeros({0}));  // ignored
  EXPECT_EQ(obs.min_vals()[0], -4.5);
  EXPECT_EQ(obs.max_vals()[0], 3.0);
  // A long tensor exercises the multi-accumulator loop and its tail.
  Tensor big = randn({1003}, 7);
  big.data<float>()[1001] = 9.0f;
  big.data<float>()[5] = -8.0f;
  MinMaxObserver o2(QuantSpec{});
  o2.observe(big);
  EXPECT_EQ(o2.min_vals()[0], -8.0);
  EXPECT_EQ(o2.max_vals()[0], 9.0);
  EXPECT_THROW(o2.observe(Tensor::zeros({3}, DType::i32)), DTypeError);
}

TEST(MinMaxObserver, AllZeroAndConstantTensors) {
  for (QScheme scheme : {QScheme::symmetric, QScheme::affine}) {
    for (bool sgn : {true, false}) {
      MinMaxObserver zero(make_spec(8, sgn, scheme));
      zero.observe(Tensor::zeros({4, 4}));
      const QParams pz = zero.qparams();
      expect_valid(pz);
      EXPECT_EQ(pz.scale[0], kEmptyRangeScale);

      MinMaxObserver three(make_spec(8, sgn, scheme));
      three.observe(Tensor::full({16}, 3.0));
      const QParams p3 = three.qparams();
      expect_valid(p3);
      // 3.0 is representable within one step.
      const int32_t q = quantize_value(3.0f, 1.0f / p3.scale[0], p3.zero_point[0], p3.qmin, p3.qmax);
      EXPECT_NEAR(dequantize_value(q, p3.scale[0], p3.zero_point[0]), 3.0f, p3.scale[0]);
    }
  }
}

TEST(MovingAverageObserver, TwoBatchesMatchClosedForm) {
  const double c = 0.25;
  MovingAverageMinMaxObserver obs(QuantSpec{}, c);
  EXPECT_EQ(obs.name(), "moving_average");
  obs.observe(Tensor::from_vector(std::vector<float>{-1, 2}, {2}));
  EXPECT_EQ(obs.min_vals()[0], -1.0);
  EXPECT_EQ(obs.max_vals()[0], 2.0);
  obs.observe(Tensor::from_vector(std::vector<float>{-5, 10}, {2}));
  EXPECT_DOUBLE_EQ(obs.min_vals()[0], -1.0 + c * (-5.0 - -1.0));
  EXPECT_DOUBLE_EQ(obs.max_vals()[0], 2.0 + c * (10.0 - 2.0));
  expect_valid(obs.qparams());
  EXPECT_THROW(MovingAverageMinMaxObserver(QuantSpec{}, 0.0), ValueError);
  EXPECT_THROW(MovingAverageMinMaxObserver(QuantSpec{}, 1.5), ValueError);
}

namespace {

// Brute-force per-channel min/max of a contiguous tensor along `axis`.
void brute_channels(const Tensor& x, int axis, std::vector<double>& lo, std::vector<double>& hi) {
  const int64_t c_count = x.size(axis);
  int64_t inner = 1;
  for (int d = axis + 1; d < x.ndim(); ++d) inner *= x.size(d);
  lo.assign(c_count, std::numeric_limits<double>::infinity());
  hi.assign(c_count, -std::numeric_limits<double>::infinity());
  const std::vector<double> v = x.to_vector();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / inner) % c_count;
    lo[c] = std::min(lo[c], v[i]);
    hi[c] = std::max(hi[c], v[i]);
  }
}

}  // namespace

TEST(PerChannelObserver, MatchesBruteForceAlongAxes) {
  // [N, C, H, W] with H*W both above and below the contiguous-block cutoff.
  for (const Shape& shape : {Shape{3, 5, 7, 9}, Shape{4, 6, 2, 3}, Shape{6, 11}}) {
    for (int axis = 0; axis < static_cast<int>(shape.size()); ++axis) {
      const Tensor x = randn(shape, 11 + axis);
      PerChannelMinMaxObserver obs(make_spec(8, true, QScheme::affine, true, axis));
      obs.observe(x);
      std::vector<double> lo, hi;
      brute_channels(x, axis, lo, hi);
      EXPECT_EQ(obs.min_vals(), lo) << shape_str(shape) << " axis " << axis;
      EXPECT_EQ(obs.max_vals(), hi) << shape_str(shape) << " axis " << axis;
      const QParams p = obs.qparams();
      EXPECT_EQ(p.axis, axis);
      ASSERT_EQ(p.channels(), static_cast<size_t>(shape[axis]));
      for (size_t c = 0; c < p.channels(); ++c) expect_valid(p, c);
    }
  }
}

TEST(PerChannelObserver, ForcesPerChannelAndChecksShapes) {
  PerChannelMinMaxObserver obs(QuantSpec{});  // per_channel forced on, axis 0
  EXPECT_TRUE(obs.spec().per_channel);
  obs.observe(randn({4, 3}, 1));
  EXPECT_THROW(obs.observe(randn({5, 3}, 2)), ShapeError);
  PerChannelMinMaxObserver axis2(make_spec(8, true, QScheme::symmetric, true, 2));
  EXPECT_THROW(axis2.observe(randn({4, 3}, 3)), ShapeError);
  EXPECT_THROW(MinMaxObserver(make_spec(8, true, QScheme::symmetric, true)), ValueError);
}

TEST(PerChannelObserver, MovingAverageAlongAxis1) {
  const double c = 0.5;
  MovingAveragePerChannelMinMaxObserver obs(make_spec(8, true, QScheme::symmetric, true, 1), c);
  const Tensor a = randn({2, 3, 4, 5}, 21), b = randn({2, 3, 4, 5}, 22, 3.0);
  obs.observe(a);
  obs.observe(b);
  std::vector<double> alo, ahi, blo, bhi;
  brute_channels(a, 1, alo, ahi);
  brute_channels(b, 1, blo, bhi);
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_DOUBLE_EQ(obs.min_vals()[ch], alo[ch] + c * (blo[ch] - alo[ch]));
    EXPECT_DOUBLE_EQ(obs.max_vals()[ch], ahi[ch] + c * (bhi[ch] - ahi[ch]));
  }
}

TEST(Observers, DisabledResetAndNothingObserved) {
  for (const char* kind : {"minmax", "moving_average", "histogram", "percentile"}) {
    auto obs = make_observer(kind, QuantSpec{});
    EXPECT_FALSE(obs->has_data());
    try {
      obs->qparams();
      ADD_FAILURE() << kind << ": qparams() before observe() did not throw";
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("has observed nothing"), std::string::npos) << e.what();
    }
    obs->set_enabled(false);
    obs->observe(Tensor::ones({8}));
    EXPECT_FALSE(obs->has_data()) << kind;
    obs->set_enabled(true);
    EXPECT_TRUE(obs->enabled());
    obs->observe(Tensor::full({8}, 2.0));
    const QParams before = obs->qparams();
    obs->set_enabled(false);
    obs->observe(Tensor::full({8}, 100.0));  // ignored
    EXPECT_EQ(obs->qparams().scale, before.scale) << kind;
    obs->reset();
    EXPECT_FALSE(obs->has_data());
    EXPECT_FALSE(obs->enabled());
    EXPECT_THROW(obs->qparams(), ValueError);
  }
}

TEST(Observers, RejectInfAndNaN) {
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  for (const char* kind :
       {"minmax", "moving_average", "per_channel_minmax", "moving_average_per_channel", "histogram", "percentile"}) {
    QuantSpec spec;
    spec.per_channel = std::string(kind).find("per_channel") != std::string::npos;
    for (float bad : bad_values) {
      for (int64_t pos : {0, 13, 36}) {  // in a block, in the tail
        spec.axis = pos % 2;             // per channel: one block of 37, or 37 channels of 1 value
        auto obs = make_observer(kind, spec);
        obs->observe(Tensor::ones({1, 37}));
        const auto saved = obs->state();
        Tensor x = Tensor::ones({1, 37});
        x.data<float>()[pos] = bad;
        try {
          obs->observe(x);
          ADD_FAILURE() << kind << " accepted " << bad;
        } catch (const ValueError& e) {
          const std::string msg = e.what();
          EXPECT_NE(msg.find(kind), std::string::npos) << msg;
          EXPECT_NE(msg.find("inf/NaN"), std::string::npos) << msg;
        }
        // Nothing was recorded.
        const auto after = obs->state();
        for (const auto& kv : saved) EXPECT_EQ(kv.second.to_vector(), after.at(kv.first).to_vector()) << kind;
      }
    }
  }
}

TEST(Observers, StateRoundTripGivesIdenticalQParams) {
  for (const char* kind :
       {"minmax", "moving_average", "per_channel_minmax", "moving_average_per_channel", "histogram", "percentile"}) {
    QuantSpec spec = make_spec(6, false, QScheme::affine);
    spec.per_channel = std::string(kind).find("per_channel") != std::string::npos;
    auto a = make_observer(kind, spec);
    a->observe(randn({4, 3, 5}, 31));
    a->observe(randn({4, 3, 5}, 32, 2.5));
    const auto s = a->state();
    for (const auto& kv : s) EXPECT_EQ(kv.second.dtype(), DType::f64);
    auto b = make_observer(kind, spec);
    b->load_state(s);
    EXPECT_TRUE(b->has_data());
    const QParams pa = a->qparams(), pb = b->qparams();
    EXPECT_EQ(pa.scale, pb.scale) << kind;
    EXPECT_EQ(pa.zero_point, pb.zero_point) << kind;
    // Empty state round-trips to "nothing observed".
    auto c = make_observer(kind, spec);
    b->load_state(c->state());
    EXPECT_FALSE(b->has_data());
    // Mismatches are rejected.
    auto bad = s;
    bad["extra"] = Tensor::zeros({1}, DType::f64);
    EXPECT_THROW(b->load_state(bad), ValueError) << kind;
    bad = s;
    bad.erase(bad.begin());
    EXPECT_THROW(b->load_state(bad), ValueError) << kind;
  }
  MinMaxObserver m(QuantSpec{});
  EXPECT_THROW(m.load_state({{"min_val", Tensor::zeros({2}, DType::f64)}, {"max_val", Tensor::zeros({2}, DType::f64)}}),
               ValueError);
  EXPECT_THROW(m.load_state({{"min_val", Tensor::full({1}, 2.0, DType::f64)}, {"max_val", Tensor::ones({1})}}),
               ValueError);
  HistogramObserver h(QuantSpec{}, 64);
  HistogramObserver h2(QuantSpec{}, 32);
  h2.observe(Tensor::ones({4}));
  EXPECT_THROW(h.load_state(h2.state()), ValueError);
}

// ------------------------------------------------------------ histogram family

TEST(HistogramObserver, OutliersGetClipped) {
  struct Case {
    int bits;
    int64_t n;
    std::vector<float> outliers;
    double max_span_ratio, max_mse_ratio;
  };
  // The MSE-optimal range clips outliers less at 8 bits (finer steps) than at
  // 4: two outliers in a million values, ten in 100k.
  for (const Case& c : {Case{8, 1 << 20, {100.0f, -90.0f}, 0.5, 0.6},
                        Case{4, 100000, {60, -60, 55, 70, -65, 50, 58, -52, 61, 66}, 0.2, 0.5}}) {
    Tensor x = randn({c.n}, 41);
    for (size_t i = 0; i < c.outliers.size(); ++i) x.data<float>()[i * 997] = c.outliers[i];
    const QuantSpec spec = make_spec(c.bits, true, QScheme::affine);
    HistogramObserver hist(spec);
    MinMaxObserver mm(spec);
    hist.observe(x);
    mm.observe(x);
    const auto [lo, hi] = hist.clip_range();
    const double mm_span = mm.max_vals()[0] - mm.min_vals()[0];
    EXPECT_LT(hi - lo, c.max_span_ratio * mm_span) << c.bits << " bits: [" << lo << ", " << hi << "]";
    EXPECT_GT(hi - lo, 4.0) << c.bits << " bits";  // does not clip the bulk
    const double mse_hist = quant_mse(x, hist.qparams()), mse_mm = quant_mse(x, mm.qparams());
    EXPECT_LT(mse_hist, c.max_mse_ratio * mse_mm) << c.bits << " bits";
    // The model error it minimized is close to the measured one.
    EXPECT_NEAR(hist.expected_error(lo, hi) / c.n, mse_hist, 0.2 * mse_hist);
    EXPECT_LT(hist.expected_error(lo, hi), hist.expected_error(mm.min_vals()[0], mm.max_vals()[0]));
  }
}

TEST(HistogramObserver, SearchMatchesExhaustiveBinGrid) {
  // Skewed data with outliers on one side, 128 bins: compare the search with
  // every bin-aligned candidate range.
  Tensor x = randn({20000}, 45);
  float* d = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) d[i] = d[i] > 0 ? 2 * d[i] : d[i];
  for (int i = 0; i < 6; ++i) d[i * 101] = 25.0f + i;
  for (QScheme scheme : {QScheme::affine, QScheme::symmetric}) {
    for (int bits : {3, 6}) {
      HistogramObserver h(make_spec(bits, true, scheme), 128);
      h.observe(x);
      const double w = (h.hist_hi() - h.hist_lo()) / h.bins();
      double grid_best = std::numeric_limits<double>::infinity();
      for (int s = 0; s < h.bins(); ++s) {
        for (int e = s; e < h.bins(); ++e) {
          const double lo = std::clamp(h.hist_lo() + s * w, h.data_min(), h.data_max());
          const double hi = std::clamp(h.hist_lo() + (e + 1) * w, h.data_min(), h.data_max());
          if (lo <= hi) grid_best = std::min(grid_best, h.expected_error(lo, hi));
        }
      }
      const auto [lo, hi] = h.clip_range();
      EXPECT_LE(h.expected_error(lo, hi), grid_best * 1.01) << bits << " bits, [" << lo << ", " << hi << "]";
    }
  }
}

TEST(HistogramObserver, UniformDataKeepsNearlyFullRange) {
  const Tensor x = rand_uniform({50000}, 51, -1.0, 3.0);
  MinMaxObserver mm(QuantSpec{});
  mm.observe(x);
  const double span = mm.max_vals()[0] - mm.min_vals()[0];
  for (QScheme scheme : {QScheme::affine, QScheme::symmetric}) {
    HistogramObserver hist(make_spec(8, true, scheme));
    hist.observe(x);
    const auto [lo, hi] = hist.clip_range();
    EXPECT_NEAR(hi, mm.max_vals()[0], 0.01 * span);
    if (scheme == QScheme::affine) {
      EXPECT_NEAR(lo, mm.min_vals()[0], 0.01 * span);
    }
    expect_valid(hist.qparams());
  }
}

TEST(HistogramObserver, GrowthMovesCountsExactly) {
  HistogramObserver h(QuantSpec{}, 4);
  h.observe(Tensor::from_vector(std::vector<float>{0.0f, 0.5f, 1.5f, 2.5f, 4.0f}, {5}));
  EXPECT_EQ(h.counts(), (std::vector<double>{2, 1, 1, 1}));
  // Range [0, 4], w = 1. -1 needs one bin on the left: lo' = -1, k = 2.
  h.observe(Tensor::from_vector(std::vector<float>{-1.0f}, {1}));
  EXPECT_EQ(h.hist_lo(), -1.0);
  EXPECT_EQ(h.hist_hi(), 7.0);
  EXPECT_EQ(h.counts(), (std::vector<double>{3, 2, 1, 0}));
  EXPECT_EQ(h.data_min(), -1.0);
  EXPECT_EQ(h.data_max(), 4.0);

  // Many growing batches: totals are exact and the range stays tight.
  HistogramObserver g(QuantSpec{});
  double n = 0;
  for (int b = 0; b < 6; ++b) {
    const Tensor x = rand_uniform({1000 + b}, 60 + b, -std::pow(2.0, b), 3 * std::pow(1.7, b));
    g.observe(x);
    n += static_cast<double>(x.numel());
    EXPECT_EQ(g.total_count(), n);
    EXPECT_LE(g.hist_lo(), g.data_min());
    EXPECT_GE(g.hist_hi(), g.data_max());
    const double span = g.data_max() - g.data_min();
    EXPECT_LE(g.hist_hi() - g.hist_lo(), 2 * span + 4 * (g.hist_hi() - g.hist_lo()) / g.bins());
  }
  // A constant first batch, then growth away from it.
  HistogramObserver c(QuantSpec{}, 16);
  c.observe(Tensor::full({10}, 3.0));
  EXPECT_EQ(c.clip_range(), (std::pair<double, double>{3.0, 3.0}));
  expect_valid(c.qparams());
  c.observe(Tensor::full({5}, -1.0));
  EXPECT_EQ(c.total_count(), 15.0);
  EXPECT_EQ(c.counts().front(), 5.0);
  EXPECT_EQ(c.counts().back(), 10.0);
}

TEST(PercentileObserver, HundredIsMinMaxAndLowerClips) {
  Tensor x = rand_uniform({20000}, 71, 0.0, 1.0);
  for (int i = 0; i < 20; ++i) x.data<float>()[i * 500] = 100.0f + i;
  for (QScheme scheme : {QScheme::affine, QScheme::symmetric}) {
    const QuantSpec spec = make_spec(8, false, scheme);
    MinMaxObserver mm(spec);
    PercentileObserver p100(spec, 100.0), p99(spec, 99.0);
    mm.observe(x);
    p100.observe(x);
    p99.observe(x);
    const auto [lo100, hi100] = p100.clip_range();
    EXPECT_EQ(lo100, mm.min_vals()[0]);
    EXPECT_EQ(hi100, mm.max_vals()[0]);
    EXPECT_EQ(p100.qparams().scale, mm.qparams().scale);
    EXPECT_EQ(p100.qparams().zero_point, mm.qparams().zero_point);
    const auto [lo99, hi99] = p99.clip_range();
    EXPECT_NEAR(hi99, 0.99, 0.06);  // the bins are about 0.05 wide here
    EXPECT_NEAR(lo99, 0.01, 0.06);
    EXPECT_LT(p99.qparams().scale[0], 0.05f * mm.qparams().scale[0]);
  }
  EXPECT_THROW(PercentileObserver(QuantSpec{}, 40.0), ValueError);
  EXPECT_THROW(PercentileObserver(QuantSpec{}, 100.5), ValueError);
}

TEST(PercentileObserver, InterpolatesInsideBins) {
  // 100 values 0..99 in 10 bins of width 9.9: the 95th percentile lies in the
  // last bin (counts 10 each), 5/10 of the way through it.
  std::vector<float> v(100);
  for (int i = 0; i < 100; ++i) v[i] = static_cast<float>(i);
  PercentileObserver p(QuantSpec{}, 95.0, 10);
  p.observe(Tensor::from_vector(v, {100}));
  const auto [lo, hi] = p.clip_range();
  EXPECT_NEAR(lo, 0.5 * 9.9, 1e-9);
  EXPECT_NEAR(hi, 9 * 9.9 + 0.5 * 9.9, 1e-9);
}

// ------------------------------------------------------------------ factory

TEST(MakeObserver, KindsAndErrors) {
  const QuantSpec pt;
  QuantSpec pc;
  pc.per_channel = true;
  pc.axis = 1;
  for (const char* k : {"minmax", "moving_average", "histogram", "percentile"}) {
    auto o = make_observer(k, pt);
    EXPECT_EQ(o->name(), k);
    EXPECT_THROW(make_observer(k, pc), ValueError) << k;
  }
  for (const char* k : {"per_channel_minmax", "moving_average_per_channel"}) {
    auto o = make_observer(k, pc);
    EXPECT_EQ(o->name(), k);
    EXPECT_EQ(o->spec().axis, 1);
    EXPECT_THROW(make_observer(k, pt), ValueError) << k;
  }
  try {
    make_observer("kl_divergence", pt);
    ADD_FAILURE() << "unknown kind accepted";
  } catch (const ValueError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("kl_divergence"), std::string::npos) << msg;
    EXPECT_NE(msg.find("moving_average_per_channel"), std::string::npos) << msg;
    EXPECT_NE(msg.find("percentile"), std::string::npos) << msg;
  }
  QuantSpec bad;
  bad.bits = 9;
  EXPECT_THROW(make_observer("minmax", bad), ValueError);
}
