#include "trainers/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/ops.h"
#include "core/rng.h"

namespace qforge::trainers {

namespace fs = std::filesystem;
using autograd::Variable;
using Clock = std::chrono::steady_clock;

int64_t count_correct(const Tensor& logits, const Tensor& targets) {
  QF_CHECK_SHAPE(logits.ndim() == 2 && targets.ndim() == 1 && targets.size(0) == logits.size(0))
      << "count_correct: need logits [N, C] and targets [N], got " << logits.desc() << " and " << targets.desc();
  const Tensor l = logits.to(DType::f32);
  const float* p = l.data<float>();
  const int32_t* t = targets.data<int32_t>();
  const int64_t n = l.size(0), c = l.size(1);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = p + i * c;
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (row[j] > row[best]) best = j;
    correct += best == t[i];
  }
  return correct;
}

namespace {

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  const auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  }
  return buf;
}

/// A JSON number (null for non-finite values, which JSON cannot hold).
std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// The progress display: a redrawn bar on a terminal, or plain lines.
class Progress {
 public:
  Progress(ProgressMode mode, int64_t log_every) : log_every_(log_every) {
    if (mode == ProgressMode::automatic) mode = isatty(fileno(stdout)) ? ProgressMode::bar : ProgressMode::lines;
    mode_ = mode;
  }

  void step(int64_t epoch, int64_t epochs, int64_t s, int64_t steps, double loss, double ips, double eta) {
    if (mode_ == ProgressMode::bar) {
      const auto now = Clock::now();
      if (s + 1 < steps && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      const int width = 24;
      const int filled = static_cast<int>(width * (s + 1) / std::max<int64_t>(steps, 1));
      std::printf("\r\033[Kepoch %lld/%lld [%s%s] %lld/%lld  %.0f img/s  loss %.4f  ETA %s",
                  static_cast<long long>(epoch + 1), static_cast<long long>(epochs), std::string(filled, '#').c_str(),
                  std::string(width - filled, '.').c_str(), static_cast<long long>(s + 1),
                  static_cast<long long>(steps), ips, loss, fmt_duration(eta).c_str());
      std::fflush(stdout);
    } else if (mode_ == ProgressMode::lines && log_every_ > 0 && (s + 1) % log_every_ == 0) {
      std::printf("epoch %lld/%lld step %lld/%lld  loss %.4f  %.0f img/s  ETA %s\n",
                  static_cast<long long>(epoch + 1), static_cast<long long>(epochs), static_cast<long long>(s + 1),
                  static_cast<long long>(steps), loss, ips, fmt_duration(eta).c_str());
      std::fflush(stdout);
    }
  }

  void epoch_done(const EpochResult& r, int64_t epochs) {
    if (mode_ == ProgressMode::none) return;
    if (mode_ == ProgressMode::bar) std::printf("\r\033[K");
    std::printf("epoch %lld/%lld  train loss %.4f acc %.2f%%", static_cast<long long>(r.epoch + 1),
                static_cast<long long>(epochs), r.train_loss, r.train_accuracy);
    if (r.test.count > 0) std::printf("  test loss %.4f acc %.2f%%", r.test.loss, r.test.accuracy);
    std::printf("  %.1f s  %.0f img/s\n", r.seconds, r.images_per_s);
    std::fflush(stdout);
  }

  void message(const std::string& m) {
    if (mode_ == ProgressMode::none) return;
    std::printf("%s\n", m.c_str());
    std::fflush(stdout);
  }

 private:
  ProgressMode mode_;
  int64_t log_every_;
  Clock::time_point last_draw_{};
};

std::string checkpoint_name(int64_t epochs_done) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "epoch_%04lld.h5", static_cast<long long>(epochs_done));
  return buf;
}

}  // namespace

Trainer::Trainer(nn::ModulePtr model, std::shared_ptr<nn::Optimizer> optimizer,
                 std::shared_ptr<nn::LrSchedule> schedule, std::shared_ptr<data::DataLoader> train,
                 std::shared_ptr<data::DataLoader> test, TrainerOptions opt)
    : model_(std::move(model)),
      opt_(std::move(optimizer)),
      sched_(std::move(schedule)),
      train_(std::move(train)),
      test_(std::move(test)),
      opt_cfg_(std::move(opt)) {
  QF_CHECK(model_ && opt_ && train_) << "Trainer: needs a model, an optimizer and a training loader";
  QF_CHECK(opt_cfg_.epochs >= 1) << "Trainer: epochs must be >= 1, got " << opt_cfg_.epochs;
  QF_CHECK(opt_cfg_.max_steps_per_epoch >= 0 && opt_cfg_.clip_grad_norm >= 0 && opt_cfg_.log_every >= 0 &&
           opt_cfg_.metrics_every >= 0)
      << "Trainer: max_steps_per_epoch, clip_grad_norm, log_every and metrics_every must be >= 0";
  QF_CHECK(!opt_cfg_.resume || !opt_cfg_.out_dir.empty()) << "Trainer: resume needs an out_dir to resume from";
  loss_ = [](const Variable& logits, const Tensor& y) { return autograd::cross_entropy(logits, y); };
}

double Trainer::lr_for(int64_t step) const { return sched_ ? sched_->lr_at(step) : opt_->lr(); }

void Trainer::write_metrics(const std::string& json_line) {
  if (opt_cfg_.out_dir.empty()) return;
  const fs::path p = fs::path(opt_cfg_.out_dir) / "metrics.jsonl";
  std::ofstream f(p, std::ios::app);
  QF_CHECK_IO(f.good()) << "cannot append to " << p.string();
  f << json_line << "\n";
}

EvalResult Trainer::evaluate(data::DataLoader& loader) {
  const bool was_training = model_->is_training();
  model_->eval();
  autograd::NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0;
  loader.start_epoch(0);
  data::Batch b;
  while (loader.next(b)) {
    Variable logits = model_->forward(Variable(b.x));
    const int64_t n = b.y.numel();
    loss_sum += loss_(logits, b.y).value().item() * static_cast<double>(n);
    r.correct += count_correct(logits.value(), b.y);
    r.count += n;
  }
  model_->train(was_training);
  r.loss = r.count ? loss_sum / static_cast<double>(r.count) : 0;
  r.accuracy = r.count ? 100.0 * static_cast<double>(r.correct) / static_cast<double>(r.count) : 0;
  return r;
}

std::vector<EpochResult> Trainer::fit() {
  Progress progress(opt_cfg_.progress, opt_cfg_.log_every);
  if (!opt_cfg_.out_dir.empty()) {
    std::error_code ec;
    fs::create_directories(fs::path(opt_cfg_.out_dir) / "ckpt", ec);
    QF_CHECK_IO(!ec) << "cannot create output directory " << opt_cfg_.out_dir << ": " << ec.message();
  }
  if (!opt_cfg_.out_dir.empty() && !opt_cfg_.resume) {
    // A fresh run owns its out_dir: checkpoints and metrics of an earlier run
    // there would otherwise mix with this one (and a later resume could pick
    // a stale, newer-numbered checkpoint).
    int removed = 0;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(fs::path(opt_cfg_.out_dir) / "ckpt", ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("epoch_", 0) == 0 && name.size() > 3 && name.substr(name.size() - 3) == ".h5")
        removed += fs::remove(entry.path(), ec) ? 1 : 0;
    }
    const bool had_metrics = fs::remove(fs::path(opt_cfg_.out_dir) / "metrics.jsonl", ec);
    if (removed || had_metrics)
      progress.message("fresh run: removed " + std::to_string(removed) + " old checkpoint(s) and the metrics of an "
                       "earlier run in " + opt_cfg_.out_dir + " (use resume to continue it instead)");
  }
  if (opt_cfg_.resume) {
    const std::string ckpt = latest_checkpoint();
    if (ckpt.empty()) {
      progress.message("no checkpoint in " + opt_cfg_.out_dir + "; starting from scratch");
    } else {
      load_checkpoint(ckpt);
      progress.message("resumed from " + ckpt + " after epoch " + std::to_string(epochs_done_));
    }
  }

  std::vector<EpochResult> results;
  const int64_t full = train_->batches_per_epoch();
  const int64_t steps = opt_cfg_.max_steps_per_epoch > 0 ? std::min(full, opt_cfg_.max_steps_per_epoch) : full;
  for (int64_t epoch = epochs_done_; epoch < opt_cfg_.epochs; ++epoch) {
    model_->train();
    for (auto& h : epoch_begin_) h(*this, epoch);
    train_->start_epoch(epoch);
    const auto t0 = Clock::now();
    double loss_sum = 0;
    int64_t seen = 0, correct = 0;
    data::Batch batch;
    for (int64_t s = 0; s < steps && train_->next(batch); ++s) {
      StepInfo info;
      info.epoch = epoch;
      info.step_in_epoch = s;
      info.global_step = global_step_;
      info.batch_size = batch.y.numel();
      info.lr = lr_for(global_step_);
      info.loss = std::nan("");
      opt_->set_lr(info.lr);
      for (auto& h : step_begin_) h(*this, info);

      opt_->zero_grad();
      Variable logits = model_->forward(Variable(batch.x));
      Variable loss = train_loss_ ? train_loss_(logits, batch.x, batch.y) : loss_(logits, batch.y);
      info.loss = loss.value().item();
      // Checked before the update, so that the weights stay those of the
      // last good step.
      QF_CHECK(std::isfinite(info.loss)) << "training diverged: the loss is " << info.loss << " at epoch "
                                         << epoch + 1 << ", step " << s + 1 << " (lr " << info.lr << ")";
      loss.backward();
      if (opt_cfg_.clip_grad_norm > 0) nn::clip_grad_norm(opt_->params(), opt_cfg_.clip_grad_norm);
      opt_->step();
      ++global_step_;

      loss_sum += info.loss * static_cast<double>(info.batch_size);
      correct += count_correct(logits.value(), batch.y);
      seen += info.batch_size;
      for (auto& h : step_end_) h(*this, info);

      const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
      const double ips = static_cast<double>(seen) / std::max(elapsed, 1e-9);
      progress.step(epoch, opt_cfg_.epochs, s, steps, info.loss, ips, elapsed / (s + 1) * (steps - s - 1));
      if (opt_cfg_.metrics_every > 0 && (s + 1) % opt_cfg_.metrics_every == 0)
        write_metrics("{\"type\":\"step\",\"epoch\":" + std::to_string(epoch) + ",\"step\":" + std::to_string(s) +
                      ",\"global_step\":" + std::to_string(global_step_) + ",\"loss\":" + jnum(info.loss) +
                      ",\"lr\":" + jnum(info.lr) + ",\"images_per_s\":" + jnum(ips) + "}");
    }
    EpochResult r;
    r.epoch = epoch;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.images_per_s = static_cast<double>(seen) / std::max(r.seconds, 1e-9);
    r.train_loss = seen ? loss_sum / static_cast<double>(seen) : 0;
    r.train_accuracy = seen ? 100.0 * static_cast<double>(correct) / static_cast<double>(seen) : 0;
    if (test_ && opt_cfg_.eval_every_epoch) r.test = evaluate(*test_);
    epochs_done_ = epoch + 1;
    for (auto& h : epoch_end_) h(*this, epoch);
    progress.epoch_done(r, opt_cfg_.epochs);
    if (!opt_cfg_.out_dir.empty()) {
      save_checkpoint((fs::path(opt_cfg_.out_dir) / "ckpt" / checkpoint_name(epochs_done_)).string());
      write_metrics("{\"type\":\"epoch\",\"epoch\":" + std::to_string(epoch) + ",\"train_loss\":" +
                    jnum(r.train_loss) + ",\"train_accuracy\":" + jnum(r.train_accuracy) +
                    ",\"test_loss\":" + (r.test.count ? jnum(r.test.loss) : "null") +
                    ",\"test_accuracy\":" + (r.test.count ? jnum(r.test.accuracy) : "null") +
                    ",\"seconds\":" + jnum(r.seconds) + ",\"images_per_s\":" + jnum(r.images_per_s) +
                    ",\"global_step\":" + std::to_string(global_step_) + "}");
    }
    results.push_back(r);
  }
  return results;
}

void Trainer::save_checkpoint(const std::string& path) const {
  Archive a;
  for (const auto& [k, t] : model_->state_dict()) a.tensors["model/" + k] = t;
  for (const auto& [k, t] : opt_->state_dict()) a.tensors["optim/" + k] = t;
  for (const auto& [k, t] : extra_) a.tensors["extra/" + k] = t;
  a.ints["epochs_done"] = epochs_done_;
  a.ints["global_step"] = global_step_;
  a.ints["loader_seed"] = static_cast<int64_t>(train_->options().seed);
  const Generator::State st = default_generator().state();
  for (size_t i = 0; i < st.size(); ++i) {
    int64_t v;
    std::memcpy(&v, &st[i], sizeof v);
    a.ints["rng/default/" + std::to_string(i)] = v;
  }
  a.strings["optimizer"] = opt_->name();
  a.strings["schedule"] = sched_ ? sched_->describe() : "none";
  a.ints["max_steps_per_epoch"] = opt_cfg_.max_steps_per_epoch;
  a.strings["model"] = model_->type_name();
  a.strings["format"] = "qforge-checkpoint-1";
  save_archive(path, a);
}

void Trainer::load_checkpoint(const std::string& path) {
  const Archive a = load_archive(path);
  QF_CHECK_FORMAT(a.strings.count("format") && a.get_string("format") == "qforge-checkpoint-1")
      << path << " is not a qforge training checkpoint";
  QF_CHECK_FORMAT(a.get_string("optimizer") == opt_->name())
      << path << " was saved with optimizer " << a.get_string("optimizer") << ", this run uses " << opt_->name();
  QF_CHECK_FORMAT(a.get_int("loader_seed") == static_cast<int64_t>(train_->options().seed))
      << path << " was saved with data seed " << a.get_int("loader_seed") << ", this run uses "
      << train_->options().seed << "; resuming would not reproduce the run";
  const std::string sched = sched_ ? sched_->describe() : "none";
  QF_CHECK_FORMAT(a.get_string("schedule") == sched && a.get_int("max_steps_per_epoch") == opt_cfg_.max_steps_per_epoch)
      << path << " was saved with schedule '" << a.get_string("schedule") << "' and "
      << a.get_int("max_steps_per_epoch") << " max steps per epoch; this run has '" << sched << "' and "
      << opt_cfg_.max_steps_per_epoch << " (resume with the same epochs, steps and learning rate)";
  nn::StateDict model_sd;
  std::map<std::string, Tensor> optim_sd, extra;
  for (const auto& [k, t] : a.tensors) {
    if (k.rfind("model/", 0) == 0) model_sd[k.substr(6)] = t;
    else if (k.rfind("optim/", 0) == 0) optim_sd[k.substr(6)] = t;
    else if (k.rfind("extra/", 0) == 0) extra[k.substr(6)] = t;
  }
  nn::StateDict backup;
  for (const auto& [k, t] : model_->state_dict()) backup[k] = t.clone();
  try {
    model_->load_state_dict(model_sd);
    opt_->load_state_dict(optim_sd);
  } catch (const Error& e) {
    model_->load_state_dict(backup);  // leave the model as it was
    QF_THROW(FormatError) << path << " does not fit this run: " << e.what();
  }
  Generator::State st{};
  for (size_t i = 0; i < st.size(); ++i) {
    const int64_t v = a.get_int("rng/default/" + std::to_string(i));
    std::memcpy(&st[i], &v, sizeof v);
  }
  default_generator().set_state(st);
  for (auto& [k, t] : extra) extra_[k] = t;
  epochs_done_ = a.get_int("epochs_done");
  global_step_ = a.get_int("global_step");
}

void load_model_from_checkpoint(const std::string& path, nn::Module& model) {
  const Archive a = load_archive(path);
  QF_CHECK_FORMAT(a.strings.count("format") && a.get_string("format") == "qforge-checkpoint-1")
      << path << " is not a qforge training checkpoint";
  nn::StateDict sd;
  for (const auto& [k, t] : a.tensors)
    if (k.rfind("model/", 0) == 0) sd[k.substr(6)] = t;
  try {
    model.load_state_dict(sd);
  } catch (const Error& e) {
    QF_THROW(FormatError) << path << " does not hold this model's weights: " << e.what();
  }
}

std::string Trainer::latest_checkpoint() const {
  if (opt_cfg_.out_dir.empty()) return "";
  const fs::path dir = fs::path(opt_cfg_.out_dir) / "ckpt";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  std::string best;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == 13 && name.rfind("epoch_", 0) == 0 && name.substr(10) == ".h5" && name > fs::path(best).filename().string())
      best = entry.path().string();
  }
  return best;
}

Tensor collect_logits(const std::function<Tensor(const Tensor&)>& run, data::DataLoader& loader,
                      std::vector<int32_t>* labels) {
  autograd::NoGradGuard ng;
  std::vector<float> out;
  data::Batch b;
  loader.start_epoch(0);
  int64_t k = 1;
  while (loader.next(b)) {
    const Tensor logits = run(b.x);
    QF_CHECK_SHAPE(logits.ndim() == 2 && logits.size(0) == b.y.numel())
        << "collect_logits: expected [" << b.y.numel() << ", K] outputs, got " << logits.desc();
    k = logits.size(1);
    out.insert(out.end(), logits.data<float>(), logits.data<float>() + logits.numel());
    if (labels) labels->insert(labels->end(), b.y.data<int32_t>(), b.y.data<int32_t>() + b.y.numel());
  }
  return Tensor::from_vector<float>(out, {static_cast<int64_t>(out.size()) / k, k});
}

}  // namespace qforge::trainers
