#include "quant/prepare.h"

#include <memory>
#include <set>
#include <sstream>

#include "core/error.h"
#include "nn/layers.h"
#include "nn/rnn.h"
#include "quant/fake_quantize.h"
#include "quant/qat_lstm.h"
#include "quant/qat_modules.h"

namespace qforge::quant {

namespace {

using Pattern = std::vector<std::string>;

/// Fusable type sequences, longest first (find_fusion_groups tries them in
/// this order at each position).
const std::vector<Pattern>& patterns() {
  static const std::vector<Pattern> p = {
      {"Conv2d", "BatchNorm2d", "ReLU"}, {"Conv2d", "BatchNorm2d", "ReLU6"}, {"Linear", "BatchNorm1d", "ReLU"},
      {"Linear", "BatchNorm1d", "ReLU6"}, {"Conv2d", "BatchNorm2d"},         {"Conv2d", "ReLU"},
      {"Conv2d", "ReLU6"},                {"Linear", "BatchNorm1d"},         {"Linear", "ReLU"},
      {"Linear", "ReLU6"},
  };
  return p;
}

std::string join(const std::vector<std::string>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

std::string child_path(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

FusedActivation act_of(const std::string& type) {
  return type == "ReLU" ? FusedActivation::relu : type == "ReLU6" ? FusedActivation::relu6 : FusedActivation::none;
}

/// Builds the QAT module for a fusion group (types already matched).
nn::ModulePtr make_fused(const std::vector<nn::ModulePtr>& mods, const std::vector<std::string>& types,
                         const QConfig& q) {
  std::shared_ptr<nn::BatchNorm> bn;
  FusedActivation act = FusedActivation::none;
  for (size_t i = 1; i < mods.size(); ++i) {
    if (types[i].rfind("BatchNorm", 0) == 0) bn = std::dynamic_pointer_cast<nn::BatchNorm>(mods[i]);
    else act = act_of(types[i]);
  }
  if (types[0] == "Conv2d") {
    const auto& conv = static_cast<const nn::Conv2d&>(*mods[0]);
    if (bn && act != FusedActivation::none) return std::make_shared<QATConvBnReLU2d>(conv, bn, q, act);
    if (bn) return std::make_shared<QATConvBn2d>(conv, bn, q);
    return std::make_shared<QATConvReLU2d>(conv, q, act);
  }
  const auto& lin = static_cast<const nn::Linear&>(*mods[0]);
  if (bn) return std::make_shared<QATLinearBn1d>(lin, bn, q, act);
  return std::make_shared<QATLinearReLU>(lin, q, act);
}

template <class Fn>
void for_each_quantizer(nn::Module& root, Fn&& fn) {
  root.apply([&](nn::Module& m) {
    if (auto* fq = dynamic_cast<FakeQuantize*>(&m)) fn(*fq);
  });
}

void prepare_impl(nn::Module& root, const PrepareOptions& o, const char* who) {
  for (const auto& [name, m] : root.named_modules())
    QF_CHECK(!dynamic_cast<FakeQuantize*>(m) && !dynamic_cast<QATConvBase*>(m) && !dynamic_cast<QATLinearBase*>(m))
        << who << ": the model is already prepared (found " << m->type_name() << " at '" << name << "')";

  // ---- plan: fusion groups ---------------------------------------------------
  std::vector<FusionGroup> groups = o.fusion_groups;
  std::set<std::string> grouped;
  for (const auto& g : groups) {
    QF_CHECK(g.size() >= 2) << who << ": fusion group " << join(g) << " needs at least two modules";
    for (const auto& n : g) QF_CHECK(grouped.insert(n).second) << who << ": module '" << n << "' is in two fusion groups";
  }
  if (o.auto_fuse)
    for (const auto& g : find_fusion_groups(root)) {
      bool clash = false;
      for (const auto& n : g) clash = clash || grouped.count(n);
      if (clash) continue;
      for (const auto& n : g) grouped.insert(n);
      groups.push_back(g);
    }

  std::vector<std::pair<std::string, nn::ModulePtr>> swaps;
  std::set<std::string> swapped;
  for (const auto& g : groups) {
    std::vector<nn::ModulePtr> mods;
    std::vector<std::string> types;
    for (const auto& n : g) {
      nn::ModulePtr m;
      try {
        m = root.get_module(n);
      } catch (const IndexError& e) {
        QF_THROW(ValueError) << who << ": fusion group " << join(g) << ": " << e.what();
      }
      mods.push_back(m);
      types.push_back(m->type_name());
    }
    // Members must be siblings, and consecutive in order under a Sequential.
    const auto parent_of = [](const std::string& n) {
      const size_t dot = n.rfind('.');
      return dot == std::string::npos ? std::string() : n.substr(0, dot);
    };
    const std::string parent = parent_of(g[0]);
    for (const auto& n : g)
      QF_CHECK(parent_of(n) == parent) << who << ": fusion group " << join(g)
                                       << " spans different parent modules; members must be siblings";
    const nn::ModulePtr parent_mod = parent.empty() ? nullptr : root.get_module(parent);
    const nn::Module& pm = parent.empty() ? root : *parent_mod;
    if (pm.type_name() == "Sequential") {
      const auto& kids = pm.named_children();
      std::vector<size_t> pos;
      for (const auto& n : g) {
        const std::string leaf = n.substr(parent.empty() ? 0 : parent.size() + 1);
        for (size_t k = 0; k < kids.size(); ++k)
          if (kids[k].first == leaf) pos.push_back(k);
      }
      for (size_t k = 1; k < pos.size(); ++k)
        QF_CHECK(pos[k] == pos[k - 1] + 1) << who << ": fusion group " << join(g)
                                           << " is not a run of consecutive modules of its Sequential, in order";
    }
    bool known = false;
    for (const auto& p : patterns()) known = known || p == types;
    if (!known) {
      std::ostringstream msg;
      msg << who << ": cannot fuse " << join(g) << " of types " << join(types) << "; fusable patterns:";
      for (const auto& p : patterns()) msg << " " << join(p);
      QF_THROW(ValueError) << msg.str();
    }
    const std::optional<QConfig> q = o.qconfig.resolve(g[0], types[0]);
    if (!q) continue;  // stays in float, unfused
    swaps.emplace_back(g[0], make_fused(mods, types, *q));
    for (size_t i = 1; i < g.size(); ++i) swaps.emplace_back(g[i], std::make_shared<nn::Identity>());
    for (const auto& n : g) swapped.insert(n);
  }

  // ---- plan: single modules ------------------------------------------------------
  bool has_stub = false;
  for (const auto& [name, m] : root.named_modules()) {
    if (name.empty() || swapped.count(name)) continue;
    const std::string& type = m->type_name();
    if (type != "Conv2d" && type != "Linear" && type != "QuantStub" && type != "Add" && type != "AdaptiveAvgPool2d" &&
        type != "AvgPool2d" && type != "LSTM")
      continue;
    const std::optional<QConfig> q = o.qconfig.resolve(name, type);
    if (!q) continue;
    if (type == "Conv2d") swaps.emplace_back(name, std::make_shared<QATConv2d>(static_cast<nn::Conv2d&>(*m), *q));
    if (type == "Linear") swaps.emplace_back(name, std::make_shared<QATLinear>(static_cast<nn::Linear&>(*m), *q));
    if (type == "LSTM") swaps.emplace_back(name, std::make_shared<QATLSTM>(static_cast<nn::LSTM&>(*m), *q));
    if (type == "QuantStub") {
      swaps.emplace_back(name, std::make_shared<QATQuantStub>(*q));
      has_stub = true;
    }
    if (type == "Add") swaps.emplace_back(name, std::make_shared<QATAdd>(static_cast<nn::Add&>(*m).relu(), *q));
    if (type == "AdaptiveAvgPool2d" &&
        static_cast<nn::AdaptiveAvgPool2d&>(*m).output_size() == std::array<int64_t, 2>{1, 1})
      swaps.emplace_back(name, std::make_shared<QATAvgPool>(std::array<int64_t, 2>{0, 0},
                                                            std::array<int64_t, 2>{0, 0},
                                                            std::array<int64_t, 2>{0, 0}));
    if (type == "AvgPool2d") {
      const auto& o = static_cast<nn::AvgPool2d&>(*m).options();
      // The integer pool counts padding in the divisor; other settings stay float.
      if (o.count_include_pad || (o.padding[0] == 0 && o.padding[1] == 0))
        swaps.emplace_back(name, std::make_shared<QATAvgPool>(o.kernel, o.stride, o.padding));
    }
  }
  QF_CHECK(has_stub || !o.require_quant_stub)
      << who << ": the model has no nn::QuantStub with a qconfig, so its int8 version would have no input "
                "quantization. Add an nn::QuantStub where the input enters (and an nn::DeQuantStub where the "
                "output leaves; every zoo model has them as 'quant' and 'dequant'), or set require_quant_stub = "
                "false for a model that is never exported";

  // ---- apply (nothing above changed the model) ---------------------------------------
  for (auto& [name, m] : swaps) root.replace_module(name, m);
  link_quantizers(root);
}

/// Walks one Sequential's children in order; returns the quantizer current
/// after them.
std::shared_ptr<FakeQuantize> link_chain(const nn::Module& seq, std::shared_ptr<FakeQuantize> current) {
  for (const auto& [name, child] : seq.named_children()) {
    const std::string& type = child->type_name();
    if (type == "QATQuantStub") {
      current = std::dynamic_pointer_cast<FakeQuantize>(child->get_module("output_fake_quant"));
    } else if (auto* layer = dynamic_cast<QATLayer*>(child.get())) {
      layer->set_input_quantizer(current);
      current = std::dynamic_pointer_cast<FakeQuantize>(child->get_module("output_fake_quant"));
    } else if (auto* rnn = dynamic_cast<QATLSTM*>(child.get())) {
      rnn->set_input_quantizer(current);
      current = std::dynamic_pointer_cast<FakeQuantize>(
          child->get_module("hidden_fake_quant_l" + std::to_string(rnn->spec().num_layers - 1)));
    } else if (type == "Sequential") {
      current = link_chain(*child, current);
    } else if (auto* pool = dynamic_cast<QATAvgPool*>(child.get())) {
      pool->set_input_quantizer(current);  // its output stays on the input's grid
    } else if (type == "BasicBlock") {
      const auto main_q = link_chain(*child->get_module("main"), current);
      const auto sc = child->get_module("shortcut");
      const auto sc_q = sc->type_name() == "Sequential" ? link_chain(*sc, current)
                        : sc->type_name() == "Identity"   ? current
                                                          : nullptr;
      if (auto* add = dynamic_cast<QATAdd*>(child->get_module("add").get())) {
        add->set_input_quantizers(main_q, sc_q);
        current = std::dynamic_pointer_cast<FakeQuantize>(child->get_module("add")->get_module("output_fake_quant"));
      } else {
        current = nullptr;
      }
    } else if (type == "Identity" || type == "MaxPool2d" || type == "Flatten" || type == "Dropout" ||
               type == "ReLU") {
      // values stay on the grid of `current`
    } else {
      current = nullptr;
    }
  }
  return current;
}

}  // namespace

void link_quantizers(nn::Module& root) {
  // Unlink everything first, so that layers outside any chain have no stale link.
  root.apply([](nn::Module& m) {
    if (auto* layer = dynamic_cast<QATLayer*>(&m)) layer->set_input_quantizer(nullptr);
    if (auto* add = dynamic_cast<QATAdd*>(&m)) add->set_input_quantizers(nullptr, nullptr);
    if (auto* pool = dynamic_cast<QATAvgPool*>(&m)) pool->set_input_quantizer(nullptr);
    if (auto* rnn = dynamic_cast<QATLSTM*>(&m)) rnn->set_input_quantizer(nullptr);
  });
  if (root.type_name() == "Sequential") {
    link_chain(root, nullptr);
    return;
  }
  for (const auto& [path, m] : root.named_modules())
    if (!path.empty() && m->type_name() == "Sequential") link_chain(*m, nullptr);
}

void set_int8_eval(nn::Module& root, bool on) {
  root.apply([&](nn::Module& m) {
    if (auto* layer = dynamic_cast<QATLayer*>(&m)) layer->set_int8_eval(on);
    if (auto* add = dynamic_cast<QATAdd*>(&m)) add->set_int8_eval(on);
    if (auto* pool = dynamic_cast<QATAvgPool*>(&m)) pool->set_int8_eval(on);
    if (auto* rnn = dynamic_cast<QATLSTM*>(&m)) rnn->set_int8_eval(on);
  });
}

std::vector<FusionGroup> find_fusion_groups(const nn::Module& root) {
  std::vector<FusionGroup> out;
  for (const auto& [path, m] : root.named_modules()) {
    if (m->type_name() != "Sequential") continue;
    const auto& kids = m->named_children();
    size_t i = 0;
    while (i < kids.size()) {
      size_t taken = 0;
      for (const auto& p : patterns()) {
        if (i + p.size() > kids.size()) continue;
        bool match = true;
        for (size_t k = 0; k < p.size() && match; ++k) match = kids[i + k].second->type_name() == p[k];
        if (!match) continue;
        FusionGroup g;
        for (size_t k = 0; k < p.size(); ++k) g.push_back(child_path(path, kids[i + k].first));
        out.push_back(std::move(g));
        taken = p.size();
        break;
      }
      i += taken ? taken : 1;
    }
  }
  return out;
}

void prepare_qat(nn::Module& root, const PrepareOptions& options) {
  prepare_impl(root, options, "prepare_qat");
  root.train();
  enable_fake_quant(root, true);
  enable_observer(root, true);
}

void prepare(nn::Module& root, const PrepareOptions& options) {
  prepare_impl(root, options, "prepare");
  root.eval();
  enable_fake_quant(root, false);
  enable_observer(root, true);
  set_calibrating(root, true);
}

void finish_calibration(nn::Module& root) {
  enable_observer(root, false);
  set_calibrating(root, false);
  enable_fake_quant(root, true);
}

void enable_fake_quant(nn::Module& root, bool on) {
  for_each_quantizer(root, [&](FakeQuantize& fq) { fq.enable_fake_quant(on); });
}

void enable_observer(nn::Module& root, bool on) {
  for_each_quantizer(root, [&](FakeQuantize& fq) { fq.enable_observer(on); });
}

void set_calibrating(nn::Module& root, bool on) {
  for_each_quantizer(root, [&](FakeQuantize& fq) { fq.set_calibrating(on); });
}

void freeze_bn_stats(nn::Module& root, bool frozen) {
  root.apply([&](nn::Module& m) {
    if (auto* c = dynamic_cast<QATConvBase*>(&m)) c->freeze_bn_stats(frozen);
    if (auto* l = dynamic_cast<QATLinearBase*>(&m)) l->freeze_bn_stats(frozen);
  });
}

void set_lsq_learning(nn::Module& root, bool on) {
  for_each_quantizer(root, [&](FakeQuantize& fq) {
    if (fq.is_lsq()) fq.set_lsq_learning(on);
  });
}

std::map<std::string, Tensor> observer_state(nn::Module& root) {
  std::map<std::string, Tensor> out;
  for (const auto& [path, m] : root.named_modules()) {
    auto* fq = dynamic_cast<FakeQuantize*>(m);
    if (!fq) continue;
    for (auto& [k, t] : fq->observer().state()) out[path + "/" + k] = t;
  }
  return out;
}

void load_observer_state(nn::Module& root, const std::map<std::string, Tensor>& state) {
  std::map<std::string, std::map<std::string, Tensor>> by_module;
  for (const auto& [key, t] : state) {
    const size_t slash = key.rfind('/');
    QF_CHECK_FORMAT(slash != std::string::npos && slash > 0)
        << "load_observer_state: key '" << key << "' is not '<module path>/<statistic>'";
    by_module[key.substr(0, slash)][key.substr(slash + 1)] = t;
  }
  std::vector<std::pair<FakeQuantize*, const std::map<std::string, Tensor>*>> targets;
  for (const auto& [path, s] : by_module) {
    nn::ModulePtr m;
    try {
      m = root.get_module(path);
    } catch (const IndexError&) {
      QF_THROW(FormatError) << "load_observer_state: the model has no quantizer at '" << path << "'";
    }
    auto* fq = dynamic_cast<FakeQuantize*>(m.get());
    QF_CHECK_FORMAT(fq) << "load_observer_state: '" << path << "' is a " << m->type_name() << ", not a FakeQuantize";
    targets.emplace_back(fq, &s);
  }
  // All or nothing: on an error, the quantizers loaded so far get their old
  // statistics back.
  std::vector<std::map<std::string, Tensor>> old;
  for (auto& [fq, s] : targets) old.push_back(fq->observer().state());
  size_t done = 0;
  try {
    for (; done < targets.size(); ++done) targets[done].first->load_observer_state(*targets[done].second);
  } catch (...) {
    for (size_t i = 0; i < done; ++i) targets[i].first->load_observer_state(old[i]);
    throw;
  }
}

void sync_qparams(nn::Module& root) {
  for_each_quantizer(root, [](FakeQuantize& fq) { fq.sync(); });
}

// ---- schedule ------------------------------------------------------------------

bool Milestone::reached(int64_t epoch, int64_t global_step) const {
  if (at < 0) return false;
  return unit == Unit::epoch ? epoch >= at : global_step >= at;
}

std::string Milestone::describe() const {
  if (at < 0) return "never";
  return (unit == Unit::epoch ? "epoch " : "step ") + std::to_string(at);
}

std::string QatSchedule::describe() const {
  return "fake_quant from " + fake_quant.describe() + ", observers frozen from " + freeze_observers.describe() +
         ", BN frozen from " + freeze_bn.describe() + ", LSQ learning from " + lsq_learn.describe();
}

void apply_qat_schedule(nn::Module& root, const QatSchedule& s, int64_t epoch, int64_t global_step) {
  enable_fake_quant(root, s.fake_quant.reached(epoch, global_step));
  enable_observer(root, !s.freeze_observers.reached(epoch, global_step));
  freeze_bn_stats(root, s.freeze_bn.reached(epoch, global_step));
  set_lsq_learning(root, s.lsq_learn.reached(epoch, global_step));
}

}  // namespace qforge::quant
