#pragma once
// Trainer: the epoch loop of model, loss, optimizer and LR schedule, with
// evaluation after every epoch, a progress display, JSONL metrics, HDF5
// checkpoints at every epoch end, resume, and hooks at step and epoch
// boundaries (quant's observer and BN-freezing schedules use them).
//
// Resume is exact: a checkpoint holds the model's state dict, the optimizer
// state, the global step (which fixes the LR), the completed epochs, the
// default generator's state and any extra state that hooks registered, and
// the DataLoader's batches are a pure function of (seed, epoch, index). A run
// interrupted and resumed at the same thread count ends with bit-identical
// weights.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "core/archive.h"

namespace qforge::trainers {

/// How fit() reports progress on stdout.
enum class ProgressMode {
  /// bar when stdout is a terminal, else lines.
  automatic,  // a bar on a terminal, plain lines otherwise
  /// A bar redrawn in place (at most every 100 ms), then one line per epoch.
  bar,
  /// A line every log_every steps (none when 0), plus one line per epoch.
  lines,
  /// Prints nothing, not even the resume and cleanup notices.
  none,
};

/// Settings of a Trainer. Its constructor throws ValueError for epochs < 1, a
/// negative count or clip_grad_norm, or resume without out_dir.
struct TrainerOptions {
  /// Total epochs of the run (a resumed run continues up to this).
  int64_t epochs = 1;
  /// Where checkpoints (ckpt/epoch_NNNN.h5) and metrics.jsonl go; empty keeps
  /// nothing on disk. A fresh run (resume off) first deletes any ckpt/epoch_*.h5
  /// and metrics.jsonl an earlier run left there.
  std::string out_dir;
  /// Continue from the newest checkpoint in out_dir (a fresh start
  /// when there is none).
  bool resume = false;
  /// Stop each epoch after this many steps (0 = the whole epoch). For smoke
  /// tests and quick runs.
  int64_t max_steps_per_epoch = 0;
  /// Clip the global gradient norm to this (0 = off).
  double clip_grad_norm = 0;
  /// How fit() reports progress on stdout (see ProgressMode).
  ProgressMode progress = ProgressMode::automatic;
  /// Plain-line mode prints every this many steps (0 = only epoch lines).
  int64_t log_every = 100;
  /// Step-level metrics lines go to metrics.jsonl every this many steps.
  int64_t metrics_every = 50;
  /// Evaluate on the test loader after every epoch.
  bool eval_every_epoch = true;
};

/// What a step hook sees.
struct StepInfo {
  /// 0-based epoch of the step.
  int64_t epoch = 0;
  /// Index of the batch within the epoch.
  int64_t step_in_epoch = 0;
  /// Optimizer steps taken before this one (over the whole run).
  int64_t global_step = 0;
  /// Samples in this batch (fewer in a short last batch).
  int64_t batch_size = 0;
  /// Learning rate of this step: the schedule's rate at global_step (the
  /// optimizer's own rate without a schedule), already set on the optimizer.
  double lr = 0;
  /// The step's loss (on on_step_end; NaN on on_step_begin).
  double loss = 0;
};

/// Result of Trainer::evaluate(), over one whole epoch (epoch 0) of the loader.
struct EvalResult {
  /// Mean loss per sample: each batch's loss weighted by its size, so exact for a
  /// batch-mean loss such as the default cross-entropy; 0 when count is 0.
  double loss = 0;
  /// Percent of samples classified correctly: 100 * correct / count (0 when count is 0).
  double accuracy = 0;  // percent
  /// Samples whose first largest logit is at the target class.
  int64_t correct = 0;
  /// Samples evaluated.
  int64_t count = 0;
};

/// What fit() reports for each epoch it runs.
struct EpochResult {
  /// 0-based epoch.
  int64_t epoch = 0;
  /// Mean training loss per sample (batch losses weighted by batch size), each
  /// measured by the step's forward pass, before its update.
  double train_loss = 0;
  /// Percent of training samples classified correctly by those same forward passes.
  double train_accuracy = 0;  // percent, on the training batches as seen
  /// The test loader evaluated after the epoch; count 0 when not evaluated.
  EvalResult test;            // count 0 when not evaluated
  /// Wall time of the epoch's steps (step hooks included; evaluation, epoch
  /// hooks and the checkpoint not).
  double seconds = 0;
  /// Training samples per second over `seconds`.
  double images_per_s = 0;
};

/// Runs the training loop described at the top of this file. Hooks run
/// synchronously on the thread that calls fit(), in registration order.
class Trainer {
 public:
  /// Loss of a batch: logits and i32 targets -> a scalar Variable.
  using LossFn = std::function<autograd::Variable(const autograd::Variable& logits, const Tensor& targets)>;
  /// Loss of a training step that also sees the batch's inputs (for
  /// distillation: a teacher's logits of the same images).
  using TrainLossFn = std::function<autograd::Variable(const autograd::Variable& logits, const Tensor& inputs,
                                                       const Tensor& targets)>;
  /// Called with the trainer and the step (see on_step_begin / on_step_end).
  using StepHook = std::function<void(Trainer&, const StepInfo&)>;
  /// Called with the trainer and the 0-based epoch (see on_epoch_begin / on_epoch_end).
  using EpochHook = std::function<void(Trainer&, int64_t epoch)>;

  /// `schedule` and `test` may be null (constant LR; no evaluation). The
  /// trainer shares ownership of everything it is given. ValueError when model,
  /// optimizer or train is null, or for invalid options (see TrainerOptions).
  Trainer(nn::ModulePtr model, std::shared_ptr<nn::Optimizer> optimizer, std::shared_ptr<nn::LrSchedule> schedule,
          std::shared_ptr<data::DataLoader> train, std::shared_ptr<data::DataLoader> test, TrainerOptions opt);

  /// Runs (or, with resume, continues) training up to options().epochs and
  /// returns the results of the epochs run by this call.
  std::vector<EpochResult> fit();
  /// Loss and accuracy of the model in eval mode over a whole loader (the
  /// model's mode is restored afterwards).
  EvalResult evaluate(data::DataLoader& loader);

  /// Replaces the loss of fit() and evaluate(); the default is
  /// autograd::cross_entropy (the batch mean). It must return a one-element
  /// Variable; results are per-sample means only if it is a batch mean.
  void set_loss(LossFn fn) { loss_ = std::move(fn); }
  /// Replaces the loss of fit()'s training steps only (evaluate() keeps the
  /// loss of set_loss()); an empty function restores it.
  void set_train_loss(TrainLossFn fn) { train_loss_ = std::move(fn); }
  /// Adds a hook run before each training step, after its lr is set on the
  /// optimizer; info.loss is NaN.
  void on_step_begin(StepHook h) { step_begin_.push_back(std::move(h)); }
  /// Adds a hook run after each optimizer step, before the progress and metrics
  /// output; info.loss is the step's loss, and global_step() already counts it.
  void on_step_end(StepHook h) { step_end_.push_back(std::move(h)); }
  /// Adds a hook run at the start of each epoch fit() runs, after model.train()
  /// and before the first batch. A resumed run starts at epochs_done(): the
  /// completed epochs get no calls.
  void on_epoch_begin(EpochHook h) { epoch_begin_.push_back(std::move(h)); }
  /// Adds a hook run after the epoch's evaluation (if any), with epochs_done()
  /// already epoch + 1, and before its checkpoint is written (extra_state() set
  /// here is saved).
  void on_epoch_end(EpochHook h) { epoch_end_.push_back(std::move(h)); }

  /// State that hooks want checkpointed (e.g. observer or schedule state),
  /// saved under "extra/" and restored on load before training continues.
  std::map<std::string, Tensor>& extra_state() { return extra_; }

  /// Writes a checkpoint (atomically) to `path`.
  void save_checkpoint(const std::string& path) const;
  /// Restores model, optimizer, counters, RNG and extra state from `path`.
  /// Throws FormatError naming the file when it does not fit this run (a
  /// different model, optimizer or LR schedule, another loader seed, or
  /// another max_steps_per_epoch).
  void load_checkpoint(const std::string& path);
  /// The newest checkpoint in out_dir, or "" when there is none.
  std::string latest_checkpoint() const;

  nn::Module& model() { return *model_; }
  nn::Optimizer& optimizer() { return *opt_; }
  const TrainerOptions& options() const { return opt_cfg_; }
  /// Epochs completed so far.
  int64_t epochs_done() const { return epochs_done_; }
  int64_t global_step() const { return global_step_; }

 private:
  double lr_for(int64_t step) const;
  void write_metrics(const std::string& json_line);

  nn::ModulePtr model_;
  std::shared_ptr<nn::Optimizer> opt_;
  std::shared_ptr<nn::LrSchedule> sched_;
  std::shared_ptr<data::DataLoader> train_, test_;
  TrainerOptions opt_cfg_;
  LossFn loss_;
  TrainLossFn train_loss_;
  std::vector<StepHook> step_begin_, step_end_;
  std::vector<EpochHook> epoch_begin_, epoch_end_;
  std::map<std::string, Tensor> extra_;
  int64_t epochs_done_ = 0;
  int64_t global_step_ = 0;
};

/// Loads only the model weights of a Trainer checkpoint into `model` (strict:
/// every name, shape and dtype must match). For starting a new run (QAT,
/// PTQ) from a trained float model. Throws FormatError naming the file.
void load_model_from_checkpoint(const std::string& path, nn::Module& model);

/// The outputs of `run` (a model's forward in eval mode, or an int8 model)
/// over a whole loader from its first batch, as one [N, K] f32 tensor, under
/// NoGradGuard; with `labels`, the loader's labels in the same order.
Tensor collect_logits(const std::function<Tensor(const Tensor&)>& run, data::DataLoader& loader,
                      std::vector<int32_t>* labels = nullptr);

/// Argmax over the last axis of [N, C] logits compared with i32 targets [N]:
/// the number of correct predictions.
int64_t count_correct(const Tensor& logits, const Tensor& targets);

}  // namespace qforge::trainers
