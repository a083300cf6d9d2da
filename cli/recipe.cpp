#include "cli/recipe.h"

#include <yaml-cpp/yaml.h>

#include "nn/zoo.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

namespace qforge::cli {

namespace fs = std::filesystem;

std::vector<float> dataset_mean(const std::string& dataset) {
  return dataset == "mnist" ? std::vector<float>{0.1307f} : std::vector<float>{0.4914f, 0.4822f, 0.4465f};
}
std::vector<float> dataset_std(const std::string& dataset) {
  return dataset == "mnist" ? std::vector<float>{0.3081f} : std::vector<float>{0.2470f, 0.2435f, 0.2616f};
}
std::array<int64_t, 3> dataset_input_shape(const std::string& dataset) {
  return dataset == "mnist" ? std::array<int64_t, 3>{1, 28, 28} : std::array<int64_t, 3>{3, 32, 32};
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

namespace {

// ---- the schema --------------------------------------------------------------------

enum class Kind { map, integer, number, boolean, string, choice, number_list, string_map, map_list };

struct Field {
  std::string name;
  Kind kind = Kind::string;
  double lo = -INFINITY, hi = INFINITY;
  bool lo_open = false;  // lo < value rather than lo <= value
  std::vector<std::string> choices;
  std::vector<Field> children;  // map: its keys; map_list: the keys of each item
  std::string help;
};

Field map(std::string name, std::vector<Field> children) {
  return {std::move(name), Kind::map, -INFINITY, INFINITY, false, {}, std::move(children), ""};
}
Field integer(std::string name, double lo, double hi) { return {std::move(name), Kind::integer, lo, hi, false, {}, {}, ""}; }
Field number(std::string name, double lo, double hi, bool lo_open = false) {
  return {std::move(name), Kind::number, lo, hi, lo_open, {}, {}, ""};
}
Field boolean(std::string name) { return {std::move(name), Kind::boolean, 0, 0, false, {}, {}, ""}; }
Field string(std::string name) { return {std::move(name), Kind::string, 0, 0, false, {}, {}, ""}; }
Field choice(std::string name, std::vector<std::string> c) {
  return {std::move(name), Kind::choice, 0, 0, false, std::move(c), {}, ""};
}

const std::vector<std::string> kObservers = {"minmax",         "moving_average", "per_channel_minmax",
                                             "moving_average_per_channel", "histogram", "percentile"};

const Field& schema() {
  static const Field root = map(
      "", {map("model", {string("name"), {"args", Kind::string_map, 0, 0, false, {}, {}, ""}}),
           map("data", {choice("dataset", {"mnist", "cifar10"}), string("dir"), integer("batch_size", 1, 65536),
                        integer("test_batch_size", 1, 65536),
                        map("augment", {integer("shift", 0, 8), boolean("hflip")}),
                        map("normalize", {{"mean", Kind::number_list, -1e6, 1e6, false, {}, {}, ""},
                                          {"std", Kind::number_list, 0, 1e6, true, {}, {}, ""}})}),
           map("training", {integer("epochs", 0, 100000),
                            map("optimizer", {choice("name", {"adam", "adamw", "sgd"}), number("lr", 0, 100, true),
                                              number("momentum", 0, 0.999999), number("weight_decay", 0, 1),
                                              boolean("nesterov"), boolean("decay_vectors")}),
                            choice("schedule", {"cosine", "onecycle", "constant"}), integer("seed", 0, 9.0e15),
                            integer("threads", 0, 1024), integer("max_steps_per_epoch", 0, 1e12),
                            number("clip_grad_norm", 0, 1e6), number("label_smoothing", 0, 0.999)}),
           map("quant", {boolean("enabled"), choice("mode", {"qat", "ptq"}), integer("epochs", 1, 100000),
                         number("lr", 0, 100), choice("method", {"ste", "lsq"}),
                         choice("lsq_init", {"observer", "data"}),
                         map("weight", {integer("bits", 2, 8), choice("observer", kObservers)}),
                         map("activation", {integer("bits", 2, 8), choice("observer", kObservers)}),
                         {"overrides",
                          Kind::map_list,
                          0,
                          0,
                          false,
                          {},
                          {string("match"), boolean("float"), integer("weight_bits", 2, 8),
                           integer("activation_bits", 2, 8)},
                          ""},
                         choice("fuse", {"auto", "none"}),
                         map("schedule", {number("fake_quant_from", 0, 1), number("freeze_bn", 0, 1),
                                          number("freeze_observers", 0, 1)}),
                         integer("calibration_images", 1, 1e7)}),
           map("export", {boolean("enabled"), string("path"), boolean("validate")}), string("pretrained"),
           map("distill", {string("teacher"), number("alpha", 0, 1, true), number("temperature", 0, 100, true)})});
  return root;
}

// ---- checking ------------------------------------------------------------------------

struct Checker {
  std::string file;
  bool check_files = true;
  std::set<std::string> set_paths;  // key paths that came from --set

  [[noreturn]] void fail(const YAML::Node& node, const std::string& path, const std::string& msg) const {
    std::ostringstream s;
    const YAML::Mark m = node.Mark();
    if (set_paths.count(path)) {
      s << "--set " << path << ": " << msg;
    } else if (m.line >= 0) {
      s << file << ":" << m.line + 1 << ":" << m.column + 1 << ": " << path << ": " << msg;
    } else {
      s << file << ": " << path << ": " << msg;
    }
    throw RecipeError(s.str());
  }

  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

  void check_number(const YAML::Node& n, const Field& f, const std::string& path, bool integral) const {
    if (!n.IsScalar()) fail(n, path, std::string("expected ") + (integral ? "an integer" : "a number"));
    double v = 0;
    try {
      v = integral ? static_cast<double>(n.as<int64_t>()) : n.as<double>();
    } catch (const YAML::Exception&) {
      fail(n, path, std::string("expected ") + (integral ? "an integer" : "a number") + ", got '" + n.Scalar() + "'");
    }
    if (!std::isfinite(v)) fail(n, path, "must be finite, got " + n.Scalar());
    const bool low = f.lo_open ? !(v > f.lo) : v < f.lo;
    if (low || v > f.hi) {
      std::ostringstream s;
      s << "must be in " << (f.lo_open ? "(" : "[") << f.lo << ", " << f.hi << "], got " << n.Scalar();
      fail(n, path, s.str());
    }
  }

  void check(const YAML::Node& n, const Field& f, const std::string& path) const {
    switch (f.kind) {
      case Kind::map: {
        if (n.IsNull()) return;
        if (!n.IsMap()) fail(n, path.empty() ? "recipe" : path, "expected a mapping of keys");
        for (const auto& kv : n) {
          const std::string key = kv.first.as<std::string>();
          const auto it = std::find_if(f.children.begin(), f.children.end(), [&](const Field& c) { return c.name == key; });
          if (it == f.children.end()) {
            std::string best;
            size_t best_d = 1000;
            std::string known;
            for (const Field& c : f.children) {
              known += (known.empty() ? "" : ", ") + c.name;
              const size_t d = edit_distance(key, c.name);
              if (d < best_d) best_d = d, best = c.name;
            }
            std::string msg = "unknown key '" + key + "'";
            if (best_d <= std::max<size_t>(2, key.size() / 3)) msg += "; did you mean '" + best + "'?";
            msg += " (known here: " + known + ")";
            fail(kv.first, join(path, key), msg);
          }
          check(kv.second, *it, join(path, key));
        }
        return;
      }
      case Kind::integer:
        return check_number(n, f, path, true);
      case Kind::number:
        return check_number(n, f, path, false);
      case Kind::boolean:
        if (!n.IsScalar()) fail(n, path, "expected true or false");
        try {
          (void)n.as<bool>();
        } catch (const YAML::Exception&) {
          fail(n, path, "expected true or false, got '" + n.Scalar() + "'");
        }
        return;
      case Kind::string:
        if (!n.IsScalar()) fail(n, path, "expected a string");
        return;
      case Kind::choice: {
        if (!n.IsScalar()) fail(n, path, "expected one of the names below");
        const std::string v = n.Scalar();
        if (std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end()) {
          std::string all, best;
          size_t best_d = 1000;
          for (const auto& c : f.choices) {
            all += (all.empty() ? "" : ", ") + c;
            if (edit_distance(v, c) < best_d) best_d = edit_distance(v, c), best = c;
          }
          std::string msg = "'" + v + "' is not one of: " + all;
          if (best_d <= std::max<size_t>(2, v.size() / 3)) msg += "; did you mean '" + best + "'?";
          fail(n, path, msg);
        }
        return;
      }
      case Kind::number_list:
        if (!n.IsSequence() || n.size() == 0) fail(n, path, "expected a non-empty list of numbers");
        for (size_t i = 0; i < n.size(); ++i) {
          Field item = f;
          item.kind = Kind::number;
          check(n[i], item, path + "[" + std::to_string(i) + "]");
        }
        return;
      case Kind::string_map:
        if (n.IsNull()) return;
        if (!n.IsMap()) fail(n, path, "expected a mapping of names to values");
        for (const auto& kv : n)
          if (!kv.second.IsScalar()) fail(kv.second, join(path, kv.first.as<std::string>()), "expected a scalar value");
        return;
      case Kind::map_list:
        if (n.IsNull()) return;
        if (!n.IsSequence()) fail(n, path, "expected a list");
        for (size_t i = 0; i < n.size(); ++i) {
          const Field item = map(f.name, f.children);
          check(n[i], item, path + "[" + std::to_string(i) + "]");
        }
        return;
    }
  }
};

/// Applies "a.b.c=value" to the tree (creating maps on the way); the value is
/// parsed as YAML, so numbers, booleans and lists keep their types.
void apply_set(YAML::Node& root, const std::string& set, std::set<std::string>& paths) {
  const size_t eq = set.find('=');
  if (eq == std::string::npos || eq == 0)
    throw RecipeError("--set " + set + ": expected key.path=value (for example training.epochs=3)");
  const std::string path = set.substr(0, eq), text = set.substr(eq + 1);
  std::vector<std::string> keys;
  std::stringstream ss(path);
  for (std::string k; std::getline(ss, k, '.');) {
    if (k.empty()) throw RecipeError("--set " + set + ": empty key in '" + path + "'");
    keys.push_back(k);
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw RecipeError("--set " + set + ": bad value: " + e.msg);
  }
  if (!value.IsDefined() || value.IsNull()) value = YAML::Node(text);
  // Walk with fresh handles (yaml-cpp nodes are references; reassigning a
  // walked handle would overwrite the node it points at).
  std::function<void(YAML::Node, size_t)> put = [&](YAML::Node node, size_t i) {
    if (i + 1 == keys.size()) {
      node[keys[i]] = value;
      return;
    }
    if (node[keys[i]] && !node[keys[i]].IsMap())
      throw RecipeError("--set " + set + ": '" + keys[i] + "' is not a mapping in the recipe");
    if (!node[keys[i]]) node[keys[i]] = YAML::Node(YAML::NodeType::Map);
    put(node[keys[i]], i + 1);
  };
  put(root, 0);
  paths.insert(path);
}

template <class T>
T get(const YAML::Node& n, const std::string& dotted, T fallback) {
  std::stringstream ss(dotted);
  std::vector<std::string> keys;
  for (std::string k; std::getline(ss, k, '.');) keys.push_back(k);
  std::function<std::optional<YAML::Node>(const YAML::Node&, size_t)> walk =
      [&](const YAML::Node& at, size_t i) -> std::optional<YAML::Node> {
    if (!at.IsMap()) return std::nullopt;
    const YAML::Node next = at[keys[i]];
    if (!next || next.IsNull()) return std::nullopt;
    if (i + 1 == keys.size()) return next;
    return walk(next, i + 1);
  };
  const auto found = walk(n, 0);
  return found ? found->as<T>() : fallback;
}

Recipe build(const YAML::Node& root, const Checker& c, const std::string& name, const std::string& source_dir) {
  c.check(root, schema(), "");
  Recipe r;
  r.path = name;
  r.model = get<std::string>(root, "model.name", r.model);
  {
    const auto names = nn::model_names();
    if (std::find(names.begin(), names.end(), r.model) == names.end()) {
      std::string all, best;
      size_t best_d = 1000;
      for (const auto& n : names) {
        all += (all.empty() ? "" : ", ") + n;
        if (edit_distance(r.model, n) < best_d) best_d = edit_distance(r.model, n), best = n;
      }
      c.fail(root["model"]["name"], "model.name",
             "'" + r.model + "' is not a zoo model (" + all + ")" +
                 (best_d <= 3 ? "; did you mean '" + best + "'?" : ""));
    }
  }
  if (root["model"] && root["model"]["args"])
    for (const auto& kv : root["model"]["args"]) r.model_args[kv.first.as<std::string>()] = kv.second.as<std::string>();
  r.dataset = get<std::string>(root, "data.dataset", r.dataset);
  r.batch_size = get<int64_t>(root, "data.batch_size", r.batch_size);
  r.test_batch_size = get<int64_t>(root, "data.test_batch_size", r.test_batch_size);
  r.shift = get<int64_t>(root, "data.augment.shift", r.dataset == "cifar10" ? 4 : 0);
  r.hflip = get<bool>(root, "data.augment.hflip", r.dataset == "cifar10");
  r.mean = get<std::vector<float>>(root, "data.normalize.mean", dataset_mean(r.dataset));
  r.std = get<std::vector<float>>(root, "data.normalize.std", dataset_std(r.dataset));
  const size_t channels = r.dataset == "mnist" ? 1 : 3;
  if (r.mean.size() != channels || r.std.size() != channels)
    c.fail(root["data"], "data.normalize",
           "mean and std need " + std::to_string(channels) + " value(s) each for " + r.dataset);
  r.epochs = get<int64_t>(root, "training.epochs", r.epochs);
  r.optimizer = get<std::string>(root, "training.optimizer.name", r.optimizer);
  r.lr = get<double>(root, "training.optimizer.lr", r.optimizer == "sgd" ? 0.1 : r.lr);
  r.momentum = get<double>(root, "training.optimizer.momentum", r.momentum);
  r.weight_decay = get<double>(root, "training.optimizer.weight_decay", r.weight_decay);
  r.clip_grad_norm = get<double>(root, "training.clip_grad_norm", r.clip_grad_norm);
  r.nesterov = get<bool>(root, "training.optimizer.nesterov", r.nesterov);
  r.decay_vectors = get<bool>(root, "training.optimizer.decay_vectors", r.decay_vectors);
  r.label_smoothing = get<double>(root, "training.label_smoothing", r.label_smoothing);
  r.schedule = get<std::string>(root, "training.schedule", r.schedule);
  r.seed = static_cast<uint64_t>(get<int64_t>(root, "training.seed", 0));
  r.threads = static_cast<int>(get<int64_t>(root, "training.threads", 0));
  r.max_steps_per_epoch = get<int64_t>(root, "training.max_steps_per_epoch", 0);
  r.quant = get<bool>(root, "quant.enabled", root["quant"].IsDefined() && !root["quant"].IsNull());
  r.quant_mode = get<std::string>(root, "quant.mode", r.quant_mode);
  r.qat_epochs = get<int64_t>(root, "quant.epochs", r.qat_epochs);
  r.qat_lr = get<double>(root, "quant.lr", r.qat_lr);
  r.method = get<std::string>(root, "quant.method", r.method);
  r.lsq_init = get<std::string>(root, "quant.lsq_init", r.lsq_init);
  r.weight.bits = static_cast<int>(get<int64_t>(root, "quant.weight.bits", 8));
  r.weight.observer = get<std::string>(root, "quant.weight.observer", "");
  r.activation.bits = static_cast<int>(get<int64_t>(root, "quant.activation.bits", 8));
  r.activation.observer = get<std::string>(root, "quant.activation.observer", "");
  if (r.weight.observer != "" && r.weight.observer.find("per_channel") == std::string::npos)
    c.fail(root["quant"]["weight"]["observer"], "quant.weight.observer",
           "weights are quantized per channel; use per_channel_minmax or moving_average_per_channel");
  if (r.activation.observer.find("per_channel") != std::string::npos)
    c.fail(root["quant"]["activation"]["observer"], "quant.activation.observer",
           "activations are quantized per tensor; use minmax, moving_average, histogram or percentile");
  if (root["quant"] && root["quant"]["overrides"]) {
    const YAML::Node list = root["quant"]["overrides"];
    for (size_t i = 0; i < list.size(); ++i) {
      QuantOverride o;
      const YAML::Node it = list[i];
      if (!it["match"]) c.fail(it, "quant.overrides[" + std::to_string(i) + "]", "needs a 'match' glob");
      o.match = it["match"].as<std::string>();
      o.keep_float = it["float"] ? it["float"].as<bool>() : false;
      if (it["weight_bits"]) o.weight_bits = it["weight_bits"].as<int>();
      if (it["activation_bits"]) o.activation_bits = it["activation_bits"].as<int>();
      r.overrides.push_back(o);
    }
  }
  r.auto_fuse = get<std::string>(root, "quant.fuse", "auto") == "auto";
  r.fake_quant_from = get<double>(root, "quant.schedule.fake_quant_from", r.fake_quant_from);
  r.freeze_bn = get<double>(root, "quant.schedule.freeze_bn", r.freeze_bn);
  r.freeze_observers = get<double>(root, "quant.schedule.freeze_observers", r.freeze_observers);
  r.calibration_images = get<int64_t>(root, "quant.calibration_images", r.calibration_images);
  r.do_export = get<bool>(root, "export.enabled", root["export"].IsDefined() && !root["export"].IsNull());
  r.export_path = get<std::string>(root, "export.path", r.export_path);
  r.validate_export = get<bool>(root, "export.validate", true);
  if (r.nesterov && (r.optimizer != "sgd" || r.momentum <= 0))
    c.fail(root["training"]["optimizer"]["nesterov"], "training.optimizer.nesterov",
           "nesterov needs optimizer 'sgd' with momentum > 0");
  if (r.do_export && !r.quant)
    c.fail(root["export"], "export", "exporting an int8 model needs quantization (quant.enabled: true)");
  if (r.quant && r.quant_mode == "qat" && r.epochs == 0 && !root["pretrained"])
    c.fail(root["quant"], "quant", "QAT without FP32 epochs needs a 'pretrained' checkpoint (or training.epochs > 0)");
  // Files.
  r.data_dir = get<std::string>(root, "data.dir", "");
  if (r.data_dir.empty()) {
    if (r.dataset == "mnist") {
      r.data_dir = source_dir.empty() ? "data/mnist" : source_dir + "/data/mnist";
    } else {
      r.data_dir = source_dir.empty() ? "../shared/data/cifar10" : source_dir + "/../shared/data/cifar10";
    }
  }
  if (c.check_files && !fs::is_directory(r.data_dir))
    c.fail(root["data"] && root["data"]["dir"] ? root["data"]["dir"] : root, "data.dir",
           "no such directory '" + r.data_dir + "'" +
               (root["data"] && root["data"]["dir"] ? "" : " (the default for " + r.dataset + "; set data.dir)"));
  r.pretrained = get<std::string>(root, "pretrained", "");
  if (c.check_files && !r.pretrained.empty() && !fs::is_regular_file(r.pretrained))
    c.fail(root["pretrained"], "pretrained", "no such file '" + r.pretrained + "'");
  r.distill_teacher = get<std::string>(root, "distill.teacher", "");
  r.distill_alpha = get<double>(root, "distill.alpha", r.distill_alpha);
  r.distill_temperature = get<double>(root, "distill.temperature", r.distill_temperature);
  if (root["distill"] && !root["distill"].IsNull() && r.distill_teacher.empty())
    c.fail(root["distill"], "distill", "distillation needs a 'teacher' checkpoint");
  if (!r.distill_teacher.empty() && r.epochs == 0 && !(r.quant && r.quant_mode == "qat"))
    c.fail(root["distill"], "distill", "no training step runs to distill into (training.epochs is 0 and no QAT stage)");
  if (c.check_files && !r.distill_teacher.empty() && !fs::is_regular_file(r.distill_teacher))
    c.fail(root["distill"]["teacher"], "distill.teacher", "no such file '" + r.distill_teacher + "'");
  return r;
}

Recipe parse_node(YAML::Node root, const std::string& name, const std::vector<std::string>& sets,
                  const std::string& source_dir, bool check_files) {
  Checker c;
  c.file = name;
  c.check_files = check_files;
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw RecipeError(name + ": a recipe is a mapping of sections (model, data, training, ...)");
  for (const auto& s : sets) apply_set(root, s, c.set_paths);
  return build(root, c, name, source_dir);
}

}  // namespace

Recipe parse_recipe_text(const std::string& text, const std::string& name, const std::vector<std::string>& sets,
                         const std::string& source_dir, bool check_files) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw RecipeError(name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": YAML syntax error: " + e.msg);
  }
  return parse_node(root, name, sets, source_dir, check_files);
}

Recipe parse_recipe(const std::string& path, const std::vector<std::string>& sets, const std::string& source_dir,
                    bool check_files) {
  if (!fs::is_regular_file(path)) throw RecipeError(path + ": no such recipe file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::ParserException& e) {
    throw RecipeError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": YAML syntax error: " + e.msg);
  } catch (const YAML::Exception& e) {
    throw RecipeError(path + ": " + e.msg);
  }
  return parse_node(root, path, sets, source_dir, check_files);
}

std::string to_yaml(const Recipe& r) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "model" << YAML::Value << YAML::BeginMap << YAML::Key << "name" << YAML::Value << r.model;
  if (!r.model_args.empty()) {
    e << YAML::Key << "args" << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : r.model_args) e << YAML::Key << k << YAML::Value << v;
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap << YAML::Key << "dataset" << YAML::Value << r.dataset
    << YAML::Key << "dir" << YAML::Value << r.data_dir << YAML::Key << "batch_size" << YAML::Value << r.batch_size
    << YAML::Key << "test_batch_size" << YAML::Value << r.test_batch_size << YAML::Key << "augment" << YAML::Value
    << YAML::BeginMap << YAML::Key << "shift" << YAML::Value << r.shift << YAML::Key << "hflip" << YAML::Value
    << r.hflip << YAML::EndMap << YAML::Key << "normalize" << YAML::Value << YAML::BeginMap << YAML::Key << "mean"
    << YAML::Value << YAML::Flow << r.mean << YAML::Key << "std" << YAML::Value << YAML::Flow << r.std
    << YAML::EndMap << YAML::EndMap;
  e << YAML::Key << "training" << YAML::Value << YAML::BeginMap << YAML::Key << "epochs" << YAML::Value << r.epochs
    << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap << YAML::Key << "name" << YAML::Value << r.optimizer
    << YAML::Key << "lr" << YAML::Value << r.lr << YAML::Key << "momentum" << YAML::Value << r.momentum << YAML::Key
    << "weight_decay" << YAML::Value << r.weight_decay << YAML::Key << "nesterov" << YAML::Value << r.nesterov
    << YAML::Key << "decay_vectors" << YAML::Value << r.decay_vectors
    << YAML::EndMap << YAML::Key << "schedule" << YAML::Value
    << r.schedule << YAML::Key << "seed" << YAML::Value << static_cast<int64_t>(r.seed) << YAML::Key << "threads"
    << YAML::Value << r.threads << YAML::Key << "max_steps_per_epoch" << YAML::Value << r.max_steps_per_epoch
    << YAML::Key << "clip_grad_norm" << YAML::Value << r.clip_grad_norm << YAML::Key << "label_smoothing"
    << YAML::Value << r.label_smoothing << YAML::EndMap;
  e << YAML::Key << "quant" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value << r.quant
    << YAML::Key << "mode" << YAML::Value << r.quant_mode << YAML::Key << "epochs" << YAML::Value << r.qat_epochs
    << YAML::Key << "lr" << YAML::Value << r.qat_lr << YAML::Key << "method" << YAML::Value << r.method;
  if (r.method == "lsq") e << YAML::Key << "lsq_init" << YAML::Value << r.lsq_init;
  e << YAML::Key << "weight" << YAML::Value << YAML::BeginMap << YAML::Key << "bits" << YAML::Value << r.weight.bits;
  if (!r.weight.observer.empty()) e << YAML::Key << "observer" << YAML::Value << r.weight.observer;
  e << YAML::EndMap << YAML::Key << "activation" << YAML::Value << YAML::BeginMap << YAML::Key << "bits"
    << YAML::Value << r.activation.bits;
  if (!r.activation.observer.empty()) e << YAML::Key << "observer" << YAML::Value << r.activation.observer;
  e << YAML::EndMap;
  if (!r.overrides.empty()) {
    e << YAML::Key << "overrides" << YAML::Value << YAML::BeginSeq;
    for (const auto& o : r.overrides) {
      e << YAML::BeginMap << YAML::Key << "match" << YAML::Value << o.match << YAML::Key << "float" << YAML::Value
        << o.keep_float;
      if (o.weight_bits) e << YAML::Key << "weight_bits" << YAML::Value << *o.weight_bits;
      if (o.activation_bits) e << YAML::Key << "activation_bits" << YAML::Value << *o.activation_bits;
      e << YAML::EndMap;
    }
    e << YAML::EndSeq;
  }
  e << YAML::Key << "fuse" << YAML::Value << (r.auto_fuse ? "auto" : "none") << YAML::Key << "schedule" << YAML::Value
    << YAML::BeginMap << YAML::Key << "fake_quant_from" << YAML::Value << r.fake_quant_from << YAML::Key
    << "freeze_bn" << YAML::Value << r.freeze_bn << YAML::Key << "freeze_observers"
    << YAML::Value << r.freeze_observers << YAML::EndMap << YAML::Key << "calibration_images" << YAML::Value
    << r.calibration_images << YAML::EndMap;
  e << YAML::Key << "export" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value << r.do_export
    << YAML::Key << "path" << YAML::Value << r.export_path << YAML::Key << "validate" << YAML::Value
    << r.validate_export << YAML::EndMap;
  if (!r.pretrained.empty()) e << YAML::Key << "pretrained" << YAML::Value << r.pretrained;
  if (!r.distill_teacher.empty())
    e << YAML::Key << "distill" << YAML::Value << YAML::BeginMap << YAML::Key << "teacher" << YAML::Value
      << r.distill_teacher << YAML::Key << "alpha" << YAML::Value << r.distill_alpha << YAML::Key << "temperature"
      << YAML::Value << r.distill_temperature << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace qforge::cli
