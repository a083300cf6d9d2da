#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

namespace qforge::nn {

namespace {

/// Calls fn(T{}) with T = float or double for a floating tensor.
template <class Fn>
void with_float(const Tensor& t, const char* what, Fn&& fn) {
  if (t.dtype() == DType::f32) {
    fn(float{});
  } else if (t.dtype() == DType::f64) {
    fn(double{});
  } else {
    QF_THROW(DTypeError) << what << ": parameters must be f32 or f64, got " << t.desc();
  }
}

}  // namespace

// ---- Optimizer ---------------------------------------------------------------------

Optimizer::Optimizer(std::string name, std::vector<Variable> params, double lr)
    : name_(std::move(name)), params_(std::move(params)), lr_(lr), state_(params_.size()) {
  QF_CHECK(!params_.empty()) << name_ << ": got an empty parameter list";
  QF_CHECK(std::isfinite(lr) && lr >= 0) << name_ << ": lr must be finite and >= 0, got " << lr;
  for (size_t i = 0; i < params_.size(); ++i) {
    QF_CHECK(params_[i].defined() && params_[i].is_leaf())
        << name_ << ": parameter " << i << " must be a defined leaf Variable";
    for (size_t j = 0; j < i; ++j)
      QF_CHECK(!params_[i].same(params_[j])) << name_ << ": parameter " << i << " repeats parameter " << j;
  }
}

void Optimizer::set_lr(double lr) {
  QF_CHECK(std::isfinite(lr) && lr >= 0) << name_ << ": lr must be finite and >= 0, got " << lr;
  lr_ = lr;
}

void Optimizer::step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Variable& v = params_[i];
    if (!v.has_grad()) continue;
    const Tensor& g = v.grad();
    QF_CHECK_SHAPE(g.shape() == v.shape() && g.dtype() == v.dtype())
        << name_ << ": gradient " << g.desc() << " does not match parameter " << i << " " << v.value().desc();
    update(i, v.value(), g);
  }
  ++steps_;
}

void Optimizer::zero_grad() {
  for (auto& v : params_) v.zero_grad();
}

Tensor& Optimizer::slot(size_t i, const std::string& name, const Tensor& like) {
  auto& m = state_[i];
  auto it = m.find(name);
  if (it == m.end()) it = m.emplace(name, Tensor::zeros(like.shape(), like.dtype())).first;
  return it->second;
}

bool Optimizer::has_slot(size_t i, const std::string& name) const { return state_[i].count(name) != 0; }

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> sd;
  sd["step"] = Tensor::scalar(static_cast<double>(steps_), DType::f64);
  sd["lr"] = Tensor::scalar(lr_, DType::f64);
  sd["num_params"] = Tensor::scalar(static_cast<double>(params_.size()), DType::f64);
  for (size_t i = 0; i < state_.size(); ++i)
    for (const auto& [k, t] : state_[i]) sd[std::to_string(i) + "." + k] = t.clone();
  return sd;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& sd) {
  // Everything is checked before anything is assigned, so a failed load
  // leaves the optimizer as it was.
  auto count = [&](const char* key) {
    auto it = sd.find(key);
    QF_CHECK(it != sd.end() && it->second.numel() == 1) << name_ << ".load_state_dict: missing '" << key << "'";
    const double v = it->second.item();
    QF_CHECK(std::isfinite(v) && v >= 0 && v == std::floor(v) && v < 9.0e15)
        << name_ << ".load_state_dict: '" << key << "' must be a whole number >= 0, got " << v;
    return static_cast<int64_t>(v);
  };
  const int64_t n = count("num_params");
  QF_CHECK(n == static_cast<int64_t>(params_.size()))
      << name_ << ".load_state_dict: the state is for " << n << " parameters, this optimizer has " << params_.size();
  const int64_t steps = count("step");
  auto lr_it = sd.find("lr");
  QF_CHECK(lr_it != sd.end() && lr_it->second.numel() == 1) << name_ << ".load_state_dict: missing 'lr'";
  const double lr = lr_it->second.item();
  QF_CHECK(std::isfinite(lr) && lr >= 0) << name_ << ".load_state_dict: lr must be finite and >= 0, got " << lr;
  const std::vector<std::string> known = slot_names();
  std::vector<std::map<std::string, Tensor>> fresh(params_.size());
  for (const auto& [k, t] : sd) {
    if (k == "step" || k == "lr" || k == "num_params") continue;
    const auto dot = k.find('.');
    size_t idx = 0;
    bool ok = dot != std::string::npos && dot > 0 && k.find_first_not_of("0123456789") == dot;
    if (ok) {
      try {
        idx = std::stoul(k.substr(0, dot));
      } catch (const std::exception&) {
        ok = false;
      }
    }
    const std::string slot_name = ok ? k.substr(dot + 1) : "";
    ok = ok && idx < params_.size() && std::find(known.begin(), known.end(), slot_name) != known.end();
    QF_CHECK(ok) << name_ << ".load_state_dict: unexpected key '" << k << "'";
    const Tensor& p = params_[idx].value();
    if (slot_name == "step") {
      QF_CHECK_SHAPE(t.ndim() == 0 && t.dtype() == DType::f64 && std::isfinite(t.item()) && t.item() >= 0)
          << name_ << ".load_state_dict: '" << k << "' must be a 0-d f64 count, got " << t.desc();
    } else {
      QF_CHECK_SHAPE(t.shape() == p.shape() && t.dtype() == p.dtype())
          << name_ << ".load_state_dict: '" << k << "' is " << t.desc() << ", parameter " << idx << " is "
          << p.desc();
    }
    fresh[idx][slot_name] = t.clone();
  }
  steps_ = steps;
  lr_ = lr;
  state_ = std::move(fresh);
}

// ---- SGD ---------------------------------------------------------------------------

SGD::SGD(std::vector<Variable> params, const SGDOptions& opt) : Optimizer("SGD", std::move(params), opt.lr), opt_(opt) {
  QF_CHECK(opt.momentum >= 0 && opt.dampening >= 0 && opt.weight_decay >= 0)
      << "SGD: momentum, dampening and weight_decay must be >= 0, got " << opt.momentum << ", " << opt.dampening
      << ", " << opt.weight_decay;
  QF_CHECK(!opt.nesterov || (opt.momentum > 0 && opt.dampening == 0))
      << "SGD: nesterov needs momentum > 0 and dampening 0";
}

void SGD::update(size_t i, Tensor& p, const Tensor& g) {
  const bool first = opt_.momentum != 0 && !has_slot(i, "momentum_buffer");
  Tensor* buf = opt_.momentum != 0 ? &slot(i, "momentum_buffer", p) : nullptr;
  with_float(p, "SGD", [&](auto tag) {
    using T = decltype(tag);
    T* pp = p.data<T>();
    const T* pg = g.data<T>();
    T* pb = buf ? buf->data<T>() : nullptr;
    const T rate = static_cast<T>(lr());
    const T wd = static_cast<T>(opt_.decay_vectors || p.ndim() > 1 ? opt_.weight_decay : 0);
    const T mom = static_cast<T>(opt_.momentum), damp = static_cast<T>(1 - opt_.dampening);
    for (int64_t k = 0; k < p.numel(); ++k) {
      T d = pg[k];
      if (wd != 0) d += wd * pp[k];
      if (pb) {
        pb[k] = first ? d : mom * pb[k] + damp * d;
        d = opt_.nesterov ? d + mom * pb[k] : pb[k];
      }
      pp[k] -= rate * d;
    }
  });
}

// ---- Adam / AdamW ------------------------------------------------------------------

Adam::Adam(std::vector<Variable> params, const AdamOptions& opt, bool decoupled_weight_decay)
    : Optimizer(decoupled_weight_decay ? "AdamW" : "Adam", std::move(params), opt.lr),
      opt_(opt),
      decoupled_(decoupled_weight_decay) {
  QF_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1)
      << name() << ": betas must be in [0, 1), got " << opt.beta1 << ", " << opt.beta2;
  QF_CHECK(opt.eps > 0 && opt.weight_decay >= 0)
      << name() << ": need eps > 0 and weight_decay >= 0, got " << opt.eps << ", " << opt.weight_decay;
}

void Adam::update(size_t i, Tensor& p, const Tensor& g) {
  Tensor& m = slot(i, "exp_avg", p);
  Tensor& v = slot(i, "exp_avg_sq", p);
  Tensor& t = slot(i, "step", Tensor::scalar(0, DType::f64));
  const double step = t.item() + 1;
  t.fill_(step);
  const double bc1 = 1 - std::pow(opt_.beta1, step);
  const double bc2_sqrt = std::sqrt(1 - std::pow(opt_.beta2, step));
  with_float(p, name().c_str(), [&](auto tag) {
    using T = decltype(tag);
    T* pp = p.data<T>();
    const T* pg = g.data<T>();
    T* pm = m.data<T>();
    T* pv = v.data<T>();
    const T b1 = static_cast<T>(opt_.beta1), b2 = static_cast<T>(opt_.beta2);
    const T step_size = static_cast<T>(lr() / bc1), inv_bc2 = static_cast<T>(1 / bc2_sqrt);
    const double wd_p = opt_.decay_vectors || p.ndim() > 1 ? opt_.weight_decay : 0;
    const T eps = static_cast<T>(opt_.eps), wd = static_cast<T>(wd_p);
    const T decay = static_cast<T>(1 - lr() * wd_p);
    for (int64_t k = 0; k < p.numel(); ++k) {
      T d = pg[k];
      if (decoupled_) {
        pp[k] *= decay;
      } else if (wd != 0) {
        d += wd * pp[k];
      }
      pm[k] = b1 * pm[k] + (1 - b1) * d;
      pv[k] = b2 * pv[k] + (1 - b2) * d * d;
      pp[k] -= step_size * pm[k] / (std::sqrt(pv[k]) * inv_bc2 + eps);
    }
  });
}

// ---- clipping ----------------------------------------------------------------------

double clip_grad_norm(const std::vector<Variable>& params, double max_norm) {
  QF_CHECK(max_norm > 0) << "clip_grad_norm: max_norm must be > 0, got " << max_norm;
  double sq = 0;
  for (const auto& v : params) {
    if (!v.has_grad()) continue;
    with_float(v.grad(), "clip_grad_norm", [&](auto tag) {
      using T = decltype(tag);
      const T* g = v.grad().template data<T>();
      for (int64_t k = 0; k < v.grad().numel(); ++k) sq += static_cast<double>(g[k]) * g[k];
    });
  }
  const double norm = std::sqrt(sq);
  QF_CHECK(std::isfinite(norm)) << "clip_grad_norm: the gradient norm is " << norm
                                << "; a parameter's gradient holds inf or NaN";
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1) return norm;
  for (const auto& v : params) {
    if (!v.has_grad()) continue;
    Tensor g = v.grad();
    if (!g.is_unique()) g = g.clone();
    with_float(g, "clip_grad_norm", [&](auto tag) {
      using T = decltype(tag);
      T* pg = g.template data<T>();
      for (int64_t k = 0; k < g.numel(); ++k) pg[k] = static_cast<T>(pg[k] * coef);
    });
    const_cast<Variable&>(v).set_grad(g);
  }
  return norm;
}

// ---- schedules -----------------------------------------------------------------------

namespace {

void check_lr(const char* what, double lr) {
  QF_CHECK(std::isfinite(lr) && lr > 0) << what << ": lr must be > 0, got " << lr;
}

std::string fmt(std::ostringstream& os) { return os.str(); }

}  // namespace

ConstantLr::ConstantLr(double lr) : lr_(lr) { check_lr("ConstantLr", lr); }

std::string ConstantLr::describe() const {
  std::ostringstream os;
  os << "constant lr " << lr_;
  return fmt(os);
}

StepLr::StepLr(double lr, int64_t step_size, double gamma) : lr_(lr), gamma_(gamma), step_size_(step_size) {
  check_lr("StepLr", lr);
  QF_CHECK(step_size >= 1 && gamma > 0) << "StepLr: need step_size >= 1 and gamma > 0, got " << step_size << ", "
                                        << gamma;
}

double StepLr::lr_at(int64_t step) const {
  return lr_ * std::pow(gamma_, static_cast<double>(std::max<int64_t>(step, 0) / step_size_));
}

std::string StepLr::describe() const {
  std::ostringstream os;
  os << "step lr " << lr_ << ", x" << gamma_ << " every " << step_size_ << " steps";
  return fmt(os);
}

MultiStepLr::MultiStepLr(double lr, std::vector<int64_t> milestones, double gamma)
    : lr_(lr), gamma_(gamma), milestones_(std::move(milestones)) {
  check_lr("MultiStepLr", lr);
  QF_CHECK(gamma > 0) << "MultiStepLr: gamma must be > 0, got " << gamma;
  QF_CHECK(std::is_sorted(milestones_.begin(), milestones_.end()))
      << "MultiStepLr: milestones must be increasing";
}

double MultiStepLr::lr_at(int64_t step) const {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), step) - milestones_.begin();
  return lr_ * std::pow(gamma_, static_cast<double>(passed));
}

std::string MultiStepLr::describe() const {
  std::ostringstream os;
  os << "multistep lr " << lr_ << ", x" << gamma_ << " at steps";
  for (auto m : milestones_) os << " " << m;
  return fmt(os);
}

CosineLr::CosineLr(double lr, int64_t total_steps, double min_lr) : lr_(lr), min_lr_(min_lr), total_(total_steps) {
  check_lr("CosineLr", lr);
  QF_CHECK(total_steps >= 1 && min_lr >= 0 && min_lr <= lr)
      << "CosineLr: need total_steps >= 1 and 0 <= min_lr <= lr, got " << total_steps << ", " << min_lr;
}

double CosineLr::lr_at(int64_t step) const {
  if (step >= total_) return min_lr_;
  const double t = static_cast<double>(std::max<int64_t>(step, 0)) / static_cast<double>(total_);
  return min_lr_ + (lr_ - min_lr_) * 0.5 * (1 + std::cos(std::numbers::pi * t));
}

std::string CosineLr::describe() const {
  std::ostringstream os;
  os << "cosine lr " << lr_ << " -> " << min_lr_ << " over " << total_ << " steps";
  return fmt(os);
}

OneCycleLr::OneCycleLr(double max_lr, int64_t total_steps, double pct_start, double div_factor,
                       double final_div_factor)
    : max_lr_(max_lr), pct_(pct_start), div_(div_factor), final_div_(final_div_factor), total_(total_steps) {
  check_lr("OneCycleLr", max_lr);
  QF_CHECK(total_steps >= 2 && pct_start > 0 && pct_start < 1 && div_factor > 0 && final_div_factor > 0)
      << "OneCycleLr: need total_steps >= 2, pct_start in (0, 1) and positive div factors, got " << total_steps
      << ", " << pct_start << ", " << div_factor << ", " << final_div_factor;
}

double OneCycleLr::lr_at(int64_t step) const {
  const double initial = max_lr_ / div_, final_lr = initial / final_div_;
  const double up_end = pct_ * static_cast<double>(total_) - 1, down_end = static_cast<double>(total_) - 1;
  const double s = static_cast<double>(std::clamp<int64_t>(step, 0, total_ - 1));
  auto anneal = [](double from, double to, double t) { return to + (from - to) / 2 * (1 + std::cos(std::numbers::pi * t)); };
  if (s <= up_end && up_end > 0) return anneal(initial, max_lr_, s / up_end);
  const double start = std::max(up_end, 0.0);
  return anneal(max_lr_, final_lr, (s - start) / (down_end - start));
}

std::string OneCycleLr::describe() const {
  std::ostringstream os;
  os << "one-cycle lr up to " << max_lr_ << " over " << total_ << " steps (" << pct_ * 100 << "% rising)";
  return fmt(os);
}

WarmupLr::WarmupLr(std::shared_ptr<LrSchedule> inner, int64_t warmup_steps, double start_factor)
    : inner_(std::move(inner)), warmup_(warmup_steps), start_(start_factor) {
  QF_CHECK(inner_ != nullptr) << "WarmupLr: no inner schedule";
  QF_CHECK(warmup_steps >= 0 && start_factor > 0 && start_factor <= 1)
      << "WarmupLr: need warmup_steps >= 0 and start_factor in (0, 1], got " << warmup_steps << ", "
      << start_factor;
}

double WarmupLr::lr_at(int64_t step) const {
  const double base = inner_->lr_at(step);
  if (step >= warmup_) return base;
  const double f = start_ + (1 - start_) * static_cast<double>(std::max<int64_t>(step, 0)) / warmup_;
  return base * f;
}

std::string WarmupLr::describe() const {
  std::ostringstream os;
  os << inner_->describe() << ", linear warm-up over " << warmup_ << " steps from x" << start_;
  return fmt(os);
}

ContinuedLr::ContinuedLr(std::shared_ptr<LrSchedule> base, int64_t offset) : base_(std::move(base)), offset_(offset) {
  QF_CHECK(base_ != nullptr && offset >= 0) << "ContinuedLr: needs a schedule and an offset >= 0, got " << offset;
}

std::string ContinuedLr::describe() const { return base_->describe() + ", from step " + std::to_string(offset_); }

}  // namespace qforge::nn
