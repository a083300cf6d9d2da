#include "quant/fake_quantize.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "core/error.h"

namespace qforge::quant {

using autograd::Variable;

namespace {

std::unique_ptr<Observer> observer_for(const TensorQConfig& c) {
  if (c.observer == "minmax") return std::make_unique<MinMaxObserver>(c.spec);
  if (c.observer == "moving_average")
    return std::make_unique<MovingAverageMinMaxObserver>(c.spec, c.averaging_constant);
  if (c.observer == "per_channel_minmax") return std::make_unique<PerChannelMinMaxObserver>(c.spec);
  if (c.observer == "moving_average_per_channel")
    return std::make_unique<MovingAveragePerChannelMinMaxObserver>(c.spec, c.averaging_constant);
  if (c.observer == "histogram") return std::make_unique<HistogramObserver>(c.spec);
  if (c.observer == "percentile") return std::make_unique<PercentileObserver>(c.spec, c.percentile);
  QF_THROW(ValueError) << "unknown observer '" << c.observer << "'";
  __builtin_unreachable();
}

int32_t scalar_i32(const Tensor& t) { return t.data<int32_t>()[0]; }

}  // namespace

FakeQuantize::FakeQuantize(const TensorQConfig& cfg, int64_t channels)
    : nn::Module("FakeQuantize"), cfg_(cfg), channels_(cfg.spec.per_channel ? channels : 1) {
  cfg_.validate("FakeQuantize");
  QF_CHECK(channels_ >= 1) << "FakeQuantize: a per-channel config needs the channel count, got " << channels;
  qmin_ = cfg_.spec.qmin();
  qmax_ = cfg_.spec.qmax();
  observer_ = observer_for(cfg_);
  register_buffer("scale", Tensor::ones({channels_}));
  register_buffer("zero_point", Tensor::zeros({channels_}, DType::i32));
  register_buffer("ready", Tensor::scalar(0, DType::i32));
  if (is_lsq()) {
    register_parameter("lsq_scale", Tensor::ones({channels_}));
    if (cfg_.lsq_learn_offset) register_parameter("lsq_offset", Tensor::zeros({channels_}));
    register_buffer("lsq_zero_point", Tensor::zeros({channels_}));
    register_buffer("lsq_active", Tensor::scalar(0, DType::i32));
  }
}

void FakeQuantize::enable_observer(bool on) {
  if (!on) sync();  // freezing: the buffers hold the final qparams from now on
  observer_->set_enabled(on);
}

void FakeQuantize::sync() {
  if (observer_->has_data() && (dirty_ || scalar_i32(buffer("ready")) != 1)) refresh_from_observer();
}

void FakeQuantize::load_observer_state(const std::map<std::string, Tensor>& state) {
  observer_->load_state(state);
  dirty_ = observer_->has_data();
}

void FakeQuantize::set_lsq_learning(bool on) {
  QF_CHECK(is_lsq()) << "set_lsq_learning: this FakeQuantize uses the STE method, not LSQ";
  if (!on) {
    buffer("lsq_active").data<int32_t>()[0] = 0;
    lsq_pending_ = false;
    return;
  }
  lsq_pending_ = !lsq_learning();
}

bool FakeQuantize::lsq_learning() const {
  return is_lsq() && scalar_i32(const_cast<FakeQuantize*>(this)->buffer("lsq_active")) == 1;
}

void FakeQuantize::refresh_from_observer() {
  const QParams p = observer_->qparams();
  QF_CHECK(static_cast<int64_t>(p.channels()) == channels_)
      << "FakeQuantize: the observer produced " << p.channels() << " scales for " << channels_ << " channels";
  std::copy(p.scale.begin(), p.scale.end(), buffer("scale").data<float>());
  std::copy(p.zero_point.begin(), p.zero_point.end(), buffer("zero_point").data<int32_t>());
  buffer("ready").data<int32_t>()[0] = 1;
  dirty_ = false;
}

void FakeQuantize::init_lsq(const Tensor& x) {
  float* s = param("lsq_scale").value().data<float>();
  float* z = cfg_.lsq_learn_offset ? param("lsq_offset").value().data<float>()
                                   : buffer("lsq_zero_point").data<float>();
  sync();
  const bool have_obs = scalar_i32(buffer("ready")) == 1;
  // The zero point: the observer's when it has seen data, else the scheme's
  // default (what an empty range gives).
  const QParams zero = qparams_from_range(std::vector<float>(channels_, 0.f), std::vector<float>(channels_, 0.f),
                                          cfg_.spec);
  for (int64_t c = 0; c < channels_; ++c)
    z[c] = static_cast<float>(have_obs ? buffer("zero_point").data<int32_t>()[c] : zero.zero_point[c]);
  if (cfg_.lsq_init == LsqInit::observer && have_obs) {
    std::copy_n(buffer("scale").data<float>(), channels_, s);
  } else {
    // 2 * mean|x| / sqrt(Qp) per channel.
    QF_CHECK_DTYPE(x.dtype() == DType::f32) << "FakeQuantize (LSQ): expects f32 input, got " << x.desc();
    std::vector<double> sum(channels_, 0.0);
    std::vector<int64_t> cnt(channels_, 0);
    const float* px = x.data<float>();
    int64_t outer = 1, inner = x.numel();
    if (axis() >= 0) {
      QF_CHECK_SHAPE(axis() < x.ndim() && x.size(axis()) == channels_)
          << "FakeQuantize: " << x.desc() << " does not have " << channels_ << " channels along axis " << axis();
      outer = 1;
      for (int d = 0; d < axis(); ++d) outer *= x.size(d);
      inner = x.numel() / (outer * channels_);
    }
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < channels_; ++c) {
        const float* p = px + (o * channels_ + c) * inner;
        double acc = 0;
        for (int64_t i = 0; i < inner; ++i) acc += std::fabs(p[i]);
        sum[c] += acc;
        cnt[c] += inner;
      }
    const double qp = std::sqrt(static_cast<double>(qmax_));
    for (int64_t c = 0; c < channels_; ++c) {
      const double mean_abs = cnt[c] ? sum[c] / static_cast<double>(cnt[c]) : 0.0;
      const double step = 2.0 * mean_abs / qp;
      s[c] = step > kMinScale ? static_cast<float>(step) : kEmptyRangeScale;
    }
  }
  buffer("lsq_active").data<int32_t>()[0] = 1;
  lsq_pending_ = false;
}

namespace {
bool g_fuse_output = true;
}  // namespace
void detail::set_fuse_output_fake_quant(bool on) { g_fuse_output = on; }

bool FakeQuantize::fusable() const {
  if (!g_fuse_output || is_lsq() || !fake_quant_on_ || axis() >= 0 || channels_ != 1) return false;
  const auto* range = dynamic_cast<const RangeObserver*>(observer_.get());
  const bool records = is_training() || calibrating_;
  return !records || !observer_->enabled() || (range && range->min_vals().size() <= 1 && !range->spec().per_channel);
}

autograd::FakeQuantParams FakeQuantize::fused_step(double lo, double hi) {
  QF_CHECK(fusable()) << "FakeQuantize::fused_step: this quantizer cannot be fused (" << cfg_.describe() << ")";
  const bool records = is_training() || calibrating_;
  // lo > hi: no values, as observe() of an empty tensor; a NaN lo (an inf or
  // NaN output) goes on to observe_range(), which refuses it as observe() does.
  if (records && observer_->enabled() && !(lo > hi)) {
    static_cast<RangeObserver&>(*observer_).observe_range(lo, hi);
    dirty_ = observer_->has_data();
  }
  sync();
  QF_CHECK(scalar_i32(buffer("ready")) == 1)
      << "FakeQuantize: no quantization parameters yet; the observer has seen no data (train or calibrate the "
         "model before evaluating it with fake quant on)";
  autograd::FakeQuantParams p;
  p.scale = buffer("scale").data<float>()[0];
  p.zero_point = buffer("zero_point").data<int32_t>()[0];
  p.qmin = qmin_;
  p.qmax = qmax_;
  return p;
}

Variable FakeQuantize::forward(const Variable& x) {
  const bool records = is_training() || calibrating_;
  const bool learning = lsq_learning();
  if (records && observer_->enabled() && !learning) {
    observer_->observe(x.value());
    dirty_ = observer_->has_data();
  }
  // LSQ starts learning at the first recording forward with fake quant on
  // (until then its observer keeps recording, as for the STE).
  if (lsq_pending_ && !lsq_learning() && records && fake_quant_on_) init_lsq(x.value());
  if (!fake_quant_on_) return x;

  if (lsq_learning()) {
    Variable& scale = param("lsq_scale");
    {
      // Keep the step positive: project it back above eps after each update.
      float* s = scale.value().data<float>();
      for (int64_t c = 0; c < channels_; ++c)
        if (!(s[c] >= kMinScale)) s[c] = kMinScale;
    }
    Variable offset = cfg_.lsq_learn_offset ? param("lsq_offset") : Variable(buffer("lsq_zero_point"));
    const double n = static_cast<double>(x.numel()) / static_cast<double>(channels_);
    const double gs = cfg_.lsq_grad_scale ? 1.0 / std::sqrt(std::max(1.0, n) * qmax_) : 1.0;
    return autograd::lsq_fake_quantize(x, scale, offset, qmin_, qmax_, axis(), gs);
  }
  sync();
  QF_CHECK(scalar_i32(buffer("ready")) == 1)
      << "FakeQuantize: no quantization parameters yet; the observer has seen no data (train or calibrate the "
         "model before evaluating it with fake quant on)";
  return autograd::fake_quantize(x, buffer("scale"), buffer("zero_point"), qmin_, qmax_, axis());
}

bool FakeQuantize::has_qparams() {
  return lsq_learning() || observer_->has_data() || scalar_i32(buffer("ready")) == 1;
}

QParams FakeQuantize::qparams() {
  QParams p;
  p.qmin = qmin_;
  p.qmax = qmax_;
  p.axis = axis();
  if (lsq_learning()) {
    const float* s = param("lsq_scale").value().data<float>();
    const float* z = cfg_.lsq_learn_offset ? param("lsq_offset").value().data<float>()
                                           : buffer("lsq_zero_point").data<float>();
    for (int64_t c = 0; c < channels_; ++c) {
      p.scale.push_back(s[c] >= kMinScale ? s[c] : kMinScale);
      const float zr = std::fmin(std::fmax(round_half_even(z[c]), static_cast<float>(qmin_)), static_cast<float>(qmax_));
      p.zero_point.push_back(static_cast<int32_t>(zr));
    }
    return p;
  }
  sync();
  QF_CHECK(scalar_i32(buffer("ready")) == 1) << "FakeQuantize: no quantization parameters yet (nothing observed)";
  const float* s = buffer("scale").data<float>();
  const int32_t* z = buffer("zero_point").data<int32_t>();
  p.scale.assign(s, s + channels_);
  p.zero_point.assign(z, z + channels_);
  return p;
}

std::string FakeQuantize::extra_repr() const {
  std::ostringstream s;
  s << cfg_.describe();
  if (cfg_.spec.per_channel) s << ", channels=" << channels_;
  s << (fake_quant_on_ ? "" : ", fake_quant=off") << (observer_->enabled() ? "" : ", observer=off");
  return s.str();
}

}  // namespace qforge::quant
