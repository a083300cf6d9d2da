#pragma once
// Optimizers (SGD, Adam, AdamW), gradient clipping and learning-rate
// schedules, with PyTorch's update rules so that recipes carry over.
//
// An optimizer holds Variable handles to the parameters it updates (the same
// parameters the module holds). Its state (momentum buffers, moments, step
// count) round-trips through state_dict() for checkpoints. Schedules are pure
// functions of the step number, so resuming needs only the step.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace qforge::nn {

using autograd::Variable;

/// Base of the optimizers: holds Variable handles to the parameters (the
/// module's own) plus per-parameter state slots; subclasses implement update().
class Optimizer {
 public:
  /// `name` appears in messages and checkpoints. ValueError for an empty list, an
  /// undefined or non-leaf parameter, a parameter listed twice, or an lr that is
  /// not finite and >= 0.
  Optimizer(std::string name, std::vector<Variable> params, double lr);
  virtual ~Optimizer() = default;

  /// Applies one update from the parameters' current gradients. Parameters
  /// without a gradient are skipped (their state does not advance).
  void step();
  /// Clears every parameter's gradient.
  void zero_grad();

  double lr() const { return lr_; }
  /// Sets the rate used from the next step() on (saved by state_dict()); ValueError
  /// unless finite and >= 0. The Trainer calls it before every step (with the
  /// schedule's rate when it has a schedule).
  void set_lr(double lr);
  /// Number of step() calls so far.
  int64_t steps() const { return steps_; }
  const std::vector<Variable>& params() const { return params_; }
  const std::string& name() const { return name_; }

  /// Optimizer state by name ("step", "lr", "num_params", "<param
  /// index>.<slot>"). Tensors are copies.
  std::map<std::string, Tensor> state_dict() const;
  /// Restores what state_dict() gave, for the same parameter list; throws
  /// ValueError naming what does not fit.
  void load_state_dict(const std::map<std::string, Tensor>& sd);

 protected:
  /// Updates parameter i (value p, gradient g, both f32 or both f64).
  virtual void update(size_t i, Tensor& p, const Tensor& g) = 0;
  /// The per-parameter slots this optimizer keeps (load_state_dict accepts
  /// only these).
  virtual std::vector<std::string> slot_names() const = 0;
  /// Per-parameter state slots ("momentum_buffer", "exp_avg", ...).
  Tensor& slot(size_t i, const std::string& name, const Tensor& like);
  bool has_slot(size_t i, const std::string& name) const;

 private:
  std::string name_;
  std::vector<Variable> params_;
  double lr_;
  int64_t steps_ = 0;
  std::vector<std::map<std::string, Tensor>> state_;
};

/// SGD's settings, PyTorch's names; SGD's constructor throws ValueError outside the stated ranges.
struct SGDOptions {
  /// Learning rate, finite and >= 0.
  double lr = 0.01;
  /// Momentum factor, >= 0 (0: plain SGD, no momentum buffer).
  double momentum = 0;
  /// Dampening of the gradient added into the momentum buffer, >= 0.
  double dampening = 0;
  /// L2 penalty added to the gradient (g += weight_decay * p), >= 0.
  double weight_decay = 0;
  /// Nesterov momentum; needs momentum > 0 and dampening 0.
  bool nesterov = false;
  /// false: no weight decay on parameters of dimension <= 1 (biases, norm
  /// scales and shifts, quantizer step sizes), only on weight matrices and kernels.
  bool decay_vectors = true;
};

/// PyTorch's SGD: g += wd·p; with momentum, buf = g on the first step and
/// buf = momentum·buf + (1 - dampening)·g after; g = g + momentum·buf
/// (nesterov) or buf; p -= lr·g.
class SGD : public Optimizer {
 public:
  /// ValueError for options outside SGDOptions' ranges, or as Optimizer's constructor.
  SGD(std::vector<Variable> params, const SGDOptions& opt);
  const SGDOptions& options() const { return opt_; }

 protected:
  void update(size_t i, Tensor& p, const Tensor& g) override;
  std::vector<std::string> slot_names() const override { return {"momentum_buffer"}; }

 private:
  SGDOptions opt_;
};

/// Adam's and AdamW's settings; the constructor throws ValueError outside the stated ranges.
struct AdamOptions {
  /// Learning rate, finite and >= 0.
  double lr = 1e-3;
  /// Decay of the first-moment average, in [0, 1).
  double beta1 = 0.9;
  /// Decay of the second-moment average, in [0, 1).
  double beta2 = 0.999;
  /// Added to the bias-corrected sqrt of the second moment, > 0.
  double eps = 1e-8;
  /// >= 0: an L2 penalty added to the gradient for Adam, decoupled decay
  /// (p *= 1 - lr * weight_decay) for AdamW.
  double weight_decay = 0;
  /// false: no weight decay on parameters of dimension <= 1 (biases, norm
  /// scales and shifts, quantizer step sizes), only on weight matrices and kernels.
  bool decay_vectors = true;
};

/// PyTorch's Adam (L2 penalty added to the gradient) and, with decoupled
/// weight decay, AdamW (p *= 1 - lr·wd before the Adam step). The per-
/// parameter step count drives the bias corrections.
class Adam : public Optimizer {
 public:
  /// decoupled_weight_decay selects AdamW's rule and name. ValueError for options
  /// outside AdamOptions' ranges, or as Optimizer's constructor.
  Adam(std::vector<Variable> params, const AdamOptions& opt, bool decoupled_weight_decay = false);
  const AdamOptions& options() const { return opt_; }

 protected:
  void update(size_t i, Tensor& p, const Tensor& g) override;
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq", "step"}; }

 private:
  AdamOptions opt_;
  bool decoupled_;
};

/// Adam with decoupled weight decay (Loshchilov and Hutter). weight_decay
/// comes from AdamOptions (default 0); PyTorch's AdamW defaults to 1e-2, so
/// set it explicitly when porting a recipe.
class AdamW : public Adam {
 public:
  AdamW(std::vector<Variable> params, AdamOptions opt) : Adam(std::move(params), opt, true) {}
};

/// Scales all gradients so that their global norm is at most max_norm and
/// returns the norm before scaling. Variables without a gradient are skipped.
/// A non-finite norm, or max_norm <= 0, throws ValueError (the step would
/// poison the weights).
double clip_grad_norm(const std::vector<Variable>& params, double max_norm);

// ---- learning-rate schedules -------------------------------------------------

/// A learning rate as a function of the optimizer step (0-based).
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  /// The learning rate at 0-based optimizer step `step`; a pure function of it.
  virtual double lr_at(int64_t step) const = 0;
  /// A one-line description for logs. Checkpoints store it and resuming requires
  /// the same text (Trainer::load_checkpoint).
  virtual std::string describe() const = 0;
};

/// The same rate throughout.
class ConstantLr : public LrSchedule {
 public:
  /// ValueError unless lr is finite and > 0.
  explicit ConstantLr(double lr);
  double lr_at(int64_t) const override { return lr_; }
  std::string describe() const override;

 private:
  double lr_;
};

/// lr · gamma^floor(step / step_size).
class StepLr : public LrSchedule {
 public:
  /// ValueError unless lr > 0 (finite), step_size >= 1 and gamma > 0.
  StepLr(double lr, int64_t step_size, double gamma = 0.1);
  double lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  double lr_, gamma_;
  int64_t step_size_;
};

/// lr · gamma^(number of milestones <= step).
class MultiStepLr : public LrSchedule {
 public:
  /// ValueError unless lr > 0 (finite), gamma > 0 and milestones are non-decreasing.
  MultiStepLr(double lr, std::vector<int64_t> milestones, double gamma = 0.1);
  double lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  double lr_, gamma_;
  std::vector<int64_t> milestones_;
};

/// Cosine annealing from lr to min_lr over total_steps, then min_lr.
class CosineLr : public LrSchedule {
 public:
  /// ValueError unless lr > 0 (finite), total_steps >= 1 and 0 <= min_lr <= lr.
  CosineLr(double lr, int64_t total_steps, double min_lr = 0);
  double lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  double lr_, min_lr_;
  int64_t total_;
};

/// PyTorch's OneCycleLR learning rate (two phases, cosine annealing): from
/// max_lr / div_factor up to max_lr over pct_start of the steps, then down to
/// max_lr / (div_factor · final_div_factor) at the last step. Unlike PyTorch
/// it does not cycle momentum (betas stay as the optimizer has them).
class OneCycleLr : public LrSchedule {
 public:
  /// ValueError unless max_lr > 0 (finite), total_steps >= 2, pct_start in (0, 1)
  /// and both div factors > 0.
  OneCycleLr(double max_lr, int64_t total_steps, double pct_start = 0.3, double div_factor = 25,
             double final_div_factor = 1e4);
  double lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  double max_lr_, pct_, div_, final_div_;
  int64_t total_;
};

/// Linear warm-up in front of another schedule: the inner rate times a
/// factor rising linearly from start_factor at step 0 to 1 at warmup_steps.
class WarmupLr : public LrSchedule {
 public:
  /// start_factor in (0, 1], as PyTorch's LinearLR (default 1/3). The factor
  /// multiplies the inner schedule while it runs (it does not delay it).
  /// ValueError for a null inner schedule, warmup_steps < 0 or a
  /// start_factor outside (0, 1].
  WarmupLr(std::shared_ptr<LrSchedule> inner, int64_t warmup_steps, double start_factor = 1.0 / 3.0);
  double lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  std::shared_ptr<LrSchedule> inner_;
  int64_t warmup_;
  double start_;
};

/// Another schedule continued from step `offset`: step s here is step
/// s + offset there. A second training stage (QAT after FP32) uses it to
/// pick up the first stage's schedule where it left off, so that the two
/// stages form one run.
class ContinuedLr : public LrSchedule {
 public:
  /// ValueError unless base is non-null and offset >= 0.
  ContinuedLr(std::shared_ptr<LrSchedule> base, int64_t offset);
  double lr_at(int64_t step) const override { return base_->lr_at(step + offset_); }
  std::string describe() const override;

 private:
  std::shared_ptr<LrSchedule> base_;
  int64_t offset_;
};

}  // namespace qforge::nn
