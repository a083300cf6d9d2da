#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include "nn/zoo.h"
#include "quant/qat_modules.h"
#include "trainers/qat_hooks.h"
#include "trainers/trainer.h"

namespace qforge::trainers {
namespace {

namespace fs = std::filesystem;

/// 4 classes of 8x8 images: a bright quadrant per class plus noise.
data::Dataset quadrant_dataset(int64_t n, uint64_t seed) {
  data::Dataset ds;
  ds.images = Tensor::empty({n, 1, 8, 8}, DType::u8);
  ds.labels = Tensor::empty({n}, DType::i32);
  ds.name = "quadrants";
  Generator g(seed);
  for (int64_t i = 0; i < n; ++i) {
    const int cls = static_cast<int>(g.below(4));
    ds.labels.data<int32_t>()[i] = cls;
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const bool on = (y / 4) * 2 + (x / 4) == cls;
        ds.images.data<uint8_t>()[i * 64 + y * 8 + x] = static_cast<uint8_t>((on ? 150 : 0) + g.below(100));
      }
  }
  return ds;
}

std::shared_ptr<nn::Sequential> small_model(uint64_t seed) {
  Generator g(seed);
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("conv", std::make_shared<nn::Conv2d>(1, 4, 3, 1, 1, false, 1, g));
  m->push_back("bn", std::make_shared<nn::BatchNorm2d>(4));
  m->push_back("relu", std::make_shared<nn::ReLU>());
  m->push_back("pool", std::make_shared<nn::MaxPool2d>(2));
  m->push_back("flatten", std::make_shared<nn::Flatten>());
  m->push_back("drop", std::make_shared<nn::Dropout>(0.2));
  m->push_back("fc", std::make_shared<nn::Linear>(64, 4, true, g));
  return m;
}

struct TrainRun {
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<Trainer> trainer;
};

/// `prepare`, when given, changes the model before the optimizer is built
/// (QAT preparation).
TrainRun make_run(const std::string& out, int64_t epochs, bool resume, uint64_t init_seed, uint64_t data_seed = 3,
                  const std::function<void(nn::Module&)>& prepare = {}) {
  TrainRun r;
  r.model = small_model(init_seed);
  if (prepare) prepare(*r.model);
  auto opt = std::make_shared<nn::Adam>(r.model->parameters(), nn::AdamOptions{.lr = 0.01, .weight_decay = 1e-4});
  auto sched = std::make_shared<nn::CosineLr>(0.01, 40);
  data::LoaderOptions lo;
  lo.batch_size = 16;
  lo.seed = data_seed;
  lo.mean = {0.4f};
  lo.std = {0.3f};
  auto train = std::make_shared<data::DataLoader>(quadrant_dataset(160, 1), lo);
  lo.shuffle = false;
  auto test = std::make_shared<data::DataLoader>(quadrant_dataset(64, 2), lo);
  TrainerOptions to;
  to.epochs = epochs;
  to.out_dir = out;
  to.resume = resume;
  to.progress = ProgressMode::none;
  to.metrics_every = 5;
  r.trainer = std::make_unique<Trainer>(r.model, opt, sched, train, test, to);
  return r;
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qforge_trainer_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string sub(const std::string& s) const { return (dir_ / s).string(); }
  fs::path dir_;
};

TEST_F(TrainerTest, LearnsWritesCheckpointsAndMetrics) {
  manual_seed(11);
  TrainRun r = make_run(sub("a"), 3, false, 5);
  int begins = 0, ends = 0, epochs = 0;
  int64_t last_global = -1;
  r.trainer->on_step_begin([&](Trainer&, const StepInfo& s) {
    ++begins;
    EXPECT_EQ(s.global_step, last_global + 1);
  });
  r.trainer->on_step_end([&](Trainer&, const StepInfo& s) {
    ++ends;
    last_global = s.global_step;
    EXPECT_TRUE(std::isfinite(s.loss));
  });
  r.trainer->on_epoch_end([&](Trainer& t, int64_t e) {
    ++epochs;
    EXPECT_EQ(t.epochs_done(), e + 1);
  });
  auto res = r.trainer->fit();
  ASSERT_EQ(res.size(), 3u);
  EXPECT_EQ(begins, 30);
  EXPECT_EQ(ends, 30);
  EXPECT_EQ(epochs, 3);
  EXPECT_EQ(r.trainer->global_step(), 30);
  EXPECT_GT(res.back().test.accuracy, 90.0) << "the quadrant task is easy";
  EXPECT_EQ(res.back().test.count, 64);
  for (int e = 1; e <= 3; ++e) EXPECT_TRUE(fs::exists(sub("a/ckpt/epoch_000" + std::to_string(e) + ".h5")));
  EXPECT_EQ(r.trainer->latest_checkpoint(), sub("a/ckpt/epoch_0003.h5"));
  std::ifstream f(sub("a/metrics.jsonl"));
  std::string line;
  int step_lines = 0, epoch_lines = 0;
  while (std::getline(f, line)) {
    step_lines += line.find("\"type\":\"step\"") != std::string::npos;
    epoch_lines += line.find("\"type\":\"epoch\"") != std::string::npos;
  }
  EXPECT_EQ(step_lines, 6);
  EXPECT_EQ(epoch_lines, 3);
  // Evaluation restores the training mode.
  r.model->train();
  r.trainer->evaluate(*std::make_shared<data::DataLoader>(quadrant_dataset(20, 9), data::LoaderOptions{}));
  EXPECT_TRUE(r.model->is_training());
}

TEST_F(TrainerTest, ResumeIsBitIdenticalToAnUninterruptedRun) {
  manual_seed(11);
  TrainRun full = make_run(sub("full"), 4, false, 5);
  full.trainer->fit();

  manual_seed(11);
  TrainRun first = make_run(sub("split"), 2, false, 5);
  first.trainer->fit();
  // A new process would start with another RNG state and fresh weights.
  manual_seed(999);
  TrainRun second = make_run(sub("split"), 4, true, 77);
  auto res = second.trainer->fit();
  ASSERT_EQ(res.size(), 2u);
  EXPECT_EQ(res[0].epoch, 2);
  EXPECT_EQ(second.trainer->global_step(), 40);

  auto a = full.model->state_dict(), b = second.model->state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, t] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    ASSERT_EQ(t.nbytes(), b[k].nbytes());
    EXPECT_EQ(std::memcmp(t.raw(), b[k].raw(), t.nbytes()), 0) << k << " differs after resume";
  }
  auto oa = full.trainer->optimizer().state_dict(), ob = second.trainer->optimizer().state_dict();
  for (const auto& [k, t] : oa) EXPECT_EQ(t.to_vector(), ob[k].to_vector()) << k;
}

/// Trains a QAT run for 4 epochs straight and as 2 + a resumed 2, and checks
/// that both end bit-identical (weights, qparam buffers, observer statistics).
void check_qat_resume(const std::function<std::string(const std::string&)>& sub, const quant::QatSchedule& sched,
                      const quant::QConfig& qconfig) {
  quant::PrepareOptions po;
  po.require_quant_stub = false;
  po.qconfig.set_global(qconfig);
  auto qat_run = [&](const std::string& out, int64_t epochs, bool resume, uint64_t init) {
    // LSQ step sizes are parameters of their own: prepare before the optimizer is built.
    TrainRun r = make_run(out, epochs, resume, init, 3, [&](nn::Module& m) { quant::prepare_qat(m, po); });
    trainers::attach_qat_schedule(*r.trainer, sched);
    return r;
  };
  manual_seed(11);
  TrainRun full = qat_run(sub("full"), 4, false, 5);
  auto full_res = full.trainer->fit();
  EXPECT_GT(full_res.back().test.accuracy, 60.0);

  manual_seed(11);
  TrainRun first = qat_run(sub("split"), 2, false, 5);
  first.trainer->fit();
  manual_seed(999);
  TrainRun second = qat_run(sub("split"), 4, true, 77);
  ASSERT_EQ(second.trainer->fit().size(), 2u);

  auto a = full.model->state_dict(), b = second.model->state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, t] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    ASSERT_EQ(t.nbytes(), b[k].nbytes());
    EXPECT_EQ(std::memcmp(t.raw(), b[k].raw(), t.nbytes()), 0) << k << " differs after resume";
  }
  auto oa = quant::observer_state(*full.model), ob = quant::observer_state(*second.model);
  ASSERT_EQ(oa.size(), ob.size());
  for (const auto& [k, t] : oa) EXPECT_EQ(t.to_vector(), ob[k].to_vector()) << k;
}

TEST_F(TrainerTest, QatScheduleRunsFromHooksAndResumesBitIdentically) {
  // Milestones in both halves of the run: fake quant from step 5, BN frozen
  // from step 25, observers from epoch 3.
  quant::QatSchedule sched;
  sched.fake_quant = quant::Milestone::step(5);
  sched.freeze_bn = quant::Milestone::step(25);
  sched.freeze_observers = quant::Milestone::epoch(3);
  check_qat_resume([&](const std::string& s) { return sub("a_" + s); }, sched, quant::default_qconfig());

  // Everything switches at the resume point itself (epoch 2): fake quant and
  // LSQ learning start there, observers freeze there.
  quant::QatSchedule at_resume;
  at_resume.fake_quant = quant::Milestone::epoch(2);
  at_resume.freeze_observers = quant::Milestone::epoch(2);
  at_resume.lsq_learn = quant::Milestone::epoch(2);
  check_qat_resume([&](const std::string& s) { return sub("b_" + s); }, at_resume, quant::lsq_qconfig(4, 4));
  check_qat_resume([&](const std::string& s) { return sub("c_" + s); }, at_resume, quant::default_qconfig());
}

TEST_F(TrainerTest, ResumeRejectsAMismatchedRun) {
  manual_seed(1);
  TrainRun r = make_run(sub("m"), 1, false, 5);
  r.trainer->fit();
  TrainRun other_seed = make_run(sub("m"), 2, true, 5, /*data_seed=*/4);
  try {
    other_seed.trainer->fit();
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("data seed"), std::string::npos) << e.what();
  }
  // A model of another shape.
  auto model = nn::mlp(64, {8}, 4);
  auto opt = std::make_shared<nn::Adam>(model->parameters(), nn::AdamOptions{});
  data::LoaderOptions lo;
  lo.batch_size = 16;
  lo.seed = 3;
  TrainerOptions to;
  to.out_dir = sub("m");
  to.progress = ProgressMode::none;
  auto loader = std::make_shared<data::DataLoader>(quadrant_dataset(32, 1), lo);
  Trainer other_sched(model, opt, nullptr, loader, nullptr, to);
  try {
    other_sched.load_checkpoint(other_sched.latest_checkpoint());
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("was saved with schedule"), std::string::npos) << e.what();
  }
  Trainer t(model, opt, std::make_shared<nn::CosineLr>(0.01, 40), loader, nullptr, to);
  const auto before = model->state_dict().begin()->second.to_vector();
  try {
    t.load_checkpoint(t.latest_checkpoint());
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit this run"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("epoch_0001.h5"), std::string::npos) << e.what();
  }
  EXPECT_EQ(model->state_dict().begin()->second.to_vector(), before);
  EXPECT_THROW(t.load_checkpoint(sub("m/nope.h5")), IOError);
}

TEST_F(TrainerTest, ResumeWithoutCheckpointStartsFreshAndOptionsAreChecked) {
  manual_seed(1);
  TrainRun r = make_run(sub("fresh"), 1, true, 5);
  EXPECT_EQ(r.trainer->fit().size(), 1u);
  auto model = nn::mlp(64, {8}, 4);
  auto opt = std::make_shared<nn::SGD>(model->parameters(), nn::SGDOptions{});
  auto loader = std::make_shared<data::DataLoader>(quadrant_dataset(32, 1), data::LoaderOptions{});
  TrainerOptions bad;
  bad.epochs = 0;
  EXPECT_THROW(Trainer(model, opt, nullptr, loader, nullptr, bad), ValueError);
  TrainerOptions no_dir;
  no_dir.resume = true;
  EXPECT_THROW(Trainer(model, opt, nullptr, loader, nullptr, no_dir), ValueError);
  EXPECT_THROW(Trainer(nullptr, opt, nullptr, loader, nullptr, {}), ValueError);
}

TEST_F(TrainerTest, AFreshRunClearsAnEarlierRunsCheckpoints) {
  manual_seed(1);
  TrainRun a = make_run(sub("o"), 3, false, 5);
  a.trainer->fit();
  TrainRun b = make_run(sub("o"), 1, false, 5);
  b.trainer->fit();
  EXPECT_EQ(b.trainer->latest_checkpoint(), sub("o/ckpt/epoch_0001.h5"));
  EXPECT_FALSE(fs::exists(sub("o/ckpt/epoch_0003.h5")));
}

TEST_F(TrainerTest, ATrainLossSeesTheInputsAndDistillsATeacherWithoutLabels) {
  // A teacher trained on the labels.
  manual_seed(11);
  TrainRun t = make_run(sub("teacher"), 3, false, 5);
  ASSERT_GT(t.trainer->fit().back().test.accuracy, 90.0);
  t.model->eval();
  // A student from another initialization whose training loss is the
  // distillation term alone: it never sees a label, so its accuracy comes
  // from the teacher. The test loss stays set_loss()'s.
  TrainRun s = make_run(sub("student"), 3, false, 6);
  int train_calls = 0, eval_calls = 0;
  s.trainer->set_loss([&](const autograd::Variable& logits, const Tensor& y) {
    ++eval_calls;
    return autograd::cross_entropy(logits, y);
  });
  s.trainer->set_train_loss([&](const autograd::Variable& logits, const Tensor& x, const Tensor& y) {
    ++train_calls;
    EXPECT_EQ(x.shape(), (Shape{y.numel(), 1, 8, 8}));
    Tensor soft;
    {
      autograd::NoGradGuard ng;
      soft = (*t.model)(autograd::Variable(x)).value();
    }
    return autograd::distillation_kl(logits, soft, 2.0);
  });
  const auto res = s.trainer->fit();
  EXPECT_EQ(train_calls, 30);
  EXPECT_EQ(eval_calls, 3 * 4);  // 64 test images in batches of 16, after each epoch
  EXPECT_GT(res.back().test.accuracy, 90.0);
}

TEST(CountCorrect, ArgmaxAgainstTargets) {
  Tensor logits = Tensor::from_vector<float>({0.1f, 0.9f, 2.0f, -1.0f, 0.0f, 0.5f}, {3, 2});
  Tensor y = Tensor::from_vector<int32_t>({1, 0, 0}, {3});
  EXPECT_EQ(count_correct(logits, y), 2);
  EXPECT_THROW(count_correct(logits, Tensor::zeros({2}, DType::i32)), ShapeError);
}

}  // namespace
}  // namespace qforge::trainers
