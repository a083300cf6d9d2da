#include "cli/commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <cstring>
#include <iterator>
#include <sstream>

#include "core/archive.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "data/cifar10.h"
#include "data/idx.h"
#include "data/mnist.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/dynamic.h"
#include "quant/kernels/kernels.h"
#include "quant/prepare.h"
#include "trainers/qat_hooks.h"
#include "trainers/trainer.h"

namespace qforge::cli {

namespace fs = std::filesystem;

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

std::string json_line(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string o = "{";
  for (size_t i = 0; i < kv.size(); ++i) {
    if (i) o += ',';
    o += json_string(kv[i].first);
    o += ':';
    o += kv[i].second;
  }
  o += '}';
  return o;
}

namespace {

std::string num(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

data::Dataset load_split(const std::string& dataset, const std::string& dir, data::Split split) {
  return dataset == "mnist" ? data::load_mnist(dir, split) : data::load_cifar10(dir, split);
}

struct Loaders {
  std::shared_ptr<data::DataLoader> train, test;
};

Loaders make_loaders(const Recipe& r) {
  data::LoaderOptions lo;
  lo.batch_size = r.batch_size;
  lo.seed = r.seed;
  lo.random_crop = r.shift > 0;
  lo.crop_padding = static_cast<int>(r.shift);
  lo.hflip = r.hflip;
  lo.mean = r.mean;
  lo.std = r.std;
  Loaders l;
  l.train = std::make_shared<data::DataLoader>(load_split(r.dataset, r.data_dir, data::Split::train), lo);
  lo.shuffle = false;
  lo.random_crop = false;
  lo.hflip = false;
  lo.batch_size = r.test_batch_size;
  l.test = std::make_shared<data::DataLoader>(load_split(r.dataset, r.data_dir, data::Split::test), lo);
  return l;
}

std::shared_ptr<nn::LrSchedule> make_schedule(const std::string& kind, double lr, int64_t steps) {
  steps = std::max<int64_t>(steps, 1);
  if (kind == "cosine") return std::make_shared<nn::CosineLr>(lr, steps);
  if (kind == "onecycle") return std::make_shared<nn::OneCycleLr>(lr, steps);
  return std::make_shared<nn::ConstantLr>(lr);
}

std::shared_ptr<nn::Optimizer> make_optimizer(const Recipe& r, nn::Module& model, double lr) {
  if (r.optimizer == "sgd")
    return std::make_shared<nn::SGD>(model.parameters(),
                                     nn::SGDOptions{.lr = lr, .momentum = r.momentum, .weight_decay = r.weight_decay,
                                                    .nesterov = r.nesterov, .decay_vectors = r.decay_vectors});
  nn::AdamOptions ao{.lr = lr, .weight_decay = r.weight_decay, .decay_vectors = r.decay_vectors};
  if (r.optimizer == "adamw") return std::make_shared<nn::AdamW>(model.parameters(), ao);
  return std::make_shared<nn::Adam>(model.parameters(), ao);
}

int64_t correct_of(const Tensor& logits, const std::vector<int32_t>& labels) {
  int64_t correct = 0;
  const int64_t k = logits.size(1);
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* row = logits.data<float>() + static_cast<int64_t>(i) * k;
    correct += (std::max_element(row, row + k) - row) == labels[i];
  }
  return correct;
}

/// The recipe's zoo model with its arguments, weights drawn from `gen`.
nn::ModulePtr make_recipe_model(const Recipe& r, Generator& gen) {
  nn::ModelArgs args;
  for (const auto& [k, v] : r.model_args) args.set(k, v);
  return nn::make_model(r.model, args, gen);
}

quant::QConfig make_qconfig(const Recipe& r, int wbits, int abits) {
  quant::QConfig q = r.method == "lsq" ? quant::lsq_qconfig(wbits, abits) : quant::default_qconfig();
  q.weight.spec.bits = wbits;
  q.activation.spec.bits = abits;
  if (r.method == "lsq") {
    const quant::LsqInit init = r.lsq_init == "data" ? quant::LsqInit::data : quant::LsqInit::observer;
    q.weight.lsq_init = init;
    q.activation.lsq_init = init;
  }
  if (!r.weight.observer.empty()) q.weight.observer = r.weight.observer;
  if (!r.activation.observer.empty()) q.activation.observer = r.activation.observer;
  return q;
}

}  // namespace

quant::QConfigMap recipe_qconfig_map(const Recipe& r) {
  quant::QConfigMap map;
  map.set_global(make_qconfig(r, r.weight.bits, r.activation.bits));
  for (const auto& o : r.overrides) {
    if (o.keep_float) {
      map.set_name(o.match, std::nullopt);
    } else {
      map.set_name(o.match, make_qconfig(r, o.weight_bits.value_or(r.weight.bits),
                                         o.activation_bits.value_or(r.activation.bits)));
    }
  }
  return map;
}

int run_train(const Recipe& r, const TrainArgs& args) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string out = args.out_dir.empty() ? "out/" + fs::path(r.path).stem().string() : args.out_dir;
  fs::create_directories(out);
  {
    std::ofstream f(out + "/recipe.yaml");
    f << "# the recipe as run (" << r.path << "), every default resolved\n" << to_yaml(r);
  }
  if (r.threads > 0) set_num_threads(r.threads);
  Loaders l;
  try {
    l = make_loaders(r);
  } catch (const Error& e) {  // a directory without the dataset's files: bad input
    throw RecipeError("data.dir '" + r.data_dir + "': " + e.what());
  }
  Generator init(r.seed);
  manual_seed(r.seed + 1);
  auto model = make_recipe_model(r, init);
  if (!r.pretrained.empty()) {
    try {
      trainers::load_model_from_checkpoint(r.pretrained, *model);
    } catch (const Error& e) {
      throw RecipeError(std::string("pretrained: ") + e.what());
    }
    std::printf("== FP32 weights from %s\n", r.pretrained.c_str());
  }
  // A teacher for distillation: the recipe's model with the teacher's FP32
  // weights, in eval mode, run without gradients on every training batch.
  nn::ModulePtr teacher;
  if (!r.distill_teacher.empty()) {
    Generator tg(r.seed);
    teacher = make_recipe_model(r, tg);
    try {
      trainers::load_model_from_checkpoint(r.distill_teacher, *teacher);
    } catch (const Error& e) {
      throw RecipeError(std::string("distill.teacher: ") + e.what());
    }
    teacher->eval();
    std::printf("== distillation from %s: loss %g * cross-entropy + %g * T^2 KL(teacher || model) at T = %g\n",
                r.distill_teacher.c_str(), 1 - r.distill_alpha, r.distill_alpha, r.distill_temperature);
  }
  const int64_t per_epoch = r.max_steps_per_epoch > 0 ? std::min(r.max_steps_per_epoch, l.train->batches_per_epoch())
                                                      : l.train->batches_per_epoch();
  const bool qat = r.quant && r.quant_mode == "qat";
  const int64_t fp32_steps = r.epochs * per_epoch, qat_steps = qat ? r.qat_epochs * per_epoch : 0;
  // One schedule over both stages unless the QAT stage has its own lr.
  auto whole = make_schedule(r.schedule, r.lr, fp32_steps + (r.qat_lr > 0 ? 0 : qat_steps));
  double images_per_s = 0;
  trainers::EvalResult last{};
  auto run_stage = [&](const std::string& name, int64_t epochs, std::shared_ptr<nn::LrSchedule> sched,
                       const std::function<void(trainers::Trainer&)>& setup) {
    trainers::TrainerOptions to;
    to.epochs = epochs;
    to.out_dir = out + "/" + name;
    to.resume = args.resume;
    to.max_steps_per_epoch = r.max_steps_per_epoch;
    to.clip_grad_norm = r.clip_grad_norm;
    auto opt = make_optimizer(r, *model, sched->lr_at(0));
    trainers::Trainer t(model, opt, sched, l.train, l.test, to);
    if (r.label_smoothing > 0)
      t.set_loss([ls = r.label_smoothing](const autograd::Variable& logits, const Tensor& y) {
        return autograd::cross_entropy(logits, y, ls);
      });
    if (teacher)
      t.set_train_loss([&teacher, &r](const autograd::Variable& logits, const Tensor& x, const Tensor& y) {
        Tensor soft;
        {
          autograd::NoGradGuard ng;
          soft = (*teacher)(autograd::Variable(x)).value();
        }
        const autograd::Variable kd = autograd::distillation_kl(logits, soft, r.distill_temperature);
        if (r.distill_alpha >= 1) return kd;
        return autograd::scale(autograd::cross_entropy(logits, y, r.label_smoothing), 1 - r.distill_alpha) +
               autograd::scale(kd, r.distill_alpha);
      });
    if (setup) setup(t);
    const auto results = t.fit();
    double ips = 0;
    for (const auto& e : results) ips += e.images_per_s;
    if (!results.empty()) images_per_s = ips / results.size();
    last = results.empty() ? t.evaluate(*l.test) : results.back().test;
  };
  if (r.epochs > 0) {
    std::printf("== FP32: %s, %lld epochs of %lld steps, %s %s\n", r.model.c_str(), static_cast<long long>(r.epochs),
                static_cast<long long>(per_epoch), r.optimizer.c_str(), whole->describe().c_str());
    run_stage("fp32", r.epochs, whole, nullptr);
    std::printf("FP32 test accuracy %.2f%%\n", last.accuracy);
  }
  double test_accuracy = last.accuracy;
  std::vector<std::pair<std::string, std::string>> summary;
  if (r.quant) {
    quant::PrepareOptions po;
    po.auto_fuse = r.auto_fuse;
    po.qconfig = recipe_qconfig_map(r);
    if (qat) {
      quant::prepare_qat(*model, po);
      quant::QatSchedule qs;
      qs.fake_quant = quant::Milestone::step(static_cast<int64_t>(r.fake_quant_from * qat_steps));
      if (r.freeze_bn < 1) qs.freeze_bn = quant::Milestone::step(static_cast<int64_t>(r.freeze_bn * qat_steps));
      if (r.freeze_observers < 1)
        qs.freeze_observers = quant::Milestone::step(static_cast<int64_t>(r.freeze_observers * qat_steps));
      std::shared_ptr<nn::LrSchedule> sched =
          r.qat_lr > 0 ? make_schedule(r.schedule == "onecycle" ? "cosine" : r.schedule, r.qat_lr, qat_steps)
          : fp32_steps > 0 ? std::shared_ptr<nn::LrSchedule>(std::make_shared<nn::ContinuedLr>(whole, fp32_steps))
                           : make_schedule("cosine", 1e-4, qat_steps);
      std::printf("== QAT: %lld epochs, weights %s, activations %s\n   schedule: %s; %s\n",
                  static_cast<long long>(r.qat_epochs), po.qconfig.global->weight.describe().c_str(),
                  po.qconfig.global->activation.describe().c_str(), qs.describe().c_str(),
                  sched->describe().c_str());
      run_stage("qat", r.qat_epochs, sched, [&](trainers::Trainer& t) { trainers::attach_qat_schedule(t, qs); });
      test_accuracy = last.accuracy;
      std::printf("QAT model, eval mode (integer arithmetic): test accuracy %.2f%%\n", test_accuracy);
    } else {
      model->eval();
      quant::prepare(*model, po);
      autograd::NoGradGuard ng;
      data::Batch b;
      l.train->start_epoch(0);
      int64_t seen = 0;
      while (seen < r.calibration_images && l.train->next(b)) {
        const int64_t take = std::min<int64_t>(b.y.numel(), r.calibration_images - seen);
        const Tensor x = take < b.y.numel() ? autograd::slice(autograd::Variable(b.x), 0, 0, take).value() : b.x;
        (*model)(autograd::Variable(x));
        seen += take;
      }
      quant::finish_calibration(*model);
      std::vector<int32_t> labels;
      const Tensor logits = trainers::collect_logits([&](const Tensor& x) { return (*model)(autograd::Variable(x)).value(); },
                                       *l.test, &labels);
      test_accuracy = 100.0 * correct_of(logits, labels) / std::max<size_t>(labels.size(), 1);
      std::printf("== PTQ: calibrated on %lld training images; quantized model: test accuracy %.2f%%\n",
                  static_cast<long long>(seen), test_accuracy);
    }
    if (r.do_export) {
      model->eval();
      const std::string path = fs::path(r.export_path).is_absolute() ? r.export_path : out + "/" + r.export_path;
      if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
      quant::runtime::Model exported = quant::convert(*model, dataset_input_shape(r.dataset));
      exported.input_mean = r.mean;  // so that tools can feed raw pixels (qforge run)
      exported.input_std = r.std;
      quant::runtime::save_model(path, exported, "qforge train " + r.path);
      const auto bytes = fs::file_size(path);
      std::printf("exported int8 model: %s (%.0f KB)\n", path.c_str(), bytes / 1024.0);
      summary.push_back({"export_path", json_string(path)});
      summary.push_back({"export_bytes", std::to_string(bytes)});
      if (r.validate_export) {
        const quant::runtime::Model int8 = quant::runtime::load_model(path);
        std::vector<int32_t> labels;
        const Tensor ql = trainers::collect_logits([&](const Tensor& x) { return (*model)(autograd::Variable(x)).value(); },
                                     *l.test, &labels);
        const Tensor il = trainers::collect_logits([&](const Tensor& x) { return int8.run(x); }, *l.test);
        int64_t differ = 0;
        for (int64_t i = 0; i < ql.numel(); ++i) differ += ql.data<float>()[i] != il.data<float>()[i];
        const double int8_acc = 100.0 * correct_of(il, labels) / std::max<size_t>(labels.size(), 1);
        std::printf("exported int8 model, reloaded (%s kernels): test accuracy %.2f%% on %zu images\n",
                    quant::kernels::isa_name(quant::kernels::kernels().isa), int8_acc, labels.size());
        std::printf("outputs that differ between the quantized model in eval mode and the export: %lld of %lld\n",
                    static_cast<long long>(differ), static_cast<long long>(ql.numel()));
        summary.push_back({"int8_accuracy", num(int8_acc, 2)});
        summary.push_back({"int8_mismatches", std::to_string(differ)});
        summary.push_back({"kernels", json_string(quant::kernels::isa_name(quant::kernels::kernels().isa))});
        if (differ != 0) {
          std::fprintf(stderr, "qforge train: the exported model does not reproduce the quantized model\n");
          summary.insert(summary.begin(), {"ok", "false"});
        }
      }
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary.insert(summary.begin(), {"command", "\"train\""});
  summary.push_back({"test_accuracy", num(test_accuracy, 2)});
  summary.push_back({"images_per_s", num(images_per_s, 1)});
  summary.push_back({"wall_s", num(wall, 1)});
  summary.push_back({"out_dir", json_string(out)});
  std::printf("%s\n", json_line(summary).c_str());
  std::fflush(stdout);
  for (const auto& [k, v] : summary)
    if (k == "ok" && v == "false") return 1;
  return 0;
}

namespace {

data::LoaderOptions test_loader_options(const std::vector<float>& mean, const std::vector<float>& std) {
  data::LoaderOptions lo;
  lo.batch_size = 256;
  lo.shuffle = false;
  lo.mean = mean;
  lo.std = std;
  return lo;
}


}  // namespace

Recipe recipe_of_checkpoint(const std::string& checkpoint, const std::string& recipe_path,
                            const std::string& source_dir) {
  if (!recipe_path.empty()) return parse_recipe(recipe_path, {}, source_dir, false);
  fs::path dir = fs::absolute(checkpoint).parent_path();
  for (int up = 0; up < 4 && !dir.empty(); ++up, dir = dir.parent_path())
    if (fs::is_regular_file(dir / "recipe.yaml")) return parse_recipe((dir / "recipe.yaml").string(), {}, source_dir, false);
  throw RecipeError(checkpoint + ": no recipe.yaml in the directories above it (qforge train writes one into its "
                    "output directory); pass --recipe");
}

void rebuild_from_checkpoint(const std::string& checkpoint, const Recipe& r, nn::ModulePtr& model, bool& quantized) {
  const Archive a = load_archive(checkpoint);
  struct {
    nn::ModulePtr model;
    bool quantized = false;
  } out;
  bool any_model = false;
  for (const auto& [k, t] : a.tensors) {
    if (k.rfind("model/", 0) != 0) continue;
    any_model = true;
    if (k.find("_fake_quant.") != std::string::npos) out.quantized = true;
  }
  if (!any_model)
    throw RecipeError(checkpoint + " is not a qforge train checkpoint (no model/ entries); an int8 export? use it "
                      "directly");
  Generator g(r.seed);
  out.model = make_recipe_model(r, g);
  if (out.quantized) {
    quant::PrepareOptions po;
    po.auto_fuse = r.auto_fuse;
    po.qconfig = recipe_qconfig_map(r);
    quant::prepare_qat(*out.model, po);
  }
  trainers::load_model_from_checkpoint(checkpoint, *out.model);
  out.model->eval();
  model = out.model;
  quantized = out.quantized;
}

bool is_int8_model(const std::string& path) {
  try {
    const Archive a = load_archive(path);
    return a.strings.count("format") && a.strings.at("format") == "qforge-int8-model";
  } catch (const Error&) {
    return false;
  }
}

int run_eval(const std::string& model_path, const std::string& dataset_in, const std::string& data_dir_in,
             const std::string& recipe_path, const std::string& source_dir, bool dynamic) {
  std::string kind, dataset = dataset_in, data_dir = data_dir_in;
  std::vector<float> mean, std;
  std::function<Tensor(const Tensor&)> forward;
  std::optional<quant::runtime::Model> int8;
  nn::ModulePtr rebuilt;
  bool quantized = false;
  if (dynamic && is_int8_model(model_path))
    throw RecipeError("--dynamic needs an FP32 checkpoint; " + model_path + " is already an int8 model");
  if (is_int8_model(model_path)) {
    kind = "int8";
    int8 = quant::runtime::load_model(model_path);
    if (dataset.empty()) dataset = int8->input_shape[0] == 3 ? "cifar10" : "mnist";
    if (int8->input_shape != dataset_input_shape(dataset))
      throw RecipeError(model_path + " takes inputs of " + std::to_string(int8->input_shape[0]) + "x" +
                        std::to_string(int8->input_shape[1]) + "x" + std::to_string(int8->input_shape[2]) + ", not " +
                        dataset + "'s images");
    mean = int8->input_mean.empty() ? dataset_mean(dataset) : int8->input_mean;
    std = int8->input_std.empty() ? dataset_std(dataset) : int8->input_std;
    forward = [&](const Tensor& x) { return int8->run(x); };
  } else {
    const Recipe r = recipe_of_checkpoint(model_path, recipe_path, source_dir);
    rebuild_from_checkpoint(model_path, r, rebuilt, quantized);
    kind = quantized ? "qat" : "fp32";
    if (dynamic) {
      if (quantized) throw RecipeError("--dynamic needs an FP32 checkpoint; " + model_path + " is a QAT checkpoint");
      const int64_t n = quant::quantize_dynamic(*rebuilt);
      std::printf("dynamic int8: %lld LSTM and Linear layers with int8 weights, activations quantized per call\n",
                  static_cast<long long>(n));
      kind = "dynamic";
    }
    if (dataset.empty()) dataset = r.dataset;
    if (dataset != r.dataset) throw RecipeError(model_path + " was trained on " + r.dataset + ", not " + dataset);
    if (data_dir.empty()) data_dir = r.data_dir;
    mean = r.mean;
    std = r.std;
    forward = [&](const Tensor& x) { return (*rebuilt)(autograd::Variable(x)).value(); };
  }
  if (data_dir.empty())
    data_dir = dataset == "mnist" ? data::default_mnist_dir(source_dir) : source_dir + "/../shared/data/cifar10";
  if (!fs::is_directory(data_dir)) throw RecipeError("no such data directory '" + data_dir + "'");
  data::DataLoader test(load_split(dataset, data_dir, data::Split::test), test_loader_options(mean, std));
  std::vector<int32_t> labels;
  const auto t0 = std::chrono::steady_clock::now();
  const Tensor logits = trainers::collect_logits(forward, test, &labels);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t correct = correct_of(logits, labels);
  const double acc = 100.0 * correct / std::max<size_t>(labels.size(), 1);
  std::printf("%s (%s) on %s test (%zu images%s): accuracy %.2f%% (%lld correct), %.0f images/s\n",
              model_path.c_str(), kind.c_str(), dataset.c_str(), labels.size(),
              kind == "fp32" ? "" : (std::string(", ") + quant::kernels::isa_name(quant::kernels::kernels().isa) +
                                     " kernels").c_str(),
              acc, static_cast<long long>(correct), labels.size() / sec);
  std::printf("%s\n", json_line({{"command", "\"eval\""},
                                 {"kind", json_string(kind)},
                                 {"accuracy", num(acc, 2)},
                                 {"count", std::to_string(labels.size())},
                                 {"images_per_s", num(labels.size() / sec, 1)}})
                          .c_str());
  return 0;
}

int run_export(const std::string& checkpoint, const std::string& out_path, const std::string& recipe_path,
               const std::string& source_dir) {
  if (is_int8_model(checkpoint)) throw RecipeError(checkpoint + " is already an int8 model");
  const Recipe r = recipe_of_checkpoint(checkpoint, recipe_path, source_dir);
  nn::ModulePtr model;
  bool quantized = false;
  rebuild_from_checkpoint(checkpoint, r, model, quantized);
  if (!quantized)
    throw RecipeError(checkpoint + " is an FP32 checkpoint; export needs a QAT checkpoint (a recipe with "
                      "quant.enabled: true and mode qat)");
  quant::runtime::Model m = quant::convert(*model, dataset_input_shape(r.dataset));
  m.input_mean = r.mean;
  m.input_std = r.std;
  if (fs::path(out_path).has_parent_path()) fs::create_directories(fs::path(out_path).parent_path());
  quant::runtime::save_model(out_path, m, "qforge export " + checkpoint);
  const auto bytes = fs::file_size(out_path);
  std::printf("exported %s (recipe %s) to %s: %zu ops, %.0f KB\n", checkpoint.c_str(), r.path.c_str(),
              out_path.c_str(), m.ops.size(), bytes / 1024.0);
  std::printf("%s\n", json_line({{"command", "\"export\""},
                                 {"path", json_string(out_path)},
                                 {"bytes", std::to_string(bytes)},
                                 {"ops", std::to_string(m.ops.size())}})
                          .c_str());
  return 0;
}

int run_bench(const std::string& model_path, int64_t batch, int threads, double min_sec) {
  if (threads > 0) set_num_threads(threads);
  const quant::runtime::Model m = quant::runtime::load_model(model_path);
  Generator g(0);
  Tensor x = Tensor::empty({batch, m.input_shape[0], m.input_shape[1], m.input_shape[2]});
  normal_(x, 0, 1, g);
  for (int i = 0; i < 3; ++i) m.run(x);  // warm-up: packs weights, grows buffers
  std::vector<double> ts;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(min_sec);
  while (ts.size() < 10 || std::chrono::steady_clock::now() < end) {
    const auto t0 = std::chrono::steady_clock::now();
    m.run(x);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  const double p50 = ts[ts.size() / 2], p10 = ts[ts.size() / 10], p90 = ts[ts.size() * 9 / 10];
  const char* isa = quant::kernels::isa_name(quant::kernels::kernels().isa);
  std::printf("%s: batch %lld, %d threads, %s kernels, %zu calls: latency p50 %.3f ms (p10 %.3f, p90 %.3f), "
              "%.0f images/s\n",
              model_path.c_str(), static_cast<long long>(batch), num_threads(), isa, ts.size(), p50 * 1e3, p10 * 1e3,
              p90 * 1e3, batch / p50);
  std::printf("%s\n", json_line({{"command", "\"bench\""},
                                 {"batch", std::to_string(batch)},
                                 {"threads", std::to_string(num_threads())},
                                 {"latency_ms_p50", num(p50 * 1e3, 4)},
                                 {"latency_ms_p10", num(p10 * 1e3, 4)},
                                 {"latency_ms_p90", num(p90 * 1e3, 4)},
                                 {"images_per_s", num(batch / p50, 1)},
                                 {"kernels", json_string(isa)},
                                 {"calls", std::to_string(ts.size())}})
                          .c_str());
  return 0;
}

int run_predict(const std::string& model_path, const std::string& input, const std::string& labels_path,
                bool raw, int64_t show) {
  const quant::runtime::Model m = quant::runtime::load_model(model_path);
  const int64_t C = m.input_shape[0], H = m.input_shape[1], W = m.input_shape[2], per = C * H * W;
  Tensor pixels;
  if (raw) {
    std::ifstream f(input, std::ios::binary);
    if (!f) throw RecipeError("cannot open input '" + input + "'");
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.empty() || bytes.size() % static_cast<size_t>(per) != 0)
      throw RecipeError("raw input '" + input + "' has " + std::to_string(bytes.size()) +
                        " bytes, not a multiple of one image (" + std::to_string(C) + "x" + std::to_string(H) + "x" +
                        std::to_string(W) + " = " + std::to_string(per) + " bytes)");
    pixels = Tensor::empty({static_cast<int64_t>(bytes.size()) / per, C, H, W}, DType::u8);
    std::memcpy(pixels.raw(), bytes.data(), bytes.size());
  } else {
    try {
      pixels = data::read_idx(input);
    } catch (const Error& e) {
      throw RecipeError(e.what());
    }
    const bool fits = (pixels.ndim() == 3 && C == 1 && pixels.size(1) == H && pixels.size(2) == W) ||
                      (pixels.ndim() == 4 && pixels.size(1) == C && pixels.size(2) == H && pixels.size(3) == W);
    if (!fits)
      throw RecipeError("input '" + input + "' holds images of shape " + pixels.desc() + "; the model takes " +
                        std::to_string(C) + "x" + std::to_string(H) + "x" + std::to_string(W));
  }
  if (m.input_mean.empty())
    throw RecipeError(model_path + " holds no input normalization (exported before it was recorded); re-export it");
  const int64_t n = pixels.size(0);
  std::vector<int32_t> labels;
  if (!labels_path.empty()) {
    Tensor l;
    try {
      l = data::read_idx(labels_path, 1);
    } catch (const Error& e) {
      throw RecipeError(e.what());
    }
    if (l.size(0) != n)
      throw RecipeError("labels '" + labels_path + "' hold " + std::to_string(l.size(0)) + " labels for " +
                        std::to_string(n) + " images");
    for (int64_t i = 0; i < n; ++i) labels.push_back(l.data<uint8_t>()[i]);
  }
  std::vector<int32_t> pred;
  std::vector<float> conf;
  for (int64_t b = 0; b < n; b += 256) {
    const int64_t e = std::min(n, b + 256);
    Tensor chunk = Tensor::empty({e - b, C, H, W}, DType::u8);
    std::memcpy(chunk.raw(), pixels.data<uint8_t>() + b * per, static_cast<size_t>((e - b) * per));
    const Tensor logits = m.run(m.normalize_pixels(chunk));
    const int64_t k = logits.size(1);
    for (int64_t i = 0; i < e - b; ++i) {
      const float* row = logits.data<float>() + i * k;
      const int64_t best = std::max_element(row, row + k) - row;
      double z = 0;  // softmax in float, at the end
      for (int64_t j = 0; j < k; ++j) z += std::exp(static_cast<double>(row[j] - row[best]));
      pred.push_back(static_cast<int32_t>(best));
      conf.push_back(static_cast<float>(1.0 / z));
    }
  }
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += pred[i] == labels[i];
  for (int64_t i = 0; i < std::min(n, show); ++i) {
    std::string verdict;
    if (!labels.empty()) verdict = pred[i] == labels[i] ? "  correct" : "  label " + std::to_string(labels[i]);
    std::printf("image %lld: class %d (p %.3f)%s\n", static_cast<long long>(i), pred[i], conf[i], verdict.c_str());
  }
  if (n > show) std::printf("... %lld more\n", static_cast<long long>(n - show));
  std::string list = "[";
  for (size_t i = 0; i < pred.size(); ++i) {
    if (i) list += ',';
    list += std::to_string(pred[i]);
  }
  list += ']';
  std::vector<std::pair<std::string, std::string>> kv = {{"command", "\"run\""}, {"count", std::to_string(n)}};
  if (!labels.empty()) {
    std::printf("accuracy %.2f%% (%lld of %lld)\n", 100.0 * correct / n, static_cast<long long>(correct),
                static_cast<long long>(n));
    kv.push_back({"accuracy", num(100.0 * correct / n, 2)});
  }
  kv.push_back({"predictions", list});
  std::printf("%s\n", json_line(kv).c_str());
  return 0;
}

}  // namespace qforge::cli
