#pragma once
// FakeQuantize: the module that simulates quantizing one tensor stream (a
// layer's weight or output activation) during QAT and PTQ calibration.
//
// It owns an observer and, for the LSQ method, a learnable step size (and
// optionally offset). Three switches, all plain methods a schedule calls:
//  - fake quant on/off: off passes x through unchanged (progressive QAT,
//    PTQ calibration);
//  - observer on/off: off freezes the qparams;
//  - LSQ learning on/off: off uses the observer's qparams with the STE; on
//    starts learning from them (or from the data, LsqInit::data).
// Observers record in training mode, and in eval mode only while
// calibrating (set_calibrating, which quant::prepare() turns on), so that
// evaluating a model never moves its qparams.
//
// State dict: buffers "scale" f32 [C] and "zero_point" i32 [C] hold the
// observer-derived qparams that the STE path uses (C = 1 per tensor, the
// channel count per channel), "ready" i32 [] is 1 once they are valid, and
// for LSQ the parameter "lsq_scale" f32 [C] (and "lsq_offset" with LSQ+) plus
// the buffers "lsq_zero_point" f32 [C] and "lsq_active" i32 []. The
// observer's statistics are not in the state dict (their size is not known
// up front); observer_state()/load_observer_state() in quant/prepare.h carry
// them through checkpoints.

#include <map>
#include <memory>
#include <string>

#include "nn/module.h"
#include "autograd/ops.h"
#include "quant/observer.h"
#include "quant/qconfig.h"

namespace qforge::quant {

namespace detail {
/// Lets ops fake-quantize their own outputs (FakeQuantize::fusable); on by
/// default. Off forces the separate passes (tests compare the two).
void set_fuse_output_fake_quant(bool on);
}  // namespace detail

/// Simulates quantizing one tensor stream (see the file comment). Owns its
/// observer and, for LSQ, its step-size parameters; the QAT module it belongs to
/// owns it as a child (shared_ptr), and other modules link to it only weakly.
class FakeQuantize : public nn::Module {
 public:
  /// `channels` is the size of the channel axis for per-channel configs
  /// (the layer's output channels) and ignored per tensor. Validates cfg.
  FakeQuantize(const TensorQConfig& cfg, int64_t channels = 1);

  /// Observes x (when the observer records), then returns its fake-quantized
  /// value (or x itself when fake quant is off). Throws ValueError when fake
  /// quant is on but there are no qparams yet (nothing was observed: a model
  /// evaluated before any training or calibration).
  autograd::Variable forward(const autograd::Variable& x) override;
  std::string extra_repr() const override;

  /// True when forward() would be per-tensor STE fake quant whose observer,
  /// if it records, is a min/max observer: then an op can quantize its own
  /// output through fused_step() (batch norm + ReLU does) with the values
  /// and gradients of forward(). False while fusion is switched off.
  bool fusable() const;
  /// forward()'s bookkeeping for a batch whose range is [lo, hi] (the
  /// observer records it when it would record the batch; lo > hi means an
  /// empty batch, which it does not record), then the qparams to quantize
  /// that batch with. Only when fusable().
  autograd::FakeQuantParams fused_step(double lo, double hi);
  /// A hook for BatchNormOptions::output_fake_quant that calls fused_step()
  /// on this quantizer (which must outlive the call).
  autograd::FakeQuantHook fused_hook() {
    return [this](double lo, double hi) { return fused_step(lo, hi); };
  }

  /// Off: forward() returns x unchanged (the observer still records when it
  /// would). On: forward() fake-quantizes. Changes no qparams.
  void enable_fake_quant(bool on) { fake_quant_on_ = on; }
  bool fake_quant_enabled() const { return fake_quant_on_; }
  /// Off freezes the qparams: first syncs the buffers with the observer
  /// (sync()), then stops it recording. On: the observer records again.
  void enable_observer(bool on);
  bool observer_enabled() const { return observer_->enabled(); }
  /// While on, the observer records in eval mode too (PTQ calibration).
  void set_calibrating(bool on) { calibrating_ = on; }
  bool calibrating() const { return calibrating_; }
  /// LSQ only (ValueError otherwise): switches between the observer's
  /// qparams and the learned ones. Turning it on does not overwrite a step
  /// size that was already learned (restored from a checkpoint).
  void set_lsq_learning(bool on);
  /// True while the LSQ step is being learned (buffer "lsq_active" is 1: set by
  /// the first recording forward with fake quant on after set_lsq_learning(true),
  /// or restored from a state dict). Always false for STE.
  bool lsq_learning() const;
  bool is_lsq() const { return cfg_.method == FakeQuantMethod::lsq; }

  /// The qparams the forward uses now (observer-derived, or the learned step
  /// and rounded offset for LSQ). ValueError when there are none yet.
  QParams qparams();
  /// True once qparams() has something to return.
  bool has_qparams();

  /// Brings the scale/zero_point buffers up to date with the observer (a
  /// no-op when they are, or when it has no data). The forward does this
  /// lazily; freezing the observer, finish_calibration() and the Trainer
  /// hook's epoch end call it so that state dicts hold current qparams.
  void sync();
  /// Restores observer statistics (Observer::load_state) and marks the
  /// buffers for a refresh.
  void load_observer_state(const std::map<std::string, Tensor>& state);

  /// The observer, for reading. Restore its state through
  /// load_observer_state() so the buffers follow.
  Observer& observer() { return *observer_; }
  const TensorQConfig& config() const { return cfg_; }
  int64_t channels() const { return channels_; }
  int32_t qmin() const { return qmin_; }
  int32_t qmax() const { return qmax_; }

 private:
  // Copies the observer's qparams into the scale/zero_point buffers.
  void refresh_from_observer();
  // Sets the LSQ step (and offset or fixed zero point) from the observer or x.
  void init_lsq(const Tensor& x);
  int axis() const { return cfg_.spec.per_channel ? cfg_.spec.axis : -1; }

  TensorQConfig cfg_;
  int64_t channels_;
  int32_t qmin_, qmax_;
  std::unique_ptr<Observer> observer_;
  bool fake_quant_on_ = true;
  bool calibrating_ = false;
  bool dirty_ = false;  // the observer saw data the buffers do not reflect yet
  bool lsq_pending_ = false;  // LSQ learning was switched on; initialize at the next recording forward
};

}  // namespace qforge::quant
