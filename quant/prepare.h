#pragma once
// Preparing a float model for quantization, and the switches a QAT schedule
// turns.
//
//   auto model = nn::make_model("mnist_cnn");        // trained in float
//   quant::prepare_qat(*model);                      // fuse + swap, in place
//   auto opt = std::make_shared<nn::Adam>(model->parameters(), ...);
//   ... train; quant::apply_qat_schedule(*model, schedule, epoch, step) ...
//
// prepare_qat() fuses Conv-BN(-ReLU), Conv-ReLU, Linear-ReLU and
// Linear-BN1d(-ReLU) groups and swaps every Conv2d / Linear / QuantStub /
// Add / AdaptiveAvgPool2d(1) / AvgPool2d (with padding counted) whose
// qconfig is not `none` for its QAT module (quant/qat_modules.h). It
// works in place: a fused group's first module becomes the QAT module and the
// others become Identity, so every other name in the tree stays put. The QAT
// modules share the float parameters, so an optimizer built before the swap
// keeps training them; LSQ step sizes are new parameters, so build the
// optimizer after prepare_qat() when using LSQ.
//
// prepare() is the PTQ variant: the same swap with the model in eval mode,
// observers recording (calibrating) and fake quant off. Run calibration
// batches through it, then finish_calibration().

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/module.h"
#include "quant/qconfig.h"

namespace qforge::quant {

/// One fusion group: dotted module names, in data-flow order.
using FusionGroup = std::vector<std::string>;

/// What prepare_qat() and prepare() swap and fuse. Taken by const reference and
/// not kept after the call.
struct PrepareOptions {
  /// Which modules get which QConfig; a module resolving to std::nullopt (and
  /// every fusion group whose first module does) stays in float.
  QConfigMap qconfig;
  /// Find fusion groups in every Sequential (find_fusion_groups()).
  bool auto_fuse = true;
  /// Explicit groups, fused in addition to (and before) the automatic ones.
  /// Members must be siblings; under a Sequential, consecutive and in order.
  std::vector<FusionGroup> fusion_groups;
  /// Require an nn::QuantStub in the model (the int8 model's input
  /// boundary). Turn off only for experiments that never export.
  bool require_quant_stub = true;
};

/// Runs of consecutive children of every Sequential in the tree that match
/// a fusable pattern, longest first: Conv2d BatchNorm2d ReLU|ReLU6,
/// Conv2d BatchNorm2d, Conv2d ReLU|ReLU6, Linear BatchNorm1d ReLU|ReLU6,
/// Linear BatchNorm1d, Linear ReLU|ReLU6.
std::vector<FusionGroup> find_fusion_groups(const nn::Module& root);

/// QAT preparation, in place (see the file comment). Validates everything
/// before changing anything: unknown names, groups that do not match a
/// pattern, names in two groups, and invalid qconfigs throw ValueError and
/// leave the model untouched. Leaves the model in training mode, with fake
/// quant and observers on.
void prepare_qat(nn::Module& root, const PrepareOptions& options = {});
/// Links every QAT layer to the quantizer whose codes feed it, along each
/// Sequential chain: a QATQuantStub, a QAT layer or a block's QATAdd sets the
/// current quantizer; Identity, MaxPool2d, Flatten, Dropout, ReLU and
/// QATAvgPool keep it (their outputs stay on the quantization grid; the pool
/// is linked to it); nested Sequentials continue the chain; a BasicBlock
/// links its main path and shortcut from the block's input and its add to
/// both; anything else (and DeQuantStub) ends it. prepare_qat() and
/// prepare() call it; with the link, eval mode runs the int8 arithmetic.
void link_quantizers(nn::Module& root);
/// Turns the int8 eval path of every QAT layer on (the default) or off (eval
/// then runs the float fake-quant simulation).
void set_int8_eval(nn::Module& root, bool on);
/// PTQ preparation: prepare_qat()'s swap, then eval mode, observers
/// recording in eval (calibrating) and fake quant off.
void prepare(nn::Module& root, const PrepareOptions& options = {});
/// Ends PTQ calibration: observers off, calibrating off, fake quant on.
void finish_calibration(nn::Module& root);

// ---- switches over every quantizer in the tree ---------------------------------
/// FakeQuantize::enable_fake_quant(on) on every quantizer under root (root
/// included); off passes values through unchanged.
void enable_fake_quant(nn::Module& root, bool on = true);
/// FakeQuantize::enable_observer(on) on every quantizer; turning observers off
/// first syncs each quantizer's qparam buffers, which then stay fixed.
void enable_observer(nn::Module& root, bool on = true);
/// FakeQuantize::set_calibrating(on) on every quantizer: while on, observers
/// also record in eval mode (PTQ calibration).
void set_calibrating(nn::Module& root, bool on = true);
/// Stops (or resumes) the running-statistics updates of every fused BN.
void freeze_bn_stats(nn::Module& root, bool frozen = true);
/// LSQ quantizers switch from their observer's estimate to learning.
void set_lsq_learning(nn::Module& root, bool on = true);

/// Brings every quantizer's qparam buffers up to date with its observer
/// (FakeQuantize::sync), e.g. before saving a state dict.
void sync_qparams(nn::Module& root);

/// Every quantizer's observer statistics, keyed "<module path>/<key>", for
/// checkpoints (the state dict holds the qparams themselves).
std::map<std::string, Tensor> observer_state(nn::Module& root);
/// Restores what observer_state() returned, all or nothing. Keys of
/// quantizers that do not exist are an error (FormatError); invalid
/// statistics throw as Observer::load_state does; quantizers without keys
/// keep their state.
void load_observer_state(nn::Module& root, const std::map<std::string, Tensor>& state);

// ---- the QAT schedule ----------------------------------------------------------------

/// When something happens: at the start of an epoch (0-based: epoch 1 is
/// after the first full epoch) or at a global optimizer step. at < 0 means
/// never.
struct Milestone {
  /// What `at` counts: epochs (0-based, compared with the epoch argument) or
  /// global optimizer steps.
  enum class Unit { epoch, step };
  /// The unit of `at` (step unless set).
  Unit unit = Unit::step;
  /// The epoch or step from which on the milestone is reached; < 0: never.
  int64_t at = -1;

  /// A milestone that is never reached (at = -1).
  static Milestone never() { return {}; }
  /// Reached from the start of epoch e on (epoch >= e).
  static Milestone epoch(int64_t e) { return {Unit::epoch, e}; }
  /// Reached from global step s on (global_step >= s); step(0): from the start.
  static Milestone step(int64_t s) { return {Unit::step, s}; }
  /// True when at >= 0 and epoch >= at (Unit::epoch) or global_step >= at
  /// (Unit::step); the other argument is ignored.
  bool reached(int64_t epoch, int64_t global_step) const;
  /// "epoch 2", "step 500", "never".
  std::string describe() const;
};

/// The QAT schedule as data. Before a milestone the switch is in its
/// initial state, from it on in the other one.
struct QatSchedule {
  /// Fake quant on (before it the model trains in float while observers
  /// record: progressive QAT).
  Milestone fake_quant = Milestone::step(0);
  /// Observers stop recording: qparams stop changing.
  Milestone freeze_observers = Milestone::never();
  /// BN running statistics stop updating (the batch norm then normalizes
  /// with them, which is the folded layer).
  Milestone freeze_bn = Milestone::never();
  /// LSQ quantizers start learning their step size (initialized at that
  /// point from the observer or the data).
  Milestone lsq_learn = Milestone::step(0);

  /// One line for logs: "fake_quant from step 0, observers frozen from never,
  /// BN frozen from never, LSQ learning from step 0" (Milestone::describe each).
  std::string describe() const;
};

/// Sets every switch to what the schedule says at (epoch, global_step). A
/// pure function of the position, so a resumed run lands in the same state.
void apply_qat_schedule(nn::Module& root, const QatSchedule& schedule, int64_t epoch, int64_t global_step);

}  // namespace qforge::quant
