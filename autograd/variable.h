#pragma once
// Reverse-mode automatic differentiation on a recorded graph (the "tape").
//
// A Variable wraps a Tensor value. When any input of an op requires a
// gradient (and grad mode is on), the op records a Node holding the backward
// closure written next to its forward (see autograd/ops/*.cpp) and edges to
// its inputs' nodes. backward() walks that graph iteratively in reverse
// topological order, accumulates gradients into the leaves, and frees the
// graph unless asked to keep it.

#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace qforge::autograd {

class Node;

/// Gradient slots handed to a backward closure: one per op input.
class GradSink {
 public:
  /// Refers to `inputs` (a node's input list) without copying it: the vector must
  /// outlive the sink, which backward() builds around one node's backward call.
  explicit GradSink(const std::vector<std::shared_ptr<Node>>& inputs) : inputs_(inputs) {}
  /// True when input i needs a gradient; skip computing it otherwise.
  bool needs(size_t i) const { return i < inputs_.size() && inputs_[i] != nullptr; }
  /// Accumulates `grad` (same shape as input i) into input i's gradient.
  void add(size_t i, Tensor grad);

 private:
  const std::vector<std::shared_ptr<Node>>& inputs_;
};

/// backward(grad_output, sink): computes input gradients from the output's.
using BackwardFn = std::function<void(const Tensor& grad_out, GradSink& sink)>;

/// One node of the graph: a leaf's gradient accumulator, or an op's backward.
class Node {
 public:
  /// Accumulated gradient (for leaves: Variable::grad()).
  Tensor grad;
  /// Empty for a leaf.
  BackwardFn backward;
  /// Nodes of the op's inputs; nullptr for inputs that need no gradient.
  std::vector<std::shared_ptr<Node>> inputs;
  /// The shape that gradients flowing into this node must have.
  Shape shape;
  /// The dtype that gradients flowing into this node must have.
  DType dtype = DType::f32;
  /// Debug name of the op that made it ("leaf" for leaves).
  const char* name = "leaf";

  bool is_leaf() const { return !backward && inputs.empty(); }
  /// Releases long input chains iteratively (an unrolled graph would
  /// otherwise recurse once per node and overflow the stack).
  ~Node();
  /// Adds `g` to `grad`: ShapeError / DTypeError unless g has `shape` / `dtype`.
  /// The first gradient is stored as is (sharing g's storage); later ones are added
  /// in place, after cloning `grad` if its storage is shared.
  void accumulate(Tensor g);
};

/// A differentiable tensor. Copies share the value and the gradient (a
/// Variable is a handle), so a module's parameter and an optimizer's copy of
/// it are the same parameter.
class Variable {
 public:
  Variable() = default;
  /// A leaf holding `value`; requires_grad makes it a gradient target.
  explicit Variable(Tensor value, bool requires_grad = false);

  bool defined() const { return impl_ != nullptr; }
  /// The value, a handle shared by every copy of this Variable; ValueError when
  /// undefined. The reference is valid while some copy of the Variable lives.
  const Tensor& value() const;
  /// Mutable value (ValueError when undefined): in-place writes are seen by every
  /// copy and by graphs that kept it for backward; assigning through it skips
  /// set_value()'s checks.
  Tensor& value();
  /// Replaces the value (same shape and dtype), keeping identity and grad.
  void set_value(const Tensor& v);
  const Shape& shape() const { return value().shape(); }
  DType dtype() const { return value().dtype(); }
  int ndim() const { return value().ndim(); }
  int64_t size(int axis) const { return value().size(axis); }
  int64_t numel() const { return value().numel(); }

  /// True for a leaf that tracks gradients or an op result recorded on the graph;
  /// false when undefined.
  bool requires_grad() const;
  /// Only for leaves: switches gradient tracking on or off.
  void set_requires_grad(bool r);
  /// True unless the variable is the output of a recorded op (true when undefined).
  bool is_leaf() const;

  /// The accumulated gradient; undefined until a backward reaches it.
  const Tensor& grad() const;
  bool has_grad() const;
  /// Clears the gradient (sets it undefined).
  void zero_grad();
  /// Sets the gradient explicitly (shape must match).
  void set_grad(const Tensor& g);

  /// Backpropagates from a scalar (numel 1) variable, with seed gradient 1.
  void backward(bool retain_graph = false);
  /// Backpropagates with an explicit seed gradient of this variable's shape.
  void backward(const Tensor& grad_out, bool retain_graph = false);

  /// A new leaf sharing the value, cut from the graph.
  Variable detach() const;

  /// The graph node (nullptr when no gradient is tracked).
  const std::shared_ptr<Node>& node() const;

  /// Whether two handles are the same variable.
  bool same(const Variable& o) const { return impl_ == o.impl_; }

  /// Builds an op result: records a node when some input requires grad and
  /// grad mode is on. The closure receives the output gradient.
  static Variable make(Tensor value, const std::vector<const Variable*>& inputs, const char* name,
                       BackwardFn backward);

 private:
  struct Impl {
    Tensor value;
    std::shared_ptr<Node> node;
    bool requires_grad = false;
  };
  std::shared_ptr<Impl> impl_;
};

/// True when grad mode is on in this thread (the default).
bool grad_enabled();

/// RAII scope that turns grad mode off in this thread: ops record nothing.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// True when at least one of the variables requires grad and grad mode is on:
/// ops use it to skip capturing anything for backward.
bool any_requires_grad(std::initializer_list<const Variable*> vs);

}  // namespace qforge::autograd
