#pragma once
// nn::Module: the base of every layer and model.
//
// A module owns named parameters (Variables that optimizers update), named
// buffers (Tensors such as BatchNorm's running statistics, saved in the state
// dict but never trained) and named child modules. Names are dotted paths
// from the root ("features.conv1.weight"), as in PyTorch, so that state dicts
// and recipes carry over. Children are held by shared_ptr and the graph is a
// tree: quant's module swap replaces a child by name (replace_module).

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"

namespace qforge::nn {

using autograd::Variable;

/// Name -> tensor, sorted by name. Values share storage with the module.
using StateDict = std::map<std::string, Tensor>;

/// Base class of every layer and model (see the top of this file). Not
/// copyable; shared through ModulePtr. Parameters are Variable handles and
/// buffers Tensor handles, so what the accessors return shares storage with it.
class Module {
 public:
  /// `type_name` is shown by repr() and saved in checkpoints, and quant's
  /// prepare/convert dispatch on it (prepare static_casts a "Conv2d" to nn::Conv2d,
  /// ...): do not reuse a built-in layer's name. Starts in training mode.
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The layer's computation on one input.
  virtual Variable forward(const Variable& x) = 0;
  /// Same as forward(x).
  Variable operator()(const Variable& x) { return forward(x); }

  /// "Conv2d", "Sequential", ...
  const std::string& type_name() const { return type_name_; }
  /// One line of settings shown by repr(), e.g. "1, 32, kernel=3x3".
  virtual std::string extra_repr() const { return ""; }
  /// A printable tree of the module and its children.
  std::string repr(int indent = 0) const;

  // ---- parameters, buffers, children ---------------------------------------
  /// Parameters in registration order, children after the module's own, with
  /// dotted names. recurse=false lists only this module's own.
  std::vector<std::pair<std::string, Variable>> named_parameters(bool recurse = true) const;
  /// The Variables of named_parameters(recurse), same order: handles, not copies.
  std::vector<Variable> parameters(bool recurse = true) const;
  /// Defined buffers with dotted names, the module's own first, then (with
  /// recurse) its children's; the tensors share storage with the module.
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  /// Direct children in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  /// Every module of the tree, depth first, starting with this one (named "").
  std::vector<std::pair<std::string, Module*>> named_modules() const;
  /// The module at a dotted path ("layers.0.conv1"); throws IndexError naming
  /// the missing part when there is none.
  std::shared_ptr<Module> get_module(const std::string& path) const;
  /// Replaces the module at a dotted path, keeping its name and position.
  /// Returns the module that was there.
  std::shared_ptr<Module> replace_module(const std::string& path, std::shared_ptr<Module> replacement);

  /// Direct child by name (throws IndexError when absent). Composite modules
  /// call their children through this in forward(), so that a child swapped
  /// by replace_module() takes effect.
  Module& child(const std::string& name) const;
  /// Parameter of this module by its own (undotted) name; throws IndexError when
  /// absent. The reference is valid until the module registers another parameter
  /// or is destroyed.
  Variable& param(const std::string& name);
  /// Const param(): same lookup, IndexError and lifetime.
  const Variable& param(const std::string& name) const;
  /// True when this module's own parameters (not its children's) include `name`.
  bool has_param(const std::string& name) const;
  /// Buffer of this module by its own name (possibly an undefined tensor); throws
  /// IndexError when absent. Valid until another buffer is registered.
  Tensor& buffer(const std::string& name);
  /// True when this module registered buffer `name` (even undefined).
  bool has_buffer(const std::string& name) const;

  // ---- modes and traversal ---------------------------------------------------
  /// Sets training mode on this module and every descendant.
  void train(bool on = true);
  /// Same as train(false).
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Calls fn on every module of the tree, children first, then this one.
  void apply(const std::function<void(Module&)>& fn);
  /// Clears every parameter's gradient.
  void zero_grad();
  /// Number of parameter elements in the tree.
  int64_t num_parameters() const;

  // ---- state dict --------------------------------------------------------------
  /// Every parameter value and buffer by dotted name. The tensors share
  /// storage with the module: clone them to keep a snapshot.
  StateDict state_dict() const;
  /// Copies values in by name. Shapes and dtypes must match. With strict,
  /// missing and unexpected keys are errors (the message lists them);
  /// otherwise they are skipped. Values are copied into the existing storage,
  /// so optimizers keep pointing at the same parameters.
  void load_state_dict(const StateDict& sd, bool strict = true);

 protected:
  /// Registers a parameter (a leaf Variable with requires_grad unless told
  /// otherwise). Names must be unique within the module and contain no '.'.
  Variable& register_parameter(const std::string& name, Tensor value, bool requires_grad = true);
  /// Registers an existing Variable (shared, not copied): quant's module swap
  /// uses it so that a QAT module trains the float module's very parameters
  /// and optimizers built before the swap keep working.
  Variable& register_parameter(const std::string& name, const Variable& shared);
  /// Registers a buffer; an undefined tensor is allowed (and skipped by the
  /// state dict), as for BatchNorm without running statistics.
  Tensor& register_buffer(const std::string& name, Tensor value);
  /// Registers a child and returns it, typed.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  /// Hook for modules that cache the children they call (Sequential does
  /// not; a custom module holding typed pointers must refresh them).
  virtual void on_child_replaced(const std::string& /*name*/, const std::shared_ptr<Module>& /*m*/) {}

 private:
  void check_new_name(const std::string& name) const;
  void collect_modules(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out) const;

  std::string type_name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Variable>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

/// Shared ownership of a module: how children, factories and trainers hold them.
using ModulePtr = std::shared_ptr<Module>;

}  // namespace qforge::nn
