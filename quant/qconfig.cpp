#include "quant/qconfig.h"

#include <sstream>

#include "core/error.h"

namespace qforge::quant {

void TensorQConfig::validate(const std::string& what) const {
  spec.validate();
  const bool pc_observer = observer == "per_channel_minmax" || observer == "moving_average_per_channel";
  const bool known = pc_observer || observer == "minmax" || observer == "moving_average" ||
                     observer == "histogram" || observer == "percentile";
  QF_CHECK(known) << what << ": unknown observer '" << observer
                  << "' (known: minmax moving_average per_channel_minmax moving_average_per_channel histogram "
                     "percentile)";
  QF_CHECK(pc_observer == spec.per_channel)
      << what << ": observer '" << observer << "' is " << (pc_observer ? "per-channel" : "per-tensor")
      << " but the spec is " << spec.describe();
  QF_CHECK(averaging_constant > 0 && averaging_constant <= 1)
      << what << ": averaging_constant must be in (0, 1], got " << averaging_constant;
  QF_CHECK(percentile > 50 && percentile <= 100) << what << ": percentile must be in (50, 100], got " << percentile;
  QF_CHECK(!(lsq_learn_offset && method != FakeQuantMethod::lsq))
      << what << ": lsq_learn_offset needs the lsq method";
  QF_CHECK(!(lsq_learn_offset && spec.scheme != QScheme::affine))
      << what << ": a learned offset (LSQ+) needs an affine scheme, the spec is " << spec.describe();
}

std::string TensorQConfig::describe() const {
  std::ostringstream s;
  s << spec.describe() << ", " << observer << ", " << (method == FakeQuantMethod::ste ? "ste" : "lsq");
  if (method == FakeQuantMethod::lsq) {
    if (lsq_learn_offset) s << "+offset";
    if (!lsq_grad_scale) s << " (no grad scaling)";
    s << " init=" << (lsq_init == LsqInit::observer ? "observer" : "data");
  }
  return s.str();
}

void QConfig::validate(const std::string& what) const {
  activation.validate("activation of " + what);
  weight.validate("weight of " + what);
}

TensorQConfig default_activation_qconfig() {
  TensorQConfig c;
  c.spec.bits = 8;
  c.spec.is_signed = false;
  c.spec.scheme = QScheme::affine;
  c.spec.per_channel = false;
  c.observer = "moving_average";
  return c;
}

TensorQConfig default_weight_qconfig() {
  TensorQConfig c;
  c.spec.bits = 8;
  c.spec.is_signed = true;
  c.spec.scheme = QScheme::symmetric;
  c.spec.per_channel = true;
  c.spec.axis = 0;
  c.observer = "moving_average_per_channel";
  return c;
}

QConfig default_qconfig() { return {default_activation_qconfig(), default_weight_qconfig()}; }

QConfig lsq_qconfig(int weight_bits, int activation_bits) {
  QConfig q = default_qconfig();
  q.weight.spec.bits = weight_bits;
  q.weight.method = FakeQuantMethod::lsq;
  q.activation.spec.bits = activation_bits;
  q.activation.method = FakeQuantMethod::lsq;
  q.validate("lsq_qconfig");
  return q;
}

QConfigMap& QConfigMap::set_global(std::optional<QConfig> q) {
  if (q) q->validate("the global qconfig");
  global = std::move(q);
  return *this;
}

QConfigMap& QConfigMap::set_type(const std::string& type_name, std::optional<QConfig> q) {
  QF_CHECK(!type_name.empty()) << "QConfigMap::set_type: empty type name";
  if (q) q->validate("the qconfig of type " + type_name);
  by_type.emplace_back(type_name, std::move(q));
  return *this;
}

QConfigMap& QConfigMap::set_name(const std::string& glob, std::optional<QConfig> q) {
  QF_CHECK(!glob.empty()) << "QConfigMap::set_name: empty name pattern";
  if (q) q->validate("the qconfig of '" + glob + "'");
  by_name.emplace_back(glob, std::move(q));
  return *this;
}

std::optional<QConfig> QConfigMap::resolve(const std::string& name, const std::string& type_name) const {
  for (auto it = by_name.rbegin(); it != by_name.rend(); ++it)
    if (glob_match(it->first, name)) return it->second;
  for (auto it = by_type.rbegin(); it != by_type.rend(); ++it)
    if (it->first == type_name) return it->second;
  return global;
}

bool glob_match(const std::string& glob, const std::string& text) {
  // Iterative wildcard match with one backtrack point (the last '*').
  size_t g = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (g < glob.size() && (glob[g] == '?' || glob[g] == text[t])) {
      ++g;
      ++t;
    } else if (g < glob.size() && glob[g] == '*') {
      star = g++;
      mark = t;
    } else if (star != std::string::npos) {
      g = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

}  // namespace qforge::quant
