#include "nn/module.h"

#include <algorithm>
#include <sstream>

namespace qforge::nn {

namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char ch : path) {
    if (ch == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  parts.push_back(cur);
  return parts;
}

}  // namespace

void Module::check_new_name(const std::string& name) const {
  QF_CHECK(!name.empty() && name.find('.') == std::string::npos)
      << type_name_ << ": member name '" << name << "' must be non-empty and contain no '.'";
  auto taken = [&](const auto& v) {
    return std::any_of(v.begin(), v.end(), [&](const auto& kv) { return kv.first == name; });
  };
  QF_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_))
      << type_name_ << ": member name '" << name << "' is already registered";
}

Variable& Module::register_parameter(const std::string& name, Tensor value, bool requires_grad) {
  check_new_name(name);
  QF_CHECK(value.defined()) << type_name_ << ": parameter '" << name << "' is undefined";
  params_.emplace_back(name, Variable(std::move(value), requires_grad));
  return params_.back().second;
}

Variable& Module::register_parameter(const std::string& name, const Variable& shared) {
  check_new_name(name);
  QF_CHECK(shared.defined()) << type_name_ << ": parameter '" << name << "' is undefined";
  params_.emplace_back(name, shared);
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor value) {
  check_new_name(name);
  buffers_.emplace_back(name, std::move(value));
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name);
  QF_CHECK(m != nullptr) << type_name_ << ": child '" << name << "' is null";
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Variable>> out(params_.begin(), params_.end());
  if (recurse)
    for (const auto& [cname, c] : children_)
      for (auto& [n, v] : c->named_parameters(true)) out.emplace_back(join(cname, n), v);
  return out;
}

std::vector<Variable> Module::parameters(bool recurse) const {
  std::vector<Variable> out;
  for (auto& [n, v] : named_parameters(recurse)) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [n, t] : buffers_)
    if (t.defined()) out.emplace_back(n, t);
  if (recurse)
    for (const auto& [cname, c] : children_)
      for (auto& [n, t] : c->named_buffers(true)) out.emplace_back(join(cname, n), t);
  return out;
}

void Module::collect_modules(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out) const {
  out.emplace_back(prefix, const_cast<Module*>(this));
  for (const auto& [cname, c] : children_) c->collect_modules(join(prefix, cname), out);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, Module*>> out;
  collect_modules("", out);
  return out;
}

Module& Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return *c;
  QF_THROW(IndexError) << type_name_ << " has no child named '" << name << "'";
  __builtin_unreachable();
}

std::shared_ptr<Module> Module::get_module(const std::string& path) const {
  QF_CHECK(!path.empty()) << "get_module: empty path";
  const Module* cur = this;
  std::shared_ptr<Module> found;
  std::string walked;
  for (const std::string& part : split_path(path)) {
    found = nullptr;
    for (const auto& [n, c] : cur->children_)
      if (n == part) found = c;
    if (!found)
      QF_THROW(IndexError) << "no module '" << path << "': " << (walked.empty() ? "the root" : "'" + walked + "'")
                           << " (" << cur->type_name_ << ") has no child '" << part << "'";
    walked = join(walked, part);
    cur = found.get();
  }
  return found;
}

std::shared_ptr<Module> Module::replace_module(const std::string& path, std::shared_ptr<Module> replacement) {
  QF_CHECK(replacement != nullptr) << "replace_module('" << path << "'): the replacement is null";
  const auto dot = path.rfind('.');
  Module* parent = this;
  std::shared_ptr<Module> parent_holder;
  if (dot != std::string::npos) {
    parent_holder = get_module(path.substr(0, dot));
    parent = parent_holder.get();
  }
  const std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
  for (auto& [n, c] : parent->children_) {
    if (n != name) continue;
    std::shared_ptr<Module> old = c;
    replacement->train(parent->training_);
    c = replacement;
    parent->on_child_replaced(name, replacement);
    return old;
  }
  QF_THROW(IndexError) << "replace_module: no module '" << path << "' (" << parent->type_name_
                       << " has no child '" << name << "')";
  __builtin_unreachable();
}

Variable& Module::param(const std::string& name) {
  for (auto& [n, v] : params_)
    if (n == name) return v;
  QF_THROW(IndexError) << type_name_ << " has no parameter '" << name << "'";
  __builtin_unreachable();
}

const Variable& Module::param(const std::string& name) const { return const_cast<Module*>(this)->param(name); }

bool Module::has_param(const std::string& name) const {
  return std::any_of(params_.begin(), params_.end(), [&](const auto& kv) { return kv.first == name; });
}

Tensor& Module::buffer(const std::string& name) {
  for (auto& [n, t] : buffers_)
    if (n == name) return t;
  QF_THROW(IndexError) << type_name_ << " has no buffer '" << name << "'";
  __builtin_unreachable();
}

bool Module::has_buffer(const std::string& name) const {
  return std::any_of(buffers_.begin(), buffers_.end(), [&](const auto& kv) { return kv.first == name; });
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [n, c] : children_) c->apply(fn);
  fn(*this);
}

void Module::zero_grad() {
  for (auto& v : parameters()) v.zero_grad();
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& v : parameters()) n += v.numel();
  return n;
}

StateDict Module::state_dict() const {
  StateDict sd;
  for (auto& [n, v] : named_parameters()) sd.emplace(n, v.value());
  for (auto& [n, t] : named_buffers()) sd.emplace(n, t);
  return sd;
}

void Module::load_state_dict(const StateDict& sd, bool strict) {
  StateDict mine = state_dict();
  std::vector<std::string> missing, unexpected;
  for (const auto& [n, t] : mine)
    if (!sd.count(n)) missing.push_back(n);
  for (const auto& [n, t] : sd)
    if (!mine.count(n)) unexpected.push_back(n);
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::ostringstream msg;
    msg << "load_state_dict into " << type_name_ << ":";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg << " " << what << " keys";
      for (size_t i = 0; i < v.size() && i < 8; ++i) msg << (i ? ", " : " ") << v[i];
      if (v.size() > 8) msg << " (and " << v.size() - 8 << " more)";
      msg << ";";
    };
    list("missing", missing);
    list("unexpected", unexpected);
    QF_THROW(ValueError) << msg.str();
  }
  // Check everything before writing anything, so that a failed load leaves
  // the module as it was.
  for (auto& [n, dst] : mine) {
    auto it = sd.find(n);
    if (it == sd.end()) continue;
    QF_CHECK_SHAPE(it->second.shape() == dst.shape())
        << "load_state_dict: '" << n << "' has shape " << it->second.shape_str() << ", the module expects "
        << dst.shape_str();
    QF_CHECK_DTYPE(it->second.dtype() == dst.dtype())
        << "load_state_dict: '" << n << "' is " << dtype_name(it->second.dtype()) << ", the module expects "
        << dtype_name(dst.dtype());
  }
  for (auto& [n, dst] : mine) {
    auto it = sd.find(n);
    if (it != sd.end() && !it->second.shares_storage(dst)) dst.copy_from(it->second);
  }
}

std::string Module::repr(int indent) const {
  std::ostringstream os;
  os << type_name_ << "(" << extra_repr();
  if (!children_.empty()) {
    os << "\n";
    for (const auto& [n, c] : children_)
      os << std::string(indent + 2, ' ') << "(" << n << "): " << c->repr(indent + 2) << "\n";
    os << std::string(indent, ' ');
  }
  os << ")";
  return os.str();
}

}  // namespace qforge::nn
